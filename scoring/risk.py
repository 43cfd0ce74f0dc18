"""One risk in [0, 1] from the RCF score and the logistic probability, with reason codes (numpy).

Formula (numpy arrays; every scoring path, the SageMaker backend's included, runs these):

* RCF: ``r_rcf = sigmoid(k_rcf * (s / t_rcf - 1))`` with ``s`` the RCF score and ``t_rcf`` the
  model's stored threshold: 0.5 exactly at the threshold, ~0.98 at twice the threshold
  (``k_rcf = 4``), ~0.02 at score 0. Scaling by the threshold makes ``k_rcf`` independent of the
  RCF score's scale (it grows with log2 of the sample size).
* Logistic: ``r_log = sigmoid(k_log * (logit(p) - logit(t_log)))`` with ``p`` the probability
  and ``t_log`` the chosen decision threshold: 0.5 exactly at the threshold, and with
  ``k_log = 1`` it is ``p`` re-calibrated so the threshold sits at 0.5 (odds ratio form
  ``o / (1 + o)``, ``o = odds(p) / odds(t_log)``).
* Combined (``scoring.risk_method`` in the config): ``max`` (the default):
  ``risk = max(w_rcf r_rcf, w_log r_log)``, where ``risk >= 0.5`` is exactly "some detector
  flags"; ``noisy_or``: ``risk = 1 - (1 - w_rcf r_rcf)(1 - w_log r_log)``: either detector alone
  at its threshold gives at least 0.5 (with unit weights) and agreement raises the risk. A
  missing (NaN) component counts as 0.
* Reason codes: each detector's positive per-feature parts (RCF attribution, logistic
  coefficient x standardized value) are turned into shares of that detector's positive total and
  multiplied by the detector's risk component; the ``n`` largest across both detectors are named
  ``rcf:<feature>`` / ``logistic:<feature>``, largest first. Without per-feature parts (the
  SageMaker endpoints return none), :func:`detector_reasons` names the detectors instead.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["combine_risk_array", "detector_reasons", "logistic_probability_at_risk", "logistic_risk_array",
           "rcf_risk_array", "reason_codes_array"]

_EPS = 1e-12


def _sigmoid_np(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit_np(p):
    clipped = np.minimum(np.maximum(p, _EPS), 1.0 - _EPS)
    return np.log(clipped / (1.0 - clipped))


def rcf_risk_array(score: np.ndarray, threshold: float, steepness: float = 4.0) -> np.ndarray:
    """RCF score squashed to [0, 1], 0.5 at ``threshold`` (must be > 0); NaN for a missing score."""
    if not threshold > 0:
        raise ValueError(f"the RCF threshold must be positive, got {threshold!r}")
    return _sigmoid_np(float(steepness) * (score / float(threshold) - 1.0))


def logistic_risk_array(probability: np.ndarray, threshold: float, steepness: float = 1.0) -> np.ndarray:
    """Logistic probability re-centred so ``threshold`` maps to 0.5; NaN for a missing probability."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"the logistic threshold must be in (0, 1), got {threshold!r}")
    shift = np.log(min(max(threshold, _EPS), 1.0 - _EPS) / (1.0 - min(max(threshold, _EPS), 1.0 - _EPS)))
    return _sigmoid_np(float(steepness) * (_logit_np(probability) - shift))


def logistic_probability_at_risk(threshold: float, risk: float, steepness: float = 1.0) -> float:
    """The probability at which :func:`logistic_risk_array` reaches ``risk``: ``p >= this`` exactly where the
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


def combine_risk_array(rcf: np.ndarray | None, logistic: np.ndarray | None, *, method: str = "max",
                       rcf_weight: float = 1.0, logistic_weight: float = 1.0) -> np.ndarray:
    """Combine two risks in [0, 1] (module docstring); NaN or a missing detector counts as 0."""
    n = len(rcf) if rcf is not None else len(logistic)
    a = (np.zeros(n) if rcf is None else np.nan_to_num(rcf, nan=0.0)) * float(rcf_weight)
    b = (np.zeros(n) if logistic is None else np.nan_to_num(logistic, nan=0.0)) * float(logistic_weight)
    if method == "noisy_or":
        return 1.0 - (1.0 - a) * (1.0 - b)
    if method == "max":
        return np.maximum(a, b)
    raise ValueError(f"method must be 'noisy_or' or 'max', got {method!r}")


def reason_codes_array(*, n: int = 3, rcf_attribution=None, rcf_features: Sequence[str] = (), rcf_weight=None,
                       logistic_contributions=None, logistic_features: Sequence[str] = (),
                       logistic_weight=None) -> list[list[str]]:
    """The ``n`` strongest reasons of each row, largest first: matrices (rows x features) and weight vectors.

    A row of NaN attributions (not computed) gives no RCF parts. The row total is summed feature
    by feature; ties are broken by name, descending (as Spark's ``sort_array`` of (value, name)
    structs orders them: a test holds this to a row-by-row ranking).
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


def detector_reasons(components: Mapping[str, np.ndarray], n: int = 3, at: float = 0.5) -> list[list[str]]:
    """Per row, the names of the detectors whose own risk component reaches ``at``, strongest
    first (ties by name, descending), at most ``n`` (``[]`` for all rows when ``n <= 0``).

    ``components``: ``{name: risk component per row}`` (NaN counts as 0).
    """
    names = list(components)
    rows = len(next(iter(components.values()))) if components else 0
    if n <= 0 or not names:
        return [[] for _ in range(rows)]
    values = np.column_stack([np.nan_to_num(np.asarray(components[k], np.float64), nan=0.0) for k in names])
    name_rank = np.argsort(np.argsort(np.array(names, dtype=object), kind="stable"), kind="stable")
    order = np.lexsort((np.broadcast_to(-name_rank, values.shape), -values), axis=-1)
    counts = np.minimum((values >= at).sum(axis=1), n)
    return [[names[k] for k in order[i, :counts[i]]] for i in range(rows)]
