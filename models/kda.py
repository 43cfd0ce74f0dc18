"""A migration target for Kinesis Data Analytics' RANDOM_CUT_FOREST(_WITH_EXPLANATION) SQL functions.

KDA SQL applications score each record of a stream with a random cut forest that is updated as
the stream goes by: ``RANDOM_CUT_FOREST(cursor, numberOfTrees, subSampleSize, timeDecay,
shingleSize)`` adds ``ANOMALY_SCORE``, and ``RANDOM_CUT_FOREST_WITH_EXPLANATION(..., shingleSize,
withDirectionality)`` adds ``ANOMALY_EXPLANATION`` too: a JSON object with, per input column,
``ATTRIBUTION_SCORE`` (the columns' attributions add up to the score) and, with directionality,
``DIRECTION`` (``HIGH`` or ``LOW``: above or below what the forest has recently seen) and
``STRENGTH``.

This module does the same on a DataFrame (and on numpy arrays):

* :class:`StreamingForest` (numpy/numba): ``numberOfTrees`` trees, each over its own sample of
  at most ``subSampleSize`` recent points kept by a time-decayed reservoir sampler, as in the
  randomcutforest-by-aws library: the ``i``-th point gets the weight ``-i / timeDecay +
  log(-log(u))`` (``u`` uniform) and a tree keeps the ``subSampleSize`` points of smallest weight,
  so a point's chance of still being in a sample falls off with its age on a scale of
  ``timeDecay`` points (KDA's ``timeDecay`` is that scale; the library's ``timeDecay`` is its
  inverse). While a sample is not full every point goes in.
  Every record is first scored against the current forest and then offered to the samplers
  (score, then update, as KDA does). A tree whose sample changed is rebuilt from its sample
  before the next record is scored: a random cut tree built over a set of points has the same
  distribution as one grown point by point with the library's insert and delete, so rebuilding
  is the same model, at a cost that only matters while the samples fill.
* The score and its attribution follow the library's definitions, as models/rcf.py does (see
  its docstring): ``1 / (depth + 1)`` at the leaf for an unseen point, mixed with ``1 / (k + 1)``
  at each ancestor by the probability that a random cut of the ancestor's box, grown to contain
  the point, separates it; times ``log2(mass + 1)``; mean over the trees. The attribution is the
  library's DiVector: the separation probability of each ancestor split per dimension and per
  side (``high`` when the point lies above the box, ``low`` below), so the high and low parts of
  all dimensions add up to the score. Here the arithmetic is float64 throughout.
* Shingling (``shingleSize`` > 1): the forest sees the last ``shingleSize`` records of the
  series side by side (oldest first), as KDA and the library's internal shingling do; a record
  is scored once its shingle is complete (earlier records get score 0). A column's attribution
  is the sum over its shingle positions (so the explanation still adds up to the score).
* Until the forest has seen ``outputAfter`` points (default ``subSampleSize``) records get score 0
  and an empty explanation; they are still used to update the forest.

``STRENGTH`` is our reading of KDA's field: ``|high - low| / (high + low)`` of the column, in
[0, 1] (1: all of the column's attribution is on the side ``DIRECTION`` names).

Spark: :class:`RandomCutForestStream` is a Transformer (Params, so it sits in a Pipeline and
saves/loads) that runs one :class:`StreamingForest` per series (``partitionCols``; none = the
whole frame is one stream) over the rows in ``orderCol`` order, in a grouped pandas UDF; the
helpers :func:`random_cut_forest` and :func:`random_cut_forest_with_explanation` take KDA's
positional parameters. The forest's state is per call: a Structured Streaming query keeps it
across micro-batches by holding a :class:`StreamingForest` on the driver in ``foreachBatch``
(``StreamingForest.update``), as the README's migration section shows.
"""

from __future__ import annotations

import json
import math
from typing import Any, List, Optional, Sequence

import numpy as np

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasSeed
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from features.jit import njit as _njit
from models.rcf import _bounded_int, _build_tree

