"""Self-organising map (SOM) anomaly detector: a numpy core and a Spark ML Estimator/Model pair.

A SOM (Kohonen) places a grid of prototype vectors ("units") in feature space so that neighbouring
units on the grid model neighbouring regions of the data. Dense regions of the training data
attract many units, sparse ones few; a row's anomaly score is its Euclidean distance to its
best-matching unit (BMU, the nearest unit), in standardised feature space. A row is flagged
when that distance is above a quantile (``thresholdQuantile``, 0.95 by default) of the
training rows' distances.

Training is the *batch* SOM (Kohonen 2013, "Essentials of the self-organizing map"): every
epoch assigns each training row to its BMU, then sets every unit to the neighbourhood-weighted
mean of the rows, ``w_k = sum_i h(bmu_i, k) x_i / sum_i h(bmu_i, k)`` with a Gaussian
neighbourhood ``h = exp(-g^2 / (2 sigma^2))`` on the grid distance ``g``. ``sigma`` shrinks
geometrically from ``sigma`` (default: half the larger grid side) to ``finalSigma`` over the
epochs. There is no learning rate and no row order, so a fit is a deterministic function of the
sample and the seed (which only picks the initial units from the sample). ``finalSigma`` stays
at 1 by default: with a smaller neighbourhood single units would settle on isolated training
points and those points would stop looking anomalous.

Features are standardised (training mean and standard deviation; a constant column gets scale
1) before training and before scoring, so no single wide column decides the distances; the
centre and scale are stored with the map.

Spark: ``featuresCol`` holds a Vector or an ``array<numeric>`` (as for the RCF). ``fit`` trains
on a sample of at most ``maxSamples`` rows drawn with the seed (the batch SOM's cost is
rows x units x features per epoch, and a few tens of thousands of rows pin the units down);
``transform`` scores every row vectorised in numpy inside a pandas UDF (the map is broadcast).
Rows whose features are null, of the wrong length or not finite get a null score.
"""

from __future__ import annotations

import io
from typing import Any, Dict, Optional, Sequence

import numpy as np

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasPredictionCol, HasSeed
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)

from runtime import fs
from models.rcf import _bounded_float, _bounded_int, _collect_matrix, _features_as_array

__all__ = ["SomGrid", "SelfOrganizingMap", "SelfOrganizingMapModel"]

SOM_FILE = "som.npz"
_FORMAT_VERSION = 1
_DEFAULT_SEED = 19820101  # fixed (HasSeed's default hashes the class name, which varies per process)
_CHUNK = 8192  # rows per distance block: rows x units float64 stays small


