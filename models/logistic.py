"""Supervised logistic detector: Imputer -> VectorAssembler -> StandardScaler -> LogisticRegression.

``train_logistic`` does, on a labelled frame with an event time:

1. Time-based validation split: the last ``validation_days`` days are the validation window,
   the ``delay_days`` before them are dropped (labels of transactions that recent are not known
   yet when the validation window starts: the feedback delay), the days before that train.
2. For every ``(regParam, elasticNetParam)`` in the grid: fit on the training part, score the
   validation window, keep the pair with the highest average precision.
3. Decision threshold: on the chosen model's validation scores, the lowest threshold whose
   precision reaches ``target["precision"]`` (most recall at that precision), or the highest
   threshold whose recall reaches ``target["recall"]``; or, given ``choose``, the threshold
   ``choose(table, validation_days)`` returns (the rules of models/thresholds.py, which the
   train job uses: a recall floor, an alert budget, best F-beta, and a fallback when a rule
   cannot be met).
4. Refit with the chosen parameters on the whole frame (or its last ``refit_days`` days); the
   threshold from step 3 is kept. ``refit=False`` keeps the model of step 2 instead.

Class imbalance: each fit weights rows by ``weightCol`` computed from that fit's own label ratio
(``"balanced"``: ``n / (2 n_class)``, so both classes carry the same total weight). A list of
class weights (e.g. ``["balanced", None]``) is searched like the regularisation: the grid is
their product, chosen by validation average precision.

The detector adds ``logistic_score`` (probability of class 1), ``logistic_flag``
(``score >= threshold``) and, on request, ``logistic_contributions`` (coefficient x
standardized value per feature, the basis of reason codes). Scoring is plain Spark column work,
so it runs on streaming frames too. ``save``/``load`` write a Spark ``PipelineModel`` plus a JSON
sidecar and work on local paths and ``s3a://`` URIs.

Scoring does not run the fitted ``PipelineModel``: ``LogisticDetector.terms`` reads its stages
once into one :class:`LinearTerms` (Imputer surrogates, StandardScaler mean and std, LR
coefficients and intercept), and exactly two forms compute the model from those terms:

* JVM: :func:`probability_column` (``probability(margin(terms))``), one closed-form Spark column
  expression ``p = 1 / (1 + exp(-(b + sum_j w_j z_j)))`` (``score_column``/``transform`` add it);
* numpy: :func:`probability_array`, the same terms added in the same order
  (``standardized_values`` gives the ``z_j`` of the rows the reason codes explain).

Here ``z_j = (x_j' - mean_j) * scale_j``, where ``x_j'`` is the feature as a double with null
and NaN (the Imputer's missing values) replaced by the surrogate, and ``scale_j = 1 / std_j``,
or 0 when ``std_j == 0`` (what Spark's StandardScaler does: a constant column contributes
nothing), evaluated in the folded form ``c + sum_j a_j x_j'`` (``a_j = w_j scale_j``,
``c = b - sum_j a_j mean_j``: two operations per feature and row instead of four; ``folded``).
For finite inputs this is the pipeline's probability up to floating-point summation order (a
unit test holds it to 1e-12, against the pipeline itself in tests/unit/oracles.py); it needs no
vector assembly, no UDF and no vector-to-array conversion per row. ``contributions_column``
builds the ``w_j z_j`` array as a Spark column.

Performance note: with dozens of features the expression compiles to more than the 8000 bytes
of bytecode HotSpot JIT-compiles per method. Inside whole-stage codegen (one method per stage)
the JVM would then interpret that method, at about three times the cost of reading the
features; set ``spark.sql.codegen.hugeMethodLimit`` to 8000 (Spark's advice for HotSpot) so such
a stage runs as separately compiled projections instead (bench/bench_scoring.py does).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, reduce
from typing import Any

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.feature import Imputer, ImputerModel, StandardScaler, StandardScalerModel, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from models import evaluation
from runtime.fs import join, json_safe, read_text, write_text

__all__ = ["LinearTerms", "LogisticDetector", "LogisticError", "feature_contributions", "fit_pipeline", "linear_terms",
           "margin", "supervised_edges",
           "probability", "probability_array", "probability_column", "standardized_values", "time_split",
           "train_logistic"]

SCORE_COL = "logistic_score"
FLAG_COL = "logistic_flag"
CONTRIBUTIONS_COL = "logistic_contributions"
_WEIGHT = "_lr_weight"
_RAW_VEC = "_lr_features_raw"
_VEC = "_lr_features"
SIDECAR = "detector.json"
PIPELINE_DIR = "pipeline"


class LogisticError(ValueError):
    """The training frame cannot be used (missing columns, empty split, a single class)."""


def _input(col: str) -> str:
    return f"_lr_in_{col}"


def _imputed(col: str) -> str:
    return f"_lr_imp_{col}"


def _step(k: int) -> str:
    return f"_lr_in_step_{k}"


Steps = Sequence[tuple[str, float]]


def _with_inputs(df: DataFrame, feature_cols: Sequence[str], steps: Steps = ()) -> DataFrame:
    """Add the pipeline's inputs: the features as doubles under private names, then one 0/1
    indicator ``feature >= edge`` per step (null where the feature is missing, so the Imputer
    fills it as it fills any missing value).

    The Imputer wants numbers (booleans become 0/1); the caller's columns stay as they are.
    """
    indicators = []
    for k, (name, edge) in enumerate(steps):
        x = F.col(name).cast("double")
        indicators.append(F.when(F.isnan(x), F.lit(None).cast("double"))
                          .otherwise((x >= F.lit(float(edge))).cast("double")).alias(_step(k)))
    return df.select("*", *[F.col(c).cast("double").alias(_input(c)) for c in feature_cols], *indicators)


def _input_names(feature_cols: Sequence[str], steps: Steps = ()) -> list[str]:
    return [*[_input(c) for c in feature_cols], *[_step(k) for k in range(len(steps))]]


def supervised_edges(df: DataFrame, feature: str, label_col: str = "label", max_bins: int = 8,
                     min_rows: int = 20) -> list[float]:
    """Bin edges of ``feature`` chosen on labelled rows: a one-feature decision tree grown best
    split first (the split that lowers the binary log loss most) to at most ``max_bins`` leaves
    of at least ``min_rows`` rows each; an edge is the midpoint between the two values it separates.

    Unlike quantile edges these land where the fraud rate changes (the Handbook's amount > 220
    rule is found to the cent), and as steps of the linear model (``x >= edge`` indicators) they
    keep its closed form exact. The distinct values of the window are brought to the driver.
    """
    if max_bins < 2:
        return []
    pdf = (df.where(F.col(feature).isNotNull() & ~F.isnan(F.col(feature).cast("double")))
           .groupBy(F.col(feature).cast("double").alias("x"))
           .agg(F.count(F.lit(1)).alias("n"), F.sum((F.col(label_col) > 0).cast("long")).alias("p"))
           .toPandas().sort_values("x"))
    x, n, p = pdf["x"].to_numpy(float), pdf["n"].to_numpy(float), pdf["p"].to_numpy(float)
    cn, cp = np.concatenate([[0.0], np.cumsum(n)]), np.concatenate([[0.0], np.cumsum(p)])

    def loss(rows, pos):
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(rows > 0, pos / np.maximum(rows, 1), 0.0)
            out = -(pos * np.log(np.where(rate > 0, rate, 1.0)) + (rows - pos) * np.log(np.where(rate < 1, 1 - rate, 1.0)))
        return out

    def best_split(a, b):
        """(gain, i) of the best split of values a..b-1 into a..i-1 and i..b-1, or None."""
        if b - a < 2:
            return None
        i = np.arange(a + 1, b)
        left_n, left_p = cn[i] - cn[a], cp[i] - cp[a]
        right_n, right_p = cn[b] - cn[i], cp[b] - cp[i]
        ok = (left_n >= min_rows) & (right_n >= min_rows)
        if not ok.any():
            return None
        gain = loss(cn[b] - cn[a], cp[b] - cp[a]) - loss(left_n, left_p) - loss(right_n, right_p)
        gain = np.where(ok, gain, -np.inf)
        j = int(np.argmax(gain))
        return (float(gain[j]), int(i[j])) if gain[j] > 1e-9 else None

    leaves, edges = [(0, len(x))], []
    while len(leaves) < max_bins:
        options = [(best_split(a, b), (a, b)) for a, b in leaves]
        options = [(split, leaf) for split, leaf in options if split is not None]
        if not options:
            break
        (gain, i), (a, b) = max(options, key=lambda o: o[0][0])
        leaves.remove((a, b))
        leaves += [(a, i), (i, b)]
        edges.append(float((x[i - 1] + x[i]) / 2.0))
    return sorted(edges)


def _check_columns(df: DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise LogisticError(f"missing columns {missing}; the frame has {df.columns}")


def _class_weights(df: DataFrame, label_col: str, class_weight: str | float | None) -> tuple[float, float]:
    """(weight of negatives, weight of positives) for ``class_weight``."""
    if class_weight is None:
        return 1.0, 1.0
    if isinstance(class_weight, (int, float)):
        return 1.0, float(class_weight)
    if class_weight != "balanced":
        raise ValueError(f"class_weight must be 'balanced', a number or None, got {class_weight!r}")
    n, n_pos = df.agg(F.count("*"), F.sum((F.col(label_col) > 0).cast("int"))).first()
    n_pos = int(n_pos or 0)
    if n_pos == 0 or n_pos == n:
        raise LogisticError(f"training data has a single class ({n_pos} positives of {n} rows)")
    return n / (2.0 * (n - n_pos)), n / (2.0 * n_pos)


def fit_preprocessing(train_df: DataFrame, feature_cols: Sequence[str],
                      impute_strategy: str = "median", steps: Steps = ()) -> PipelineModel:
    """Fit Imputer -> VectorAssembler -> StandardScaler (output ``_lr_features``) on ``train_df``;
    the vector holds the features, then the ``steps`` indicators.
    """
    inputs = _input_names(feature_cols, steps)
    imputed = [_imputed(c) for c in inputs]
    return Pipeline(stages=[
        Imputer(inputCols=inputs, outputCols=imputed, strategy=impute_strategy),
        VectorAssembler(inputCols=imputed, outputCol=_RAW_VEC, handleInvalid="keep"),
        StandardScaler(inputCol=_RAW_VEC, outputCol=_VEC, withMean=True, withStd=True),
    ]).fit(_with_inputs(train_df, feature_cols, steps))


def _vectorize(prep: PipelineModel, df: DataFrame, feature_cols: Sequence[str], label_col: str,
               weights: tuple[float, float] | None = None, steps: Steps = ()) -> DataFrame:
    out = prep.transform(_with_inputs(df, feature_cols, steps))
    cols = [F.col(_VEC), F.col(label_col)]
    if weights is not None:
        cols.append(F.when(F.col(label_col) > 0, F.lit(weights[1])).otherwise(F.lit(weights[0])).alias(_WEIGHT))
    return out.select(*cols)


def _fit_lr(vectors: DataFrame, label_col: str, reg_param: float, elastic_net_param: float,
            max_iter: int) -> LogisticRegressionModel:
    # the features are already standardized: LR's own standardization would only rescale the penalty
    return LogisticRegression(featuresCol=_VEC, labelCol=label_col, weightCol=_WEIGHT, regParam=reg_param,
                              elasticNetParam=elastic_net_param, maxIter=max_iter, standardization=False,
                              rawPredictionCol="_lr_raw", probabilityCol="_lr_probability",
                              predictionCol="_lr_prediction").fit(vectors)


def fit_pipeline(train_df: DataFrame, feature_cols: Sequence[str], label_col: str = "label", *,
                 reg_param: float = 0.0, elastic_net_param: float = 0.0,
                 class_weight: str | float | None = "balanced", max_iter: int = 100,
                 impute_strategy: str = "median", steps: Steps = ()) -> PipelineModel:
    """Fit the Imputer -> assembler -> scaler -> weighted LogisticRegression pipeline (on the
    features and the ``steps`` indicators, ``(feature, edge)`` each).
    """
    weights = _class_weights(train_df, label_col, class_weight)
    prep = fit_preprocessing(train_df, feature_cols, impute_strategy, steps)
    vectors = _vectorize(prep, train_df, feature_cols, label_col, weights, steps)
    return PipelineModel(stages=[*prep.stages, _fit_lr(vectors, label_col, reg_param, elastic_net_param, max_iter)])


def _prepare(df: DataFrame, feature_cols: Sequence[str], label_col: str, time_col: str) -> DataFrame:
    """The columns training needs, with the label as a double."""
    return (df.select(*feature_cols, F.col(label_col).cast("double").alias(label_col), time_col)
            .where(F.col(label_col).isNotNull()))


def time_split(df: DataFrame, time_col: str, validation_days: int,
               delay_days: int) -> tuple[DataFrame, DataFrame, dict[str, str]]:
    """(training part, validation window, the window's dates) of ``df`` by the day of ``time_col``."""
    first, last = df.agg(F.min(F.to_date(F.col(time_col))), F.max(F.to_date(F.col(time_col)))).first()
    if last is None:
        raise LogisticError("the training frame is empty")
    valid_start = last - _dt.timedelta(days=validation_days - 1)
    train_end = valid_start - _dt.timedelta(days=delay_days + 1)
    if train_end < first:
        raise LogisticError(
            f"{first}..{last} is too short for {validation_days} validation days after a "
            f"{delay_days}-day delay: nothing is left to train on")
    day = F.to_date(F.col(time_col))
    window = {"train_from": str(first), "train_to": str(train_end),
              "validation_from": str(valid_start), "validation_to": str(last)}
    return df.where(day <= F.lit(train_end)), df.where(day >= F.lit(valid_start)), window


def _window_of(fit_part: DataFrame, valid_part: DataFrame, time_col: str) -> dict[str, Any]:
    """The dates of explicit selection windows (an empty one is an error naming it)."""
    out: dict[str, Any] = {}
    for name, part in (("train", fit_part), ("validation", valid_part)):
        first, last = part.agg(F.min(F.to_date(F.col(time_col))), F.max(F.to_date(F.col(time_col)))).first()
        if last is None:
            raise LogisticError(f"the {'selection fit' if name == 'train' else 'validation'} window has no labelled "
                                "rows in the feature table")
        out[f"{name}_from"], out[f"{name}_to"] = str(first), str(last)
    out["validation_days"] = (_dt.date.fromisoformat(out["validation_to"])
                              - _dt.date.fromisoformat(out["validation_from"])).days + 1
    return out


@dataclass(frozen=True)
class LinearTerms:
    """A fitted pipeline as plain numbers, one entry per feature (see the module docstring).

    ``missing_value`` is the Imputer's (NaN by default; null always counts as missing);
    ``scales`` are ``1 / std`` (0 where std is 0, 1 without ``withStd``), ``means`` 0 without
    ``withMean``. ``steps``: ``(j, edge)`` per step term, the indicator ``features[j] >= edge``;
    ``surrogates``/``means``/``scales``/``weights`` hold the features' entries, then the steps'
    (a step's surrogate replaces the indicator where its feature is missing).
    """

    features: tuple[str, ...]
    surrogates: tuple[float, ...]
    missing_value: float
    means: tuple[float, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    steps: tuple[tuple[int, float], ...] = ()


def _stage(pipeline: PipelineModel, kind: type) -> Any:
    found = [s for s in pipeline.stages if isinstance(s, kind)]
    if len(found) != 1:
        raise LogisticError(f"expected one {kind.__name__} stage in the pipeline, found {len(found)}")
    return found[0]


def linear_terms(pipeline: PipelineModel, feature_cols: Sequence[str], steps: Steps = ()) -> LinearTerms:
    """Read the Imputer, StandardScaler and LogisticRegression stages of a fitted pipeline
    (fitted on ``feature_cols`` and the ``steps`` indicators).
    """
    imputer = _stage(pipeline, ImputerModel)
    scaler = _stage(pipeline, StandardScalerModel)
    lr = _stage(pipeline, LogisticRegressionModel)
    if lr.numClasses != 2:
        raise LogisticError(f"the closed form covers binary models; this one has {lr.numClasses} classes")
    row = imputer.surrogateDF.first()
    surrogates = tuple(float(row[c]) for c in _input_names(feature_cols, steps))
    n = len(feature_cols) + len(steps)
    if steps and not math.isnan(float(imputer.getMissingValue())):
        raise LogisticError("step terms need the Imputer's default missing value (NaN)")
    std = scaler.std.toArray().tolist() if scaler.getWithStd() else [1.0] * n
    means = scaler.mean.toArray().tolist() if scaler.getWithMean() else [0.0] * n
    weights = lr.coefficients.toArray().tolist()
    if not len(std) == len(means) == len(weights) == n:
        raise LogisticError(f"the pipeline was fitted on {len(weights)} terms, not {n}")
    index = {c: j for j, c in enumerate(feature_cols)}
    unknown = [name for name, _ in steps if name not in index]
    if unknown:
        raise LogisticError(f"step terms on columns that are not features: {unknown}")
    return LinearTerms(
        features=tuple(feature_cols), surrogates=surrogates, missing_value=float(imputer.getMissingValue()),
        means=tuple(float(m) for m in means),
        # Spark's StandardScalerModel: scale = 1 / std, and 0 for a zero std
        scales=tuple(0.0 if v == 0 else 1.0 / v for v in std) if scaler.getWithStd() else tuple(std),
        weights=tuple(float(w) for w in weights), intercept=float(lr.intercept),
        steps=tuple((index[name], float(edge)) for name, edge in steps))


def _imputed_column(name: str, surrogate: float, missing_value: float) -> Column:
    x = F.col(name).cast("double")
    fill = F.lit(surrogate)
    if math.isnan(missing_value):
        # non-nullable (unlike CASE WHEN ... ELSE x), so the generated code has no null branches
        return F.nanvl(F.coalesce(x, fill), fill)
    return F.when(x.isNull() | (x == F.lit(missing_value)), fill).otherwise(x)


def _step_column(terms: LinearTerms, k: int) -> Column:
    """Step ``k``'s value: 1.0 where its feature >= edge, 0.0 below, its surrogate where the feature is missing."""
    j, edge = terms.steps[k]
    x = F.col(terms.features[j]).cast("double")
    surrogate = terms.surrogates[len(terms.features) + k]
    return F.when(x.isNull() | F.isnan(x), F.lit(surrogate)).otherwise(
        F.when(x >= F.lit(edge), F.lit(1.0)).otherwise(F.lit(0.0)))


def _term_column(terms: LinearTerms, j: int) -> Column:
    """Term ``j``'s imputed value: a feature (``j < len(features)``), else a step."""
    n = len(terms.features)
    if j < n:
        return _imputed_column(terms.features[j], terms.surrogates[j], terms.missing_value)
    return _step_column(terms, j - n)


def standardized_columns(terms: LinearTerms) -> list[Column]:
    """``z_j`` per term (features, then steps): imputed, centred and scaled."""
    return [(_term_column(terms, j) - F.lit(mean)) * F.lit(scale)
            for j, (mean, scale) in enumerate(zip(terms.means, terms.scales, strict=True))]


def folded(terms: LinearTerms) -> tuple[float, list[tuple[int, float]]]:
    """``(c, [(j, a_j), ...])`` with ``b + sum_j w_j z_j == c + sum_j a_j x_j'`` (``x_j'`` imputed).

    The standardization folded into the weights: ``a_j = w_j scale_j``, ``c = b - sum_j a_j mean_j``,
    two operations per feature instead of four. Features with ``a_j == 0`` are left out (they add 0
    for finite input).
    """
    c = terms.intercept
    out = []
    for j, (w, mean, scale) in enumerate(zip(terms.weights, terms.means, terms.scales, strict=True)):
        a = w * scale
        if a != 0:
            out.append((j, a))
            c -= a * mean
    return c, out


def margin(terms: LinearTerms) -> Column:
    """``b + sum_j w_j z_j`` as a column, in the folded form (:func:`folded`)."""
    c, coefficients = folded(terms)
    products = [F.lit(a) * _term_column(terms, j) for j, a in coefficients]
    return reduce(operator.add, products, F.lit(c))


def probability(linear: Column) -> Column:
    """``1 / (1 + exp(-linear))``: the logistic function of a margin."""
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-linear))