__all__ = ["StreamingForest", "RandomCutForestStream", "random_cut_forest",
           "random_cut_forest_with_explanation", "explanation_json", "shingle"]

SCORE_COL = "ANOMALY_SCORE"
EXPLANATION_COL = "ANOMALY_EXPLANATION"
_MASK = (1 << 64) - 1


# --------------------------------------------------------------------------------------------
# Compiled kernels
# --------------------------------------------------------------------------------------------
@_njit
def _next_uniform(rng):
    """splitmix64 step on ``rng[0]``: a uniform in (0, 1) (the state lives in the forest)."""
    rng[0] += np.uint64(0x9E3779B97F4A7C15)
    z = rng[0]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)) + 0.5) / 9007199254740992.0  # 2**53


@_njit
def _tree_score(x, root, tree_mass, cut_dim, cut_val, left, mass, box_min, box_max, path, high, low):
    """Score of ``x`` in one tree (library scale, times log2(M + 1)); adds its DiVector to high/low."""
    d = x.shape[0]
    node = root
    depth = 0
    while cut_dim[node] >= 0:
        path[depth] = node
        depth += 1
        if x[cut_dim[node]] <= cut_val[node]:
            node = left[node]
        else:
            node = left[node] + 1
    norm = math.log2(tree_mass + 1.0)
    same = True
    gap_total = 0.0
    for j in range(d):
        g = abs(x[j] - box_min[node, j])
        gap_total += g
        if g > 0.0:
            same = False
    if same:  # a duplicate of a sampled point: scoreSeen with damping, split evenly
        m = mass[node]
        s = (1.0 - m / (2.0 * tree_mass)) / (depth + math.log2(m + 1.0))
        for j in range(d):
            high[j] += 0.5 * s * norm / d
            low[j] += 0.5 * s * norm / d
        return s * norm
    hi = np.zeros(d)
    lo = np.zeros(d)
    s = 1.0 / (depth + 1.0)
    for j in range(d):
        g = x[j] - box_min[node, j]
        if g > 0.0:
            hi[j] = s * g / gap_total
        else:
            lo[j] = -s * g / gap_total
    for k in range(depth - 1, -1, -1):
        v = path[k]
        grown = 0.0
        sides = 0.0
        for j in range(d):
            a = box_min[v, j]
            b = box_max[v, j]
            sides += b - a
            if x[j] > b:
                grown += x[j] - b
            elif x[j] < a:
                grown += a - x[j]
        if grown <= 0.0:
            break  # inside this box, hence inside every box above
        total = sides + grown
        p = grown / total
        u = 1.0 / (k + 1.0)
        s = p * u + (1.0 - p) * s
        for j in range(d):
            a = box_min[v, j]
            b = box_max[v, j]
            hj = x[j] - b if x[j] > b else 0.0
            lj = a - x[j] if x[j] < a else 0.0
            hi[j] = hj / total * u + (1.0 - p) * hi[j]
            lo[j] = lj / total * u + (1.0 - p) * lo[j]
    for j in range(d):
        high[j] += hi[j] * norm
        low[j] += lo[j] * norm
    return s * norm


