"""Oracles: independent ways of computing what scoring/ computes, used only by tests to check it.

* the combined risk and reason codes as Spark columns (``with_risk`` and its parts): the formulas
  of scoring/risk.py written again with Spark functions (these twins default to ``noisy_or``, as
  the first scoring path did; the config's default is ``max``);
* ``reason_codes_row``: the reason ranking of one row in plain Python;
* ``transform_with_pipeline``: the logistic score computed by the fitted ``PipelineModel`` itself,
  to check the closed forms of models/logistic.py against.
"""
from __future__ import annotations

from collections.abc import Sequence

from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from models.logistic import _RAW_VEC, _VEC, SCORE_COL, _check_columns, _imputed, _input_names, _with_inputs

# the fitted pipeline's own output columns
_TEMP = (_RAW_VEC, _VEC, "_lr_raw", "_lr_probability", "_lr_prediction")

_EPS = 1e-12


def _col(c) -> Column:
    return F.col(c) if isinstance(c, str) else c


def sigmoid(x: Column) -> Column:
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-x))


def _logit(p: Column) -> Column:
    clipped = F.least(F.greatest(p, F.lit(_EPS)), F.lit(1.0 - _EPS))
    return F.log(clipped / (F.lit(1.0) - clipped))


def rcf_risk(score, threshold: float, steepness: float = 4.0) -> Column:
    """RCF score squashed to [0, 1], 0.5 at ``threshold`` (must be > 0)."""
    if not threshold > 0:
        raise ValueError(f"the RCF threshold must be positive, got {threshold!r}")
    return sigmoid(F.lit(float(steepness)) * (_col(score).cast("double") / F.lit(float(threshold)) - F.lit(1.0)))


