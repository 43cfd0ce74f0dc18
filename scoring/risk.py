"""One risk in [0, 1] from the RCF score and the logistic probability, with reason codes.

Formula (all pure Spark columns, so it runs in batch and streaming alike):

* RCF: ``r_rcf = sigmoid(k_rcf * (s / t_rcf - 1))`` with ``s`` the RCF score and ``t_rcf`` the
  model's stored threshold: 0.5 exactly at the threshold, ~0.98 at twice the threshold
  (``k_rcf = 4``), ~0.02 at score 0. Scaling by the threshold makes ``k_rcf`` independent of the
  RCF score's scale (it grows with log2 of the sample size).
* Logistic: ``r_log = sigmoid(k_log * (logit(p) - logit(t_log)))`` with ``p`` the probability
  and ``t_log`` the chosen decision threshold: 0.5 exactly at the threshold, and with
  ``k_log = 1`` it is ``p`` re-calibrated so the threshold sits at 0.5 (odds ratio form
  ``o / (1 + o)``, ``o = odds(p) / odds(t_log)``).
* Combined (``method="noisy_or"``, default): ``risk = 1 - (1 - w_rcf r_rcf)(1 - w_log r_log)``:
  either detector alone at its threshold gives at least 0.5 (with unit weights) and agreement
  raises the risk; ``method="max"``: ``risk = max(w_rcf r_rcf, w_log r_log)``, where
  ``risk >= 0.5`` is exactly "some detector flags". A missing (null) component counts as 0.
* Reason codes: each detector's positive per-feature parts (RCF attribution, logistic
  coefficient x standardized value) are turned into shares of that detector's positive total and
  multiplied by the detector's risk component; the ``n`` largest across both detectors are named
  ``rcf:<feature>`` / ``logistic:<feature>``, largest first.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

__all__ = ["combine_risk", "combine_risk_array", "logistic_probability_at_risk", "logistic_risk", "logistic_risk_array",
           "rcf_risk", "rcf_risk_array",
           "reason_codes", "reason_codes_array", "reason_codes_row", "sigmoid", "with_risk"]

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


# ------------------------------------------------------------------ numpy twins (driver-local scoring)
# The same formulas on numpy arrays, operation for operation, for a micro-batch scored on the driver
# (scoring/core.py ``score_pandas``); tests check them against the Spark columns above.

def _sigmoid_np(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit_np(p):
    clipped = np.minimum(np.maximum(p, _EPS), 1.0 - _EPS)
    return np.log(clipped / (1.0 - clipped))


def rcf_risk_array(score: np.ndarray, threshold: float, steepness: float = 4.0) -> np.ndarray:
    """The numpy twin of :func:`rcf_risk` (NaN for a missing score)."""
    if not threshold > 0:
        raise ValueError(f"the RCF threshold must be positive, got {threshold!r}")
    return _sigmoid_np(float(steepness) * (score / float(threshold) - 1.0))


def logistic_risk_array(probability: np.ndarray, threshold: float, steepness: float = 1.0) -> np.ndarray:
    """The numpy twin of :func:`logistic_risk` (NaN for a missing probability)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"the logistic threshold must be in (0, 1), got {threshold!r}")
    shift = np.log(min(max(threshold, _EPS), 1.0 - _EPS) / (1.0 - min(max(threshold, _EPS), 1.0 - _EPS)))
    return _sigmoid_np(float(steepness) * (_logit_np(probability) - shift))


def logistic_probability_at_risk(threshold: float, risk: float, steepness: float = 1.0) -> float:
    """The probability at which :func:`logistic_risk` reaches ``risk``: ``p >= this`` exactly where the
    logistic model alone puts a row at ``risk`` or more (``threshold`` itself for risk 0.5; never for
    risk 1 and above, always for risk 0 and below).
    """
    if risk >= 1.0:
        return math.inf
    if risk <= 0.0:
        return 0.0
    if risk == 0.5:
        return float(threshold)  # exactly, not through logit and back
    margin = math.log(threshold / (1.0 - threshold)) + math.log(risk / (1.0 - risk)) / float(steepness)
    return 1.0 / (1.0 + math.exp(-margin))


def combine_risk_array(rcf: np.ndarray | None, logistic: np.ndarray | None, *, method: str = "noisy_or",
                       rcf_weight: float = 1.0, logistic_weight: float = 1.0) -> np.ndarray:
    """The numpy twin of :func:`combine_risk` (NaN or a missing detector counts as 0)."""
    n = len(rcf) if rcf is not None else len(logistic)
    a = (np.zeros(n) if rcf is None else np.nan_to_num(rcf, nan=0.0)) * float(rcf_weight)
    b = (np.zeros(n) if logistic is None else np.nan_to_num(logistic, nan=0.0)) * float(logistic_weight)
    if method == "noisy_or":
        return 1.0 - (1.0 - a) * (1.0 - b)
    if method == "max":
        return np.maximum(a, b)
    raise ValueError(f"method must be 'noisy_or' or 'max', got {method!r}")


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


def reason_codes_array(*, n: int = 3, rcf_attribution=None, rcf_features: Sequence[str] = (), rcf_weight=None,
                       logistic_contributions=None, logistic_features: Sequence[str] = (),
                       logistic_weight=None) -> list[list[str]]:
    """:func:`reason_codes_row` for many rows at once: matrices (rows x features) and weight vectors.

    A row of NaN attributions (not computed) gives no RCF parts, as ``None`` does for one row.
    Shares are computed with the same operations in the same order (the row total summed feature
    by feature), so the ranking is the row-wise one, ties included.
    """
    blocks, names = [], []
    for values, feats, weight, prefix in ((rcf_attribution, rcf_features, rcf_weight, "rcf"),
                                          (logistic_contributions, logistic_features, logistic_weight, "logistic")):
        if values is None:
            continue
        positive = np.maximum(np.nan_to_num(np.asarray(values, np.float64), nan=0.0), 0.0)
        total = np.zeros(positive.shape[0])
        for j in range(positive.shape[1]):
            total = total + positive[:, j]
        w = np.ones(positive.shape[0]) if weight is None else np.asarray(weight, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = positive / total[:, None] * w[:, None]
        blocks.append(np.where(total[:, None] > 0, share, 0.0))
        names.extend(f"{prefix}:{f}" for f in feats)
    if not blocks:
        raise ValueError("reason codes need an RCF attribution or logistic contributions matrix")
    parts = np.hstack(blocks)
    kept = np.where(parts > 0, parts, 0.0)
    name_rank = np.argsort(np.argsort(np.array(names, dtype=object), kind="stable"), kind="stable")
    order = np.lexsort((np.broadcast_to(-name_rank, kept.shape), -kept), axis=-1)
    counts = np.minimum((kept > 0).sum(axis=1), n)
    return [[names[k] for k in order[i, :counts[i]]] for i in range(kept.shape[0])]