def probability_column(terms: LinearTerms) -> Column:
    """The model's probability as one Spark column: the JVM form (module docstring)."""
    return probability(margin(terms))


@dataclass
class LogisticDetector:
    """A fitted logistic pipeline with its decision threshold and how both were chosen."""

    pipeline: PipelineModel
    feature_cols: list[str]
    threshold: float
    label_col: str = "label"
    time_col: str = "event_time"
    params: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    # the model whose validation scores chose the threshold (before the refit; not saved)
    validation_pipeline: PipelineModel | None = field(default=None, compare=False, repr=False)
    # step terms (feature, edge) the pipeline was fitted with (supervised_edges), after the features
    steps: list[tuple[str, float]] = field(default_factory=list)
    validation_steps: list[tuple[str, float]] = field(default_factory=list, compare=False, repr=False)

    kind = "logistic"

    @property
    def _lr(self):
        return self.pipeline.stages[-1]

    def coefficients(self) -> dict[str, float]:
        """Coefficient per feature, on the standardized scale (comparable across features)."""
        return dict(zip(self.feature_cols, self._lr.coefficients.toArray().tolist(), strict=True))

    @property
    def intercept(self) -> float:
        return float(self._lr.intercept)

    @cached_property
    def terms(self) -> LinearTerms:
        """The pipeline's numbers (read once; reading the surrogates runs one small Spark job)."""
        return linear_terms(self.pipeline, self.feature_cols, self.steps)

    def score_column(self, df: DataFrame, score_col: str = SCORE_COL) -> DataFrame:
        """``df`` plus the probability of class 1, computed in closed form (module docstring)."""
        _check_columns(df, self.feature_cols)
        return df.withColumn(score_col, probability_column(self.terms))

    def contributions_column(self) -> Column:
        """array<double> of ``w_j z_j`` per term (``feature_cols``, then the steps), computed where it is evaluated."""
        return F.array(*[F.lit(w) * z for w, z in zip(self.terms.weights, standardized_columns(self.terms),
                                                      strict=True)])

    def transform(self, df: DataFrame, *, score_col: str = SCORE_COL, flag_col: str = FLAG_COL,
                  contributions_col: str | None = None) -> DataFrame:
        """``df`` plus the score, the flag and optionally per-feature contributions."""
        scored = self.score_column(df, score_col)
        scored = scored.withColumn(flag_col, F.col(score_col) >= F.lit(self.threshold))
        if contributions_col:
            scored = scored.withColumn(contributions_col, self.contributions_column())
        return scored

    # ------------------------------------------------------------------------- persistence
    def _sidecar(self) -> dict[str, Any]:
        return {"kind": self.kind, "feature_cols": self.feature_cols, "threshold": self.threshold,
                "label_col": self.label_col, "time_col": self.time_col, "params": self.params,
                "validation": self.validation, "steps": [[name, edge] for name, edge in self.steps], "format": 1}

    def save(self, path: str) -> None:
        """Write the PipelineModel to ``<path>/pipeline`` and the rest to ``<path>/detector.json``."""
        self.pipeline.write().overwrite().save(join(path, PIPELINE_DIR))
        write_text(join(path, SIDECAR), json.dumps(json_safe(self._sidecar()), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str) -> LogisticDetector:
        meta = json.loads(read_text(join(path, SIDECAR)))
        return cls(pipeline=PipelineModel.load(join(path, PIPELINE_DIR)), feature_cols=meta["feature_cols"],
                   threshold=float(meta["threshold"]), label_col=meta["label_col"], time_col=meta["time_col"],
                   params=meta.get("params", {}), validation=meta.get("validation", {}),
                   steps=[(name, float(edge)) for name, edge in meta.get("steps", [])])


def train_logistic(train_df: DataFrame, *, feature_cols: Sequence[str], label_col: str = "label",
                   time_col: str = "event_time", reg_params: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2),
                   elastic_net_params: Sequence[float] = (0.0,), validation_days: int = 7,
                   delay_days: int = 7, target: dict[str, float] | None = None,
                   class_weight: str | float | Sequence[str | float | None] | None = "balanced", max_iter: int = 100,
                   refit: bool = True, refit_days: int | None = None,
                   choose: Callable[[evaluation.ScoreTable, int], dict[str, Any]] | None = None,
                   fit_df: DataFrame | None = None, validation_df: DataFrame | None = None,
                   binned_features: Sequence[str] = (), bins: Sequence[int] = (0,),
                   log=None) -> LogisticDetector:
    """Choose regularisation and threshold on a time-based validation window, then fit (see the
    module docstring). ``target`` is ``{"precision": p}`` or ``{"recall": r}`` (default precision
    0.8); ``choose(validation score table, validation days)`` replaces it when given and returns
    at least ``threshold``, ``precision``, ``recall`` (and ``message``, which is logged). ``log``
    is an optional ``print``-like callable for progress. ``fit_df`` and ``validation_df`` (both or
    neither) name the selection windows explicitly instead of step 1's split of ``train_df``
    (the train job passes them: models/training.py ``validation_window``); the refit is then on
    the whole ``train_df`` (or its last ``refit_days`` days). ``binned_features`` get step terms
    (:func:`supervised_edges`) with each number of ``bins`` in the grid (0: none), searched with the
    rest; the edges are chosen on the fit window, and again on the refit window for the refit.
    """
    target = dict(target or {"precision": 0.8})
    feature_cols = list(feature_cols)
    _check_columns(train_df, [*feature_cols, label_col, time_col])
    say = log or (lambda *_: None)
    data = _prepare(train_df, feature_cols, label_col, time_col).persist()
    fit_vec = valid_vec = None
    try:
        if (fit_df is None) != (validation_df is None):
            raise ValueError("fit_df and validation_df go together")
        if fit_df is None:
            fit_part, valid_part, window = time_split(data, time_col, validation_days, delay_days)
        else:
            fit_part = _prepare(fit_df, feature_cols, label_col, time_col)
            valid_part = _prepare(validation_df, feature_cols, label_col, time_col)
            window = _window_of(fit_part, valid_part, time_col)
            validation_days = int(window.pop("validation_days"))
        # the preprocessing does not depend on the grid: fit it once, cache the vectors
        class_weights = list(class_weight) if isinstance(class_weight, (list, tuple)) else [class_weight]
        grid = [(float(r), float(e), cw) for cw in class_weights for r in reg_params for e in elastic_net_params]
        if not grid:
            raise ValueError("reg_params and elastic_net_params must not be empty")
        missing = [c for c in binned_features if c not in feature_cols]
        if missing:
            raise LogisticError(f"binned features {missing} are not among the features {feature_cols}")
        selection = []
        best = None
        for n_bins in sorted({int(b) for b in (bins or (0,))}):
            # the preprocessing does not depend on the rest of the grid: fit it once per binning, cache the vectors
            steps = [(c, edge) for c in (binned_features if n_bins >= 2 else ())
                     for edge in supervised_edges(fit_part, c, label_col, n_bins)]
            if n_bins >= 2:
                say(f"{n_bins} bins: steps " + ", ".join(f"{c} >= {e:g}" for c, e in steps))
            for cached in (fit_vec, valid_vec):
                if cached is not None:
                    cached.unpersist()
            prep = fit_preprocessing(fit_part, feature_cols, steps=steps)
            fit_vec = _vectorize(prep, fit_part, feature_cols, label_col, steps=steps).persist()
            valid_vec = _vectorize(prep, valid_part, feature_cols, label_col, steps=steps).persist()
            weights_of: dict[str, tuple[float, float]] = {}
            for reg, enet, cw in grid:
                started = time.perf_counter()
                w_neg, w_pos = weights_of.setdefault(str(cw), _class_weights(fit_vec, label_col, cw))
                weighted = fit_vec.withColumn(
                    _WEIGHT, F.when(F.col(label_col) > 0, F.lit(w_pos)).otherwise(F.lit(w_neg)))
                lr = _fit_lr(weighted, label_col, reg, enet, max_iter)
                scored = lr.transform(valid_vec).select(
                    vector_to_array(F.col("_lr_probability"))[1].alias(SCORE_COL), label_col)
                table = evaluation.score_table(scored, SCORE_COL, label_col)
                ap, auc = evaluation.average_precision(table), evaluation.auc_roc(table)
                selection.append({"bins": n_bins, "reg_param": reg, "elastic_net_param": enet, "class_weight": cw,
                                  "average_precision": ap,
                                  "auc_roc": auc, "iterations": lr.summary.totalIterations})
                say(f"bins={n_bins} regParam={reg:g} elasticNet={enet:g} classWeight={cw}: validation AP {ap:.4f} "
                    f"AUC {auc:.4f} ({lr.summary.totalIterations} iterations, {time.perf_counter() - started:.1f} s)")
                if best is None or ap > best[0]:
                    best = (ap, reg, enet, cw, PipelineModel(stages=[*prep.stages, lr]), table, n_bins, steps)
        if best is None or best[0] != best[0]:  # NaN: no positives in the validation window
            raise LogisticError(f"the validation window {window['validation_from']}..{window['validation_to']} "
                                "has no positive labels")
        ap, reg, enet, cw, model, table, n_bins, steps = best
        chosen = evaluation.threshold_for_target(table, target) if choose is None else choose(table, validation_days)
        say(f"chosen bins={n_bins} regParam={reg:g} elasticNet={enet:g} classWeight={cw}; threshold "
            f"{chosen['threshold']:.4f} gives precision {chosen['precision']:.3f} recall {chosen['recall']:.3f} "
            "on validation")
        if chosen.get("message"):
            say(chosen["message"])
        validation_pipeline, validation_steps = model, steps
        if refit:
            refit_df = data
            if refit_days is not None:
                last = _dt.date.fromisoformat(window["validation_to"])
                refit_df = data.where(F.to_date(F.col(time_col)) > F.lit(last - _dt.timedelta(days=refit_days)))
            steps = [(c, edge) for c in (binned_features if n_bins >= 2 else ())
                     for edge in supervised_edges(refit_df, c, label_col, n_bins)]
            model = fit_pipeline(refit_df, feature_cols, label_col, reg_param=reg, elastic_net_param=enet,
                                 class_weight=cw, max_iter=max_iter, steps=steps)
        params = {"reg_param": reg, "elastic_net_param": enet, "class_weight": cw, "bins": n_bins,
                  "binned_features": list(binned_features),
                  "max_iter": max_iter, "validation_days": validation_days, "delay_days": delay_days,
                  "target": target, "refit": refit, "refit_days": refit_days}
        validation = {**window, "average_precision": ap, "auc_roc": evaluation.auc_roc(table),
                      "n": table.n_pos + table.n_neg, "n_positive": table.n_pos,
                      "threshold_choice": chosen, "selection": selection}
        return LogisticDetector(model, feature_cols, chosen["threshold"], label_col, time_col, params, validation,
                                validation_pipeline=validation_pipeline, steps=steps,
                                validation_steps=validation_steps)
    finally:
        for cached in (data, fit_vec, valid_vec):
            if cached is not None:
                cached.unpersist()