def logistic_risk(probability, threshold: float, steepness: float = 1.0) -> Column:
    """Logistic probability re-centred so ``threshold`` maps to 0.5."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"the logistic threshold must be in (0, 1), got {threshold!r}")
    shift = _logit(F.lit(float(threshold)))
    p = _col(probability).cast("double")
    # greatest() skips nulls, so a missing probability would otherwise become a tiny risk.
    return F.when(p.isNotNull(), sigmoid(F.lit(float(steepness)) * (_logit(p) - shift)))


def combine_risk(rcf, logistic, *, method: str = "noisy_or", rcf_weight: float = 1.0,
                 logistic_weight: float = 1.0) -> Column:
    """Combine two risks in [0, 1] (see the module docstring); nulls count as 0."""
    a = F.coalesce(_col(rcf), F.lit(0.0)) * F.lit(float(rcf_weight))
    b = F.coalesce(_col(logistic), F.lit(0.0)) * F.lit(float(logistic_weight))
    if method == "noisy_or":
        return F.lit(1.0) - (F.lit(1.0) - a) * (F.lit(1.0) - b)
    if method == "max":
        return F.greatest(a, b)
    raise ValueError(f"method must be 'noisy_or' or 'max', got {method!r}")


def _weighted_parts(values, names: Sequence[str], weight: Column, prefix: str) -> Column:
    """array<struct<value, name>>: positive shares of ``values`` times ``weight``.

    ``value`` is null where the row has no positive total (a null array gives ``[]``); the
    caller keeps only positive values. Spark interprets higher-order functions and evaluates
    whatever a lambda or an argument refers to once per reference (per element, inside a
    lambda), so the row's total and weight reach the lambda through an ``array_repeat``
    (evaluated once per row) and ``values`` is read twice in all.
    """
    arr = _col(values).cast("array<double>")
    positive = F.transform(arr, lambda v: F.greatest(F.coalesce(v, F.lit(0.0)), F.lit(0.0)))
    total = F.aggregate(positive, F.lit(0.0), lambda acc, v: acc + v)
    per_row = F.array_repeat(F.struct(total.alias("total"), weight.alias("weight")), len(names))
    name_arr = F.array(*[F.lit(f"{prefix}:{n}") for n in names])
    parts = F.zip_with(F.arrays_zip(positive, per_row), name_arr, lambda vr, n: F.struct(
        F.when(vr["1"]["total"] > 0, vr["0"] / vr["1"]["total"] * vr["1"]["weight"]).alias("value"),
        n.alias("name")))
    return F.coalesce(parts, F.array().cast("array<struct<value:double,name:string>>"))


def reason_codes(*, n: int = 3, rcf_attribution=None, rcf_features: Sequence[str] = (), rcf_weight=None,
                 logistic_contributions=None, logistic_features: Sequence[str] = (),
                 logistic_weight=None) -> Column:
    """array<string> of the ``n`` strongest reasons across the detectors given.

    Wrap it in ``F.when(flag, ...)`` to rank only some rows: Spark evaluates a CASE WHEN
    branch only for the rows that take it.
    """
    parts = []
    if rcf_attribution is not None:
        parts.append(_weighted_parts(rcf_attribution, rcf_features,
                                     F.lit(1.0) if rcf_weight is None else _col(rcf_weight), "rcf"))
    if logistic_contributions is not None:
        parts.append(_weighted_parts(logistic_contributions, logistic_features,
                                     F.lit(1.0) if logistic_weight is None else _col(logistic_weight),
                                     "logistic"))
    if not parts:
        raise ValueError("reason codes need an RCF attribution or logistic contributions column")
    merged = parts[0] if len(parts) == 1 else F.concat(*parts)
    kept = F.filter(merged, lambda s: s["value"] > 0)
    return F.transform(F.slice(F.sort_array(kept, asc=False), 1, n), lambda s: s["name"])


def with_risk(df: DataFrame, *, rcf_threshold: float | None = None, logistic_threshold: float | None = None,
              rcf_score_col: str = "rcf_score", logistic_score_col: str = "logistic_score",
              rcf_attribution_col: str | None = None, rcf_features: Sequence[str] = (),
              logistic_contributions_col: str | None = None, logistic_features: Sequence[str] = (),
              method: str = "noisy_or", rcf_weight: float = 1.0, logistic_weight: float = 1.0,
              rcf_steepness: float = 4.0, logistic_steepness: float = 1.0, reasons: int = 3,
              risk_col: str = "risk", reasons_col: str = "risk_reasons") -> DataFrame:
    """Add ``risk_rcf``, ``risk_logistic`` (for the detectors whose threshold is given), ``risk``
    and, when attribution/contribution columns are named, ``risk_reasons``.
    """
    if rcf_threshold is None and logistic_threshold is None:
        raise ValueError("give rcf_threshold, logistic_threshold or both")
    out = df
    r_rcf = r_log = F.lit(None).cast("double")
    if rcf_threshold is not None:
        out = out.withColumn("risk_rcf", rcf_risk(rcf_score_col, rcf_threshold, rcf_steepness))
        r_rcf = F.col("risk_rcf")
    if logistic_threshold is not None:
        out = out.withColumn("risk_logistic", logistic_risk(logistic_score_col, logistic_threshold,
                                                            logistic_steepness))
        r_log = F.col("risk_logistic")
    out = out.withColumn(risk_col, combine_risk(r_rcf, r_log, method=method, rcf_weight=rcf_weight,
                                                logistic_weight=logistic_weight))
    use_rcf = rcf_threshold is not None and rcf_attribution_col
    use_log = logistic_threshold is not None and logistic_contributions_col
    if use_rcf or use_log:
        out = out.withColumn(reasons_col, reason_codes(
            n=reasons,
            rcf_attribution=rcf_attribution_col if use_rcf else None, rcf_features=rcf_features,
            rcf_weight=F.col("risk_rcf") * F.lit(rcf_weight) if use_rcf else None,
            logistic_contributions=logistic_contributions_col if use_log else None,
            logistic_features=logistic_features,
            logistic_weight=F.col("risk_logistic") * F.lit(logistic_weight) if use_log else None))
    return out


def _weighted_parts_row(values, names: Sequence[str], weight: float, prefix: str) -> list[tuple[float, str]]:
    if values is None:
        return []
    positive = [max(0.0 if v != v else v, 0.0) for v in values]    # v != v: NaN counts as 0
    total = 0.0
    for v in positive:
        total += v
    if not total > 0:
        return []
    return [(v / total * weight, f"{prefix}:{n}") for v, n in zip(positive, names, strict=True)]


def reason_codes_row(*, n: int = 3, rcf_attribution=None, rcf_features: Sequence[str] = (), rcf_weight: float = 1.0,
                     logistic_contributions=None, logistic_features: Sequence[str] = (),
                     logistic_weight: float = 1.0) -> list[str]:
    """The Python twin of :func:`reason_codes` for one row: the ``n`` strongest positive parts, largest first
    (ties by name, descending, as Spark's ``sort_array`` of (value, name) structs orders them).
    """
    parts = _weighted_parts_row(rcf_attribution, rcf_features, rcf_weight, "rcf") \
        + _weighted_parts_row(logistic_contributions, logistic_features, logistic_weight, "logistic")
    kept = [p for p in parts if p[0] > 0]
    kept.sort(reverse=True)
    return [name for _, name in kept[:n]]


def transform_with_pipeline(detector, df: DataFrame, *, score_col: str = SCORE_COL,
                            contributions_col: str | None = None) -> DataFrame:
    """``df`` plus the score computed by ``detector``'s fitted ``PipelineModel`` itself (and,
    optionally, coefficient x standardized value per feature from its vectors).
    """
    _check_columns(df, detector.feature_cols)
    scored = detector.pipeline.transform(_with_inputs(df, detector.feature_cols, detector.steps))
    scored = scored.withColumn(score_col, vector_to_array(F.col("_lr_probability"))[1])
    if contributions_col:
        coefs = F.array(*[F.lit(float(v)) for v in detector.coefficients().values()])
        scored = scored.withColumn(contributions_col,
                                   F.zip_with(vector_to_array(F.col(_VEC)), coefs, lambda x, w: x * w))
    inputs = _input_names(detector.feature_cols, detector.steps)
    return scored.drop(*_TEMP, *inputs, *[_imputed(c) for c in inputs])