def _bmu_and_distance(Z: np.ndarray, W: np.ndarray, w_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest unit and the Euclidean distance to it, for every row of ``Z``."""
    n = Z.shape[0]
    bmu = np.empty(n, np.int64)
    dist = np.empty(n)
    for a in range(0, n, _CHUNK):
        z = Z[a:a + _CHUNK]
        # |z - w|^2 = |z|^2 - 2 z.w + |w|^2, one matrix product per block
        d2 = (z * z).sum(axis=1)[:, None] - 2.0 * (z @ W.T) + w_sq[None, :]
        k = np.argmin(d2, axis=1)
        bmu[a:a + _CHUNK] = k
        dist[a:a + _CHUNK] = np.sqrt(np.maximum(d2[np.arange(len(k)), k], 0.0))
    return bmu, dist


class SomGrid:
    """A fitted map: ``units`` (rows x cols, features) in standardised space, plus the scaling."""

    def __init__(self, units: np.ndarray, grid_rows: int, grid_cols: int,
                 center: np.ndarray, scale: np.ndarray) -> None:
        self.units = np.ascontiguousarray(units, dtype=np.float64)
        self.grid_rows, self.grid_cols = int(grid_rows), int(grid_cols)
        self.center = np.ascontiguousarray(center, dtype=np.float64)
        self.scale = np.ascontiguousarray(scale, dtype=np.float64)
        d = self.units.shape[1] if self.units.ndim == 2 else -1
        if self.units.shape != (self.grid_rows * self.grid_cols, d) or self.center.shape != (d,) \
                or self.scale.shape != (d,):
            raise ValueError(f"SOM arrays are inconsistent: units {self.units.shape} for a "
                             f"{self.grid_rows}x{self.grid_cols} grid, center {self.center.shape}, "
                             f"scale {self.scale.shape}")
        if not (np.all(np.isfinite(self.units)) and np.all(np.isfinite(self.center))
                and np.all(self.scale > 0)):
            raise ValueError("SOM units and center must be finite and every scale > 0")
        self._w_sq = (self.units * self.units).sum(axis=1)

    @property
    def num_features(self) -> int:
        return int(self.units.shape[1])

    @classmethod
    def fit(cls, X: Any, grid_rows: int = 10, grid_cols: int = 10, epochs: int = 30,
            sigma: Optional[float] = None, final_sigma: float = 1.0,
            seed: Optional[int] = None) -> "SomGrid":
        """Batch SOM on the finite rows of ``X`` (see the module docstring)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-d matrix of features, got shape {X.shape}")
        X = X[np.isfinite(X).all(axis=1)]
        if X.shape[0] == 0:
            raise ValueError("cannot fit a self-organising map on no (finite) rows")
        if grid_rows < 1 or grid_cols < 1 or epochs < 1:
            raise ValueError("grid_rows, grid_cols and epochs must be positive")
        center = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[~(scale > 0)] = 1.0
        Z = (X - center) / scale
        n_units = grid_rows * grid_cols
        rng = np.random.default_rng(seed)
        # initial units: distinct training rows where there are enough, else rows plus jitter
        pick = rng.choice(Z.shape[0], size=n_units, replace=Z.shape[0] < n_units)
        W = Z[pick] + (rng.normal(0.0, 1e-3, (n_units, Z.shape[1])) if Z.shape[0] < n_units else 0.0)
        gr, gc = np.divmod(np.arange(n_units), grid_cols)
        grid_d2 = (gr[:, None] - gr[None, :]) ** 2 + (gc[:, None] - gc[None, :]) ** 2
        start = float(sigma) if sigma is not None else max(grid_rows, grid_cols) / 2.0
        end = min(float(final_sigma), start)
        for e in range(epochs):
            s = start * (end / start) ** (e / max(epochs - 1, 1))
            H = np.exp(-grid_d2 / (2.0 * s * s))           # units x units
            bmu, _ = _bmu_and_distance(Z, W, (W * W).sum(axis=1))
            counts = np.bincount(bmu, minlength=n_units).astype(np.float64)
            sums = np.zeros_like(W)
            np.add.at(sums, bmu, Z)
            num = H @ sums                                  # sum_i h(bmu_i, k) x_i
            den = H @ counts
            keep = den > 1e-12
            W[keep] = num[keep] / den[keep, None]
        return cls(W, grid_rows, grid_cols, center, scale)

    def score(self, X: Any) -> np.ndarray:
        """Distance to the best-matching unit (standardised space); NaN for non-finite rows."""
        return self.bmu_and_score(X)[1]

    def bmu_and_score(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(BMU index, distance) per row; -1 and NaN for rows with a non-finite value."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.num_features:
            raise ValueError(f"the map was fitted on {self.num_features} features, got shape {X.shape}")
        ok = np.isfinite(X).all(axis=1)
        bmu = np.full(X.shape[0], -1, np.int64)
        dist = np.full(X.shape[0], np.nan)
        if ok.any():
            bmu[ok], dist[ok] = _bmu_and_distance((X[ok] - self.center) / self.scale, self.units, self._w_sq)
        return bmu, dist

    # ---- persistence ---------------------------------------------------------------------
    def to_arrays(self) -> Dict[str, np.ndarray]:
        return {"units": self.units, "grid": np.array([self.grid_rows, self.grid_cols], np.int64),
                "center": self.center, "scale": self.scale,
                "format_version": np.array(_FORMAT_VERSION, np.int64)}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "SomGrid":
        version = int(arrays.get("format_version", _FORMAT_VERSION))
        if version != _FORMAT_VERSION:
            raise ValueError(f"unsupported SOM format version {version}")
        rows, cols = (int(v) for v in arrays["grid"])
        return cls(arrays["units"], rows, cols, arrays["center"], arrays["scale"])

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.to_arrays())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "SomGrid":
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return cls.from_arrays({k: npz[k] for k in npz.files})

    def __repr__(self) -> str:
        return f"SomGrid({self.grid_rows}x{self.grid_cols}, num_features={self.num_features})"


# --------------------------------------------------------------------------------------------
# Spark ML Params, Estimator and Model
# --------------------------------------------------------------------------------------------
class _SelfOrganizingMapParams(HasFeaturesCol, HasPredictionCol, HasSeed):
    """Params shared by :class:`SelfOrganizingMap` and :class:`SelfOrganizingMapModel`."""

    scoreCol: Param[str] = Param(
        Params._dummy(), "scoreCol", "output column for the distance to the best-matching unit (double)",
        typeConverter=TypeConverters.toString)
    gridRows: Param[int] = Param(
        Params._dummy(), "gridRows", "rows of the map's grid of units, in [1, 100]",
        typeConverter=_bounded_int("gridRows", 1, 100))
    gridCols: Param[int] = Param(
        Params._dummy(), "gridCols", "columns of the map's grid of units, in [1, 100]",
        typeConverter=_bounded_int("gridCols", 1, 100))
    numEpochs: Param[int] = Param(
        Params._dummy(), "numEpochs", "batch-SOM epochs (passes over the training sample), in [1, 1000]",
        typeConverter=_bounded_int("numEpochs", 1, 1000))
    sigma: Param[float] = Param(
        Params._dummy(), "sigma",
        "initial neighbourhood radius in grid units; 0 = half the larger grid side",
        typeConverter=_bounded_float("sigma", 0.0, 1e3))
    finalSigma: Param[float] = Param(
        Params._dummy(), "finalSigma", "neighbourhood radius of the last epoch, in (0, 1000]",
        typeConverter=_bounded_float("finalSigma", 1e-3, 1e3))
    maxSamples: Param[int] = Param(
        Params._dummy(), "maxSamples", "training rows sampled (at most), in [1, 10000000]",
        typeConverter=_bounded_int("maxSamples", 1, 10_000_000))
    thresholdQuantile: Param[float] = Param(
        Params._dummy(), "thresholdQuantile",
        "quantile of the training distances above which a row is flagged, in (0, 1)",
        typeConverter=_bounded_float("thresholdQuantile", 0.0, 1.0, open_ends=True))

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(scoreCol="som_score", predictionCol="som_anomaly", gridRows=10, gridCols=10,
                         numEpochs=30, sigma=0.0, finalSigma=1.0, maxSamples=50_000,
                         thresholdQuantile=0.95, seed=_DEFAULT_SEED)

    def getScoreCol(self) -> str:
        return self.getOrDefault(self.scoreCol)

    def getGridRows(self) -> int:
        return self.getOrDefault(self.gridRows)

    def getGridCols(self) -> int:
        return self.getOrDefault(self.gridCols)

    def getNumEpochs(self) -> int:
        return self.getOrDefault(self.numEpochs)

    def getSigma(self) -> float:
        return self.getOrDefault(self.sigma)

    def getFinalSigma(self) -> float:
        return self.getOrDefault(self.finalSigma)

    def getMaxSamples(self) -> int:
        return self.getOrDefault(self.maxSamples)

    def getThresholdQuantile(self) -> float:
        return self.getOrDefault(self.thresholdQuantile)


class SelfOrganizingMap(Estimator, _SelfOrganizingMapParams, DefaultParamsReadable, DefaultParamsWritable):
    """Fits a :class:`SelfOrganizingMapModel` on a sample of ``featuresCol`` (see the module docstring)."""

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", scoreCol: str = "som_score",
                 predictionCol: str = "som_anomaly", gridRows: int = 10, gridCols: int = 10,
                 numEpochs: int = 30, sigma: float = 0.0, finalSigma: float = 1.0,
                 maxSamples: int = 50_000, thresholdQuantile: float = 0.95,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol: str = "features", scoreCol: str = "som_score",
                  predictionCol: str = "som_anomaly", gridRows: int = 10, gridCols: int = 10,
                  numEpochs: int = 30, sigma: float = 0.0, finalSigma: float = 1.0,
                  maxSamples: int = 50_000, thresholdQuantile: float = 0.95,
                  seed: Optional[int] = None) -> "SelfOrganizingMap":
        kwargs = {k: v for k, v in self._input_kwargs.items() if not (k == "seed" and v is None)}
        return self._set(**kwargs)

    def setFeaturesCol(self, value: str) -> "SelfOrganizingMap":
        return self._set(featuresCol=value)

    def setScoreCol(self, value: str) -> "SelfOrganizingMap":
        return self._set(scoreCol=value)

    def setPredictionCol(self, value: str) -> "SelfOrganizingMap":
        return self._set(predictionCol=value)

    def setGridRows(self, value: int) -> "SelfOrganizingMap":
        return self._set(gridRows=value)

    def setGridCols(self, value: int) -> "SelfOrganizingMap":
        return self._set(gridCols=value)

    def setNumEpochs(self, value: int) -> "SelfOrganizingMap":
        return self._set(numEpochs=value)

    def setSigma(self, value: float) -> "SelfOrganizingMap":
        return self._set(sigma=value)

    def setFinalSigma(self, value: float) -> "SelfOrganizingMap":
        return self._set(finalSigma=value)

    def setMaxSamples(self, value: int) -> "SelfOrganizingMap":
        return self._set(maxSamples=value)

    def setThresholdQuantile(self, value: float) -> "SelfOrganizingMap":
        return self._set(thresholdQuantile=value)

    def setSeed(self, value: int) -> "SelfOrganizingMap":
        return self._set(seed=value)

    def _fit(self, dataset: Any) -> "SelfOrganizingMapModel":
        from pyspark.sql import functions as F

        seed = self.getSeed()
        feats = _features_as_array(dataset, self.getFeaturesCol()).alias("f")
        source_df = dataset.select(feats).where(F.col("f").isNotNull())
        total = source_df.count()
        if total == 0:
            raise ValueError("SelfOrganizingMap: no rows with non-null features to train on")
        wanted = self.getMaxSamples()
        fraction = wanted / total
        sample_df = source_df if fraction >= 1.0 else source_df.sample(False, fraction, seed)
        pool = _collect_matrix(sample_df, "f")
        pool = pool[np.isfinite(pool).all(axis=1)] if pool.size else pool
        if pool.shape[0] == 0:
            raise ValueError("SelfOrganizingMap: the training sample has no finite rows")
        # make the fit independent of the order in which partitions arrive
        pool = pool[np.lexsort(pool.T[::-1])]
        sigma = self.getSigma()
        grid = SomGrid.fit(pool, self.getGridRows(), self.getGridCols(), self.getNumEpochs(),
                           sigma=sigma if sigma > 0 else None, final_sigma=self.getFinalSigma(), seed=seed)
        threshold = float(np.quantile(grid.score(pool), self.getThresholdQuantile()))
        model = SelfOrganizingMapModel(grid=grid, threshold=threshold)
        model._resetUid(self.uid)
        return self._copyValues(model)