def standardized_values(terms: LinearTerms, values: np.ndarray) -> np.ndarray:
    """The numpy twin of :func:`standardized_columns`: ``z`` per term (rows x (features + steps))
    of a matrix of raw feature values (rows x ``terms.features``, NaN = null).
    """
    z = np.empty((values.shape[0], len(terms.weights)))
    for j, (mean, scale) in enumerate(zip(terms.means, terms.scales, strict=True)):
        z[:, j] = (term_values(terms, j, lambda i: values[:, i]) - mean) * scale
    return z


def feature_contributions(terms: LinearTerms, values: np.ndarray) -> np.ndarray:
    """``w_j z_j`` per feature (rows x ``terms.features``), each step's part added to its feature's:
    what the reason codes rank, so a reason names the feature that drove the decision.
    """
    parts = np.asarray(terms.weights) * standardized_values(terms, values)
    n = len(terms.features)
    out = parts[:, :n].copy()
    for k, (j, _) in enumerate(terms.steps):
        out[:, j] += parts[:, n + k]
    return out


def term_values(terms: LinearTerms, j: int, column: Callable[[int], np.ndarray]) -> np.ndarray:
    """Term ``j``'s imputed values (a feature's, or a step's 0/1 with its surrogate where the
    feature is missing) from ``column(i)``, feature ``i``'s raw values (NaN = null).
    """
    n = len(terms.features)
    if j < n:
        return imputed_values(terms, j, column(j))
    source, edge = terms.steps[j - n]
    x = column(source)
    return np.where(np.isnan(x), terms.surrogates[j], np.where(x >= edge, 1.0, 0.0))


def imputed_values(terms: LinearTerms, j: int, x: np.ndarray) -> np.ndarray:
    """Feature ``j``'s raw values (NaN = null) with the missing ones replaced by its surrogate.

    ``x`` itself is returned when nothing is missing (no copy).
    """
    missing = np.isnan(x) if math.isnan(terms.missing_value) else np.isnan(x) | (x == terms.missing_value)
    return np.where(missing, terms.surrogates[j], x) if missing.any() else x


def probability_array(terms: LinearTerms, column: Callable[[int], np.ndarray], rows: int) -> np.ndarray:
    """The numpy form of :func:`probability_column`: the same terms added in the same order.

    ``column(j)`` returns feature ``j``'s raw values as float64 (NaN = null), ``rows`` long: only
    the features with a weight (or a step on them) are asked for.
    """
    c, coefficients = folded(terms)
    acc = np.full(rows, c)
    for j, a in coefficients:
        acc += a * term_values(terms, j, column)
    return 1.0 / (1.0 + np.exp(-acc))