@_njit
def _run(X, valid, lam, output_after, seen, rng, samples, weights, seqs, counts, dirty,
         cut_dim, cut_val, left, right, mass, box_min, box_max, uniforms, scores, high, low):
    """Score then update, row by row (rows with ``valid`` False are skipped: score NaN).

    Returns the number of points seen after the batch. ``high``/``low`` get the forest's mean
    DiVector of each scored row.
    """
    n, d = X.shape
    T, S = weights.shape
    nmax = 2 * S - 1
    path = np.empty(nmax, np.int64)
    for i in range(n):
        if not valid[i]:
            scores[i] = np.nan
            continue
        x = X[i]
        # rebuild the trees whose samples changed since the last row
        for t in range(T):
            if dirty[t]:
                c = counts[t]
                for r in range(max(c - 1, 1)):
                    uniforms[r, 0] = _next_uniform(rng)
                    uniforms[r, 1] = _next_uniform(rng)
                _build_tree(samples[t, :c], uniforms, t * nmax, cut_dim, cut_val, left, right, mass,
                            box_min, box_max)
                dirty[t] = False
        if seen >= output_after and counts[0] > 0:
            total = 0.0
            for t in range(T):
                total += _tree_score(x, t * nmax, counts[t], cut_dim, cut_val, left, mass, box_min,
                                     box_max, path, high[i], low[i])
            scores[i] = total / T
            for j in range(d):
                high[i, j] /= T
                low[i, j] /= T
        else:
            scores[i] = 0.0
        # offer the point to every tree's time-decayed sampler
        for t in range(T):
            w = -lam * seen + math.log(-math.log(_next_uniform(rng)))
            c = counts[t]
            if c < S:
                slot = c
                counts[t] = c + 1
            else:
                slot = 0
                for r in range(1, S):
                    if weights[t, r] > weights[t, slot]:
                        slot = r
                if w >= weights[t, slot]:
                    continue
            weights[t, slot] = w
            seqs[t, slot] = seen
            for j in range(d):
                samples[t, slot, j] = x[j]
            dirty[t] = True
        seen += 1
    return seen