class SelfOrganizingMapModel(Model, _SelfOrganizingMapParams, MLReadable, MLWritable):
    """Fitted map: adds ``scoreCol`` (distance to the best-matching unit) and ``predictionCol``
    (score > threshold; empty name = not produced).
    """

    def __init__(self, grid: Optional[SomGrid] = None, threshold: Optional[float] = None) -> None:
        super().__init__()
        self._grid = grid
        self._threshold = None if threshold is None else float(threshold)

    @property
    def grid(self) -> SomGrid:
        if self._grid is None:
            raise ValueError("this SelfOrganizingMapModel holds no map")
        return self._grid

    @property
    def threshold(self) -> Optional[float]:
        """Distance above which a row is flagged (quantile of the training-sample distances)."""
        return self._threshold

    @property
    def numFeatures(self) -> int:
        return self.grid.num_features

    def setFeaturesCol(self, value: str) -> "SelfOrganizingMapModel":
        return self._set(featuresCol=value)

    def setScoreCol(self, value: str) -> "SelfOrganizingMapModel":
        return self._set(scoreCol=value)

    def setPredictionCol(self, value: str) -> "SelfOrganizingMapModel":
        return self._set(predictionCol=value)

    def setThreshold(self, value: float) -> "SelfOrganizingMapModel":
        """Override the fitted threshold (e.g. from a labelled validation set)."""
        self._threshold = float(value)
        return self

    def score(self, X: Any) -> np.ndarray:
        """Score a numpy matrix without Spark (same numbers as ``transform``)."""
        return self.grid.score(X)

    def _transform(self, dataset: Any) -> Any:
        import pandas as pd
        from pyspark.sql import functions as F
        from pyspark.sql.functions import pandas_udf
        from pyspark.sql.types import DoubleType

        grid = self.grid
        feats = _features_as_array(dataset, self.getFeaturesCol())
        bc = dataset.sparkSession.sparkContext.broadcast(grid.to_arrays())
        width = grid.num_features
        arr = F.when(F.size(feats) == width, feats)
        feat_cols = [arr.getItem(j) for j in range(width)]

        @pandas_udf(DoubleType())  # type: ignore[call-overload]
        def _som_score(*cols):  # pragma: no cover - runs on executors
            return _score_columns(bc.value, cols, pd)

        score_col, pred_col = self.getScoreCol(), self.getPredictionCol()
        out_df = dataset.withColumn(score_col, _som_score(*feat_cols))
        if pred_col and self._threshold is not None:
            out_df = out_df.withColumn(pred_col, F.col(score_col) > F.lit(self._threshold))
        return out_df

    def copy(self, extra: Optional[Dict[Param, Any]] = None) -> "SelfOrganizingMapModel":
        that = super().copy(extra)
        that._grid = self._grid
        that._threshold = self._threshold
        return that

    def write(self) -> MLWriter:
        return _SelfOrganizingMapModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _SelfOrganizingMapModelReader(cls)


