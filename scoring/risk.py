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
* ``stacked``: a calibrated stacker (:class:`Stacker`), a small logistic model on the detectors'
  risk components fitted on the validation window by the train job and kept in the registry
  beside the detectors: ``risk = sigmoid(b + sum_k v_k logit(r_k))`` is a probability of a true
  alert, and ``is_anomaly`` is ``risk >= `` the stacker's own threshold (chosen on validation by
  ``train.threshold``'s rule). It learns how much to trust each detector, so a weak detector
  cannot drag the strong one down as ``max`` lets it (every flag of either passes). A missing
  component (NaN, or a detector the stacker does not know) counts as its threshold (logit 0).
  :func:`combine_risks` takes the components as a mapping ``name -> array``, so any detector
  (``rcf``, ``logistic``, ``som``, ...) slots in.
* Reason codes: each detector's positive per-feature parts (RCF attribution, logistic
  coefficient x standardized value) are turned into shares of that detector's positive total and
  multiplied by the detector's risk component; the ``n`` largest across both detectors are named
  ``rcf:<feature>`` / ``logistic:<feature>``, largest first. Without per-feature parts (the
  SageMaker endpoints return none), :func:`detector_reasons` names the detectors instead.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["RISK_METHODS", "SQUASH", "Stacker", "combine_risk_array", "combine_risks", "detector_reasons",
           "fit_stacker", "risk_components", "logistic_probability_at_risk", "logistic_risk_array",
           "rcf_risk_array", "reason_codes_array"]

_EPS = 1e-12
RISK_METHODS = ("max", "noisy_or", "stacked")


def _sigmoid_np(x):
    with np.errstate(over="ignore"):  # exp overflows to inf for margins below -709: the sigmoid is 0 there
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


@dataclass(frozen=True)
class Stacker:
    """``risk = sigmoid(intercept + sum_k weights[k] * logit(component[detectors[k]]))`` and its
    alert ``threshold`` (module docstring); ``versions``: the detector versions it was fitted on.
    """

    detectors: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    threshold: float = 0.5
    versions: tuple[tuple[str, str], ...] = ()

    def margin(self, components: Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(components.values())))
        acc = np.full(n, float(self.intercept))
        for name, weight in zip(self.detectors, self.weights, strict=True):
            values = components.get(name)
            if values is not None:
                acc = acc + weight * np.nan_to_num(_logit_np(np.asarray(values, np.float64)), nan=0.0)
        return acc

    def risk(self, components: Mapping[str, np.ndarray]) -> np.ndarray:
        return _sigmoid_np(self.margin(components))

    def alone_at(self, name: str) -> float:
        """The risk component at which detector ``name`` alone (the others at their thresholds,
        logit 0) brings the stacked risk to ``threshold``: where that detector drives a flag and
        explains it. ``inf`` for a detector the stacker does not weigh positively.
        """
        if name not in self.detectors:
            return math.inf
        weight = self.weights[self.detectors.index(name)]
        if not weight > 0:
            return math.inf
        t = min(max(self.threshold, _EPS), 1.0 - _EPS)
        return 1.0 / (1.0 + math.exp(-(math.log(t / (1.0 - t)) - self.intercept) / weight))

    def as_dict(self) -> dict[str, Any]:
        return {"detectors": list(self.detectors), "weights": list(self.weights), "intercept": self.intercept,
                "threshold": self.threshold, "versions": dict(self.versions)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stacker:
        return cls(detectors=tuple(data["detectors"]), weights=tuple(float(w) for w in data["weights"]),
                   intercept=float(data["intercept"]), threshold=float(data["threshold"]),
                   versions=tuple(sorted((data.get("versions") or {}).items())))


def fit_stacker(components: Mapping[str, np.ndarray], labels: np.ndarray, *, l2: float = 1e-4,
                iterations: int = 50) -> Stacker:
    """Fit :class:`Stacker` weights by Newton's method on the log loss (an ``l2`` penalty on the
    weights, not the intercept) on rows with a label; threshold 0.5 until the caller chooses one.
    """
    names = tuple(components)
    if not names:
        raise ValueError("the stacker needs at least one detector's scores")
    y = np.asarray(labels, np.float64)
    keep = ~np.isnan(y)
    X = np.column_stack([np.nan_to_num(_logit_np(np.asarray(components[k], np.float64)), nan=0.0)
                         for k in names])[keep]
    y = (y[keep] > 0).astype(np.float64)
    if not 0 < y.sum() < len(y):
        raise ValueError(f"the stacker needs both classes among the labelled rows ({int(y.sum())} positives "
                         f"of {len(y)})")
    X = np.column_stack([np.ones(len(y)), X])
    beta = np.zeros(X.shape[1])
    beta[0] = math.log(y.mean() / (1.0 - y.mean()))
    penalty = np.full(X.shape[1], l2 * len(y))
    penalty[0] = 0.0
    def loss(b):
        m = X @ b
        return float(np.sum(np.logaddexp(0.0, m) - y * m) + 0.5 * np.sum(penalty * b * b))

    current = loss(beta)
    for _ in range(iterations):
        p = _sigmoid_np(X @ beta)
        gradient = X.T @ (p - y) + penalty * beta
        hessian = (X * (p * (1.0 - p))[:, None]).T @ X + np.diag(penalty) + 1e-9 * np.eye(X.shape[1])
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6:  # damped Newton: a full step can overshoot where scores saturate
            candidate = beta - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale /= 2.0
        else:
            break
        beta, improvement, current = candidate, current - value, value
        if np.max(np.abs(scale * step)) < 1e-10 or improvement < 1e-12 * max(1.0, abs(current)):
            break
    return Stacker(detectors=names, weights=tuple(float(b) for b in beta[1:]), intercept=float(beta[0]))


def combine_risks(components: Mapping[str, Optional[np.ndarray]], *, method: str = "max",
                  stacker: Optional[Stacker] = None) -> np.ndarray:
    """One risk from the detectors' risk components (``name -> array`` in [0, 1], NaN = missing;
    None: no such detector): ``max``, ``noisy_or`` (unit weights) or ``stacked`` (``stacker``).
    """
    present = {k: v for k, v in components.items() if v is not None}
    if not present:
        raise ValueError("combine_risks needs at least one detector's risk")
    if method == "stacked":
        if stacker is None:
            raise ValueError("risk_method 'stacked' needs a stacker (train both detectors: the train job fits it)")
        return stacker.risk(present)
    values = [np.nan_to_num(np.asarray(v, np.float64), nan=0.0) for v in present.values()]
    if method == "max":
        return np.maximum.reduce(values)
    if method == "noisy_or":
        return 1.0 - np.multiply.reduce([1.0 - v for v in values])
    raise ValueError(f"method must be one of {', '.join(RISK_METHODS)}, got {method!r}")


#: Each detector kind's score -> risk component (0.5 at its own threshold); a new detector adds its own.
SQUASH = {"rcf": rcf_risk_array, "logistic": logistic_risk_array}


def risk_components(scores: Mapping[str, np.ndarray], thresholds: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Each detector's risk component from its score and threshold (:data:`SQUASH`)."""
    unknown = [k for k in scores if k not in SQUASH]
    if unknown:
        raise ValueError(f"no risk component for detector(s) {', '.join(unknown)} (known: {', '.join(SQUASH)})")
    return {k: SQUASH[k](np.asarray(v, np.float64), thresholds[k]) for k, v in scores.items()}