# --------------------------------------------------------------------------------------------
# numpy API
# --------------------------------------------------------------------------------------------
def shingle(X: np.ndarray, size: int, history: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the last ``size`` records side by side (oldest first) and which rows are complete.

    ``history``: up to ``size - 1`` records that came before ``X`` (from an earlier batch).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-d matrix of records, got shape {X.shape}")
    if size == 1:
        return X, np.ones(X.shape[0], bool)
    past = np.zeros((0, X.shape[1])) if history is None else np.asarray(history, dtype=np.float64)
    full = np.vstack([past, X])
    n, c = X.shape
    out = np.full((n, c * size), np.nan)
    offset = full.shape[0] - n
    for k in range(size):  # position k holds the record size - 1 - k steps back
        src = np.arange(n) + offset - (size - 1 - k)
        ok = src >= 0
        out[ok, k * c:(k + 1) * c] = full[src[ok]]
    return out, (np.arange(n) + offset) >= size - 1


class StreamingForest:
    """A time-decayed random cut forest over a stream, scored then updated record by record.

    ``update(X)`` takes the next records (rows, in stream order) and returns their scores and,
    per input column, the high and low attributions (summed over shingle positions). State
    (samples, trees, the random generator, the last records of the shingle) carries over from
    one call to the next, so a stream can be fed batch by batch with the same results as at once.
    """

    def __init__(self, num_columns: int, number_of_trees: int = 100, sub_sample_size: int = 256,
                 time_decay: float = 100000, shingle_size: int = 1, output_after: Optional[int] = None,
                 seed: int = 42) -> None:
        if num_columns < 1:
            raise ValueError("a stream needs at least one numeric column")
        for name, value, lo, hi in (("numberOfTrees", number_of_trees, 1, 1000),
                                    ("subSampleSize", sub_sample_size, 2, 10000),
                                    ("shingleSize", shingle_size, 1, 1000)):
            if not lo <= int(value) <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
        if not time_decay > 0:
            raise ValueError(f"timeDecay must be positive, got {time_decay}")
        self.num_columns = int(num_columns)
        self.shingle_size = int(shingle_size)
        self.time_decay = float(time_decay)
        self.output_after = int(sub_sample_size if output_after is None else output_after)
        T, S, d = int(number_of_trees), int(sub_sample_size), self.num_columns * self.shingle_size
        self.samples = np.zeros((T, S, d))
        self.weights = np.full((T, S), np.inf)
        self.seqs = np.full((T, S), -1, np.int64)
        self.counts = np.zeros(T, np.int64)
        self.dirty = np.zeros(T, np.bool_)
        nodes = T * (2 * S - 1)
        self.cut_dim = np.full(nodes, -1, np.int64)
        self.cut_val = np.zeros(nodes)
        self.left = np.full(nodes, -1, np.int64)
        self.right = np.full(nodes, -1, np.int64)
        self.mass = np.zeros(nodes, np.int64)
        self.box_min = np.zeros((nodes, d))
        self.box_max = np.zeros((nodes, d))
        self.rng = np.array([int(seed) & _MASK], np.uint64)
        self.seen = 0
        self.history = np.zeros((0, self.num_columns))

    @property
    def number_of_trees(self) -> int:
        return int(self.weights.shape[0])

    @property
    def sub_sample_size(self) -> int:
        return int(self.weights.shape[1])

    def update(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score the next records, then add them to the forest: (scores, high, low).

        ``high``/``low`` have one column per input column. Records with a non-finite value get a
        NaN score and are not added (nor shingled: the shingle skips them).
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.num_columns:
            raise ValueError(f"the forest takes {self.num_columns} columns, got shape {X.shape}")
        finite = np.isfinite(X).all(axis=1)
        scores = np.full(X.shape[0], np.nan)
        high = np.full(X.shape, np.nan)
        low = np.full(X.shape, np.nan)
        rows = X[finite]
        Z, complete = shingle(rows, self.shingle_size, self.history)
        if self.shingle_size > 1:
            keep = self.shingle_size - 1
            self.history = np.vstack([self.history, rows])[-keep:]
        d = Z.shape[1]
        s = np.zeros(Z.shape[0])
        hz = np.zeros((Z.shape[0], d))
        lz = np.zeros((Z.shape[0], d))
        uniforms = np.zeros((max(self.sub_sample_size - 1, 1), 2))
        self.seen = int(_run(np.ascontiguousarray(np.nan_to_num(Z)), complete, 1.0 / self.time_decay,
                             self.output_after, self.seen, self.rng, self.samples, self.weights,
                             self.seqs, self.counts, self.dirty, self.cut_dim, self.cut_val, self.left,
                             self.right, self.mass, self.box_min, self.box_max, uniforms, s, hz, lz))
        s[~complete] = 0.0  # an incomplete shingle: nothing to score yet
        c = self.num_columns
        scores[finite] = s
        high[finite] = hz.reshape(len(s), self.shingle_size, c).sum(axis=1)
        low[finite] = lz.reshape(len(s), self.shingle_size, c).sum(axis=1)
        return scores, high, low


def explanation_json(names: Sequence[str], high: np.ndarray, low: np.ndarray,
                     with_directionality: bool) -> Optional[str]:
    """KDA's ANOMALY_EXPLANATION of one record: ``{"col": {"DIRECTION", "STRENGTH", "ATTRIBUTION_SCORE"}}``.

    Without directionality only ``ATTRIBUTION_SCORE``. A record that was not scored (warm-up,
    incomplete shingle) has attributions 0 and gives ``{}``; one with a missing input (NaN
    attributions) gives None.
    """
    out = {}
    if not (np.all(np.isfinite(high)) and np.all(np.isfinite(low))):
        return None
    if not np.any(high) and not np.any(low):
        return "{}"
    for name, h, lo in zip(names, high, low, strict=True):
        total = float(h + lo)
        entry: dict = {}
        if with_directionality:
            entry["DIRECTION"] = "HIGH" if h >= lo else "LOW"
            entry["STRENGTH"] = abs(float(h - lo)) / total if total > 0 else 0.0
        entry["ATTRIBUTION_SCORE"] = total
        out[name] = entry
    return json.dumps(out)


# --------------------------------------------------------------------------------------------
# Spark Transformer and KDA-style helpers
# --------------------------------------------------------------------------------------------
def _positive_float(name: str):
    def convert(value: Any) -> float:
        value = TypeConverters.toFloat(value)
        if not value > 0 or math.isinf(value):
            raise ValueError(f"{name} must be a positive number, got {value}")
        return value
    return convert


class RandomCutForestStream(Transformer, HasSeed, DefaultParamsReadable, DefaultParamsWritable):
    """KDA's RANDOM_CUT_FOREST(_WITH_EXPLANATION) on a DataFrame (see the module docstring).

    Adds ``ANOMALY_SCORE`` (double) and, with ``withExplanation``, ``ANOMALY_EXPLANATION``
    (JSON string). Rows are processed per series (``partitionCols``) in ``orderCol`` order.
    """

    inputCols: Param[List[str]] = Param(
        Params._dummy(), "inputCols",
        "numeric columns the forest sees; empty = every numeric column but orderCol and partitionCols "
        "(KDA uses all numeric columns of the cursor)", typeConverter=TypeConverters.toListString)
    orderCol: Param[str] = Param(
        Params._dummy(), "orderCol", "column giving the stream order (e.g. the event time); required",
        typeConverter=TypeConverters.toString)
    partitionCols: Param[List[str]] = Param(
        Params._dummy(), "partitionCols", "columns naming a series; one forest per series (empty = one)",
        typeConverter=TypeConverters.toListString)
    numberOfTrees: Param[int] = Param(
        Params._dummy(), "numberOfTrees", "trees in the forest (KDA default 100), in [1, 1000]",
        typeConverter=_bounded_int("numberOfTrees", 1, 1000))
    subSampleSize: Param[int] = Param(
        Params._dummy(), "subSampleSize", "points kept per tree (KDA default 256), in [2, 10000]",
        typeConverter=_bounded_int("subSampleSize", 2, 10000))
    timeDecay: Param[float] = Param(
        Params._dummy(), "timeDecay",
        "how many recent points the samples reflect (KDA default 100000): a point's weight falls by "
        "1 per timeDecay later points", typeConverter=_positive_float("timeDecay"))
    shingleSize: Param[int] = Param(
        Params._dummy(), "shingleSize", "consecutive records scored as one point (KDA default 1), in [1, 1000]",
        typeConverter=_bounded_int("shingleSize", 1, 1000))
    outputAfter: Param[int] = Param(
        Params._dummy(), "outputAfter", "points seen before scores are produced (0 = subSampleSize)",
        typeConverter=_bounded_int("outputAfter", 0, 1_000_000_000))
    withExplanation: Param[bool] = Param(
        Params._dummy(), "withExplanation", "also produce ANOMALY_EXPLANATION (the _WITH_EXPLANATION form)",
        typeConverter=TypeConverters.toBoolean)
    withDirectionality: Param[bool] = Param(
        Params._dummy(), "withDirectionality", "add DIRECTION and STRENGTH to the explanation",
        typeConverter=TypeConverters.toBoolean)

    @keyword_only
    def __init__(self, *, inputCols: Optional[List[str]] = None, orderCol: Optional[str] = None,
                 partitionCols: Optional[List[str]] = None, numberOfTrees: int = 100,
                 subSampleSize: int = 256, timeDecay: float = 100000.0, shingleSize: int = 1,
                 outputAfter: int = 0, withExplanation: bool = False, withDirectionality: bool = False,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        self._setDefault(inputCols=[], partitionCols=[], numberOfTrees=100, subSampleSize=256,
                         timeDecay=100000.0, shingleSize=1, outputAfter=0, withExplanation=False,
                         withDirectionality=False, seed=42)
        self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    def getOrderCol(self) -> str:
        if not self.isDefined(self.orderCol):
            raise ValueError("RandomCutForestStream needs orderCol: the column giving the stream order")
        return self.getOrDefault(self.orderCol)

    def _transform(self, dataset: Any) -> Any:
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, NumericType, StringType, StructField, StructType

        order = self.getOrderCol()
        parts = list(self.getOrDefault(self.partitionCols))
        missing = [c for c in [order, *parts] if c not in dataset.columns]
        if missing:
            raise ValueError(f"RandomCutForestStream: not columns of the input: {missing} "
                             f"(columns: {dataset.columns})")
        cols = list(self.getOrDefault(self.inputCols)) or [
            f.name for f in dataset.schema.fields
            if isinstance(f.dataType, NumericType) and f.name not in (order, *parts)]
        bad = [c for c in cols if c not in dataset.columns
               or not isinstance(dataset.schema[c].dataType, NumericType)]
        if bad or not cols:
            raise ValueError(f"RandomCutForestStream: inputCols must be numeric columns of the input, "
                             f"got {bad or cols}")
        with_expl = self.getOrDefault(self.withExplanation)
        directional = self.getOrDefault(self.withDirectionality)
        conf = dict(number_of_trees=self.getOrDefault(self.numberOfTrees),
                    sub_sample_size=self.getOrDefault(self.subSampleSize),
                    time_decay=self.getOrDefault(self.timeDecay),
                    shingle_size=self.getOrDefault(self.shingleSize),
                    output_after=self.getOrDefault(self.outputAfter) or None, seed=self.getSeed())
        fields = list(dataset.schema.fields) + [StructField(SCORE_COL, DoubleType())]
        if with_expl:
            fields.append(StructField(EXPLANATION_COL, StringType()))
        schema = StructType(fields)

        def run(pdf):  # pragma: no cover - runs on executors
            pdf = pdf.sort_values(order, kind="stable").reset_index(drop=True)
            forest = StreamingForest(len(cols), **conf)
            X = pdf[cols].to_numpy(dtype=np.float64, na_value=np.nan)
            scores, high, low = forest.update(X)
            out = pdf.assign(**{SCORE_COL: scores})
            if with_expl:
                out[EXPLANATION_COL] = [explanation_json(cols, h, lo, directional)
                                        for h, lo in zip(high, low, strict=True)]
            return out[schema.fieldNames()]  # Arrow turns the NaN scores into nulls

        keys = [F.col(c) for c in parts] or [F.lit(0)]
        return dataset.groupBy(*keys).applyInPandas(run, schema)


def random_cut_forest(df: Any, numberOfTrees: int = 100, subSampleSize: int = 256,
                      timeDecay: float = 100000, shingleSize: int = 1, *, orderCol: str,
                      inputCols: Optional[List[str]] = None, partitionCols: Optional[List[str]] = None,
                      seed: Optional[int] = None) -> Any:
    """KDA ``RANDOM_CUT_FOREST(CURSOR(...), numberOfTrees, subSampleSize, timeDecay, shingleSize)``."""
    return RandomCutForestStream(inputCols=inputCols, orderCol=orderCol, partitionCols=partitionCols,
                                 numberOfTrees=numberOfTrees, subSampleSize=subSampleSize,
                                 timeDecay=float(timeDecay), shingleSize=shingleSize, seed=seed).transform(df)


def random_cut_forest_with_explanation(df: Any, numberOfTrees: int = 100, subSampleSize: int = 256,
                                       timeDecay: float = 100000, shingleSize: int = 1,
                                       withDirectionality: bool = False, *, orderCol: str,
                                       inputCols: Optional[List[str]] = None,
                                       partitionCols: Optional[List[str]] = None,
                                       seed: Optional[int] = None) -> Any:
    """KDA ``RANDOM_CUT_FOREST_WITH_EXPLANATION(CURSOR(...), numberOfTrees, subSampleSize,
    timeDecay, shingleSize, withDirectionality)``.
    """
    return RandomCutForestStream(inputCols=inputCols, orderCol=orderCol, partitionCols=partitionCols,
                                 numberOfTrees=numberOfTrees, subSampleSize=subSampleSize,
                                 timeDecay=float(timeDecay), shingleSize=shingleSize,
                                 withExplanation=True, withDirectionality=withDirectionality,
                                 seed=seed).transform(df)