_GRID_CACHE: Dict[int, SomGrid] = {}


def _score_columns(arrays: Dict[str, np.ndarray], cols: Sequence[Any], pd: Any) -> Any:
    """Scores of a batch given as one pandas Series of doubles per feature (null = NaN)."""
    key = id(arrays)
    grid = _GRID_CACHE.get(key)
    if grid is None:
        _GRID_CACHE.clear()
        grid = _GRID_CACHE[key] = SomGrid.from_arrays(arrays)
    X = np.empty((len(cols[0]), len(cols)))
    for j, c in enumerate(cols):
        X[:, j] = c.to_numpy(dtype=np.float64, na_value=np.nan)
    scores = grid.score(X)
    return pd.Series(scores).where(~np.isnan(scores), None)


class _SelfOrganizingMapModelWriter(MLWriter):
    def __init__(self, instance: SelfOrganizingMapModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        extra = {"threshold": self.instance.threshold, "somFile": SOM_FILE,
                 "somFormatVersion": _FORMAT_VERSION}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc, extraMetadata=extra)
        fs.write_bytes(fs.join(path, SOM_FILE), self.instance.grid.to_bytes())


class _SelfOrganizingMapModelReader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> SelfOrganizingMapModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        grid = SomGrid.from_bytes(fs.read_bytes(fs.join(path, metadata.get("somFile", SOM_FILE))))
        model = self.cls(grid=grid, threshold=metadata.get("threshold"))
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model

