"""Alert thresholds chosen on a labelled validation window by a stated rule (``train.threshold``).

Every rule works on a :class:`models.evaluation.ScoreTable` of validation scores (a row is
flagged when ``score >= threshold``) and returns one :class:`ThresholdChoice`:

* ``target`` (the default): ``train.logistic.target_metric`` / ``target_value``. For
  ``precision p``: the lowest threshold whose precision reaches ``p`` *and* whose recall reaches
  the floor ``min_recall`` (the most recall at that precision). For ``recall r``: the highest
  threshold whose recall reaches ``max(r, min_recall)``.
* ``budget``: the lowest threshold that flags at most ``alerts_per_day`` validation rows per
  validation day (the most recall the budget allows).
* ``fbeta``: the threshold of the best F-beta (``beta``; 1 weighs precision and recall alike,
  2 favours recall).

A rule that cannot be met (a precision target unreachable at the recall floor; a budget that even
the highest score exceeds because of ties) says so in ``message`` and falls back to the best
F-beta threshold (``fallback: "fbeta"``): never to "flag nothing".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import numpy as np

from models.evaluation import ScoreTable

__all__ = ["RULES", "ThresholdChoice", "ThresholdRule", "choose_threshold", "flag_metrics", "threshold_rule"]

RULES = ("target", "budget", "fbeta")


@dataclass(frozen=True)
class ThresholdRule:
    """How a detector's alert threshold is chosen on validation (module docstring)."""

    rule: str = "target"
    target_metric: str = "precision"
    target_value: float = 0.8
    min_recall: float = 0.0
    alerts_per_day: float = 100.0
    beta: float = 1.0

    def describe(self) -> str:
        if self.rule == "target":
            floor = f" at recall >= {self.min_recall:g}" if self.target_metric == "precision" and self.min_recall else ""
            goal = max(self.target_value, self.min_recall) if self.target_metric == "recall" else self.target_value
            return f"{self.target_metric} >= {goal:g}{floor}"
        if self.rule == "budget":
            return f"at most {self.alerts_per_day:g} alerts/day"
        return f"best F{self.beta:g}"


def threshold_rule(conf: Mapping[str, Any], logistic_conf: Mapping[str, Any]) -> ThresholdRule:
    """The rule of the config's ``train.threshold`` section (the target from ``train.logistic``)."""
    return ThresholdRule(rule=conf["rule"], target_metric=logistic_conf["target_metric"],
                         target_value=float(logistic_conf["target_value"]), min_recall=float(conf["min_recall"]),
                         alerts_per_day=float(conf["alerts_per_day"]), beta=float(conf["beta"]))


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what it gives on validation."""

    threshold: float
    precision: float
    recall: float
    flagged: int
    alerts_per_day: float
    rule: str
    met: bool
    fallback: Optional[str] = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fbeta(precision: np.ndarray, recall: np.ndarray, beta: float) -> np.ndarray:
    b2 = beta * beta
    denominator = b2 * precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (1 + b2) * precision * recall / np.where(denominator > 0, denominator, 1), 0.0)


def choose_threshold(table: ScoreTable, rule: ThresholdRule, days: int) -> ThresholdChoice:
    """The threshold ``rule`` picks on the validation ``table`` of ``days`` days (module docstring).

    The table needs at least one positive; ``days`` (>= 1) turns flagged rows into alerts per day.
    """
    if table.n_pos == 0:
        raise ValueError("the validation window has no positive labels: no threshold rule can be applied")
    if rule.rule not in RULES:
        raise ValueError(f"threshold rule must be one of {RULES}, got {rule.rule!r}")
    days = max(int(days), 1)
    tp, fp = table.cumulative()
    flagged = tp + fp
    precision = tp / np.maximum(flagged, 1)
    recall = tp / table.n_pos
    per_day = flagged / days
    if rule.rule == "target" and rule.target_metric == "precision":
        ok = np.flatnonzero((precision >= rule.target_value) & (recall >= rule.min_recall))
        idx = int(ok[-1]) if ok.size else None
    elif rule.rule == "target":
        ok = np.flatnonzero(recall >= max(rule.target_value, rule.min_recall))
        idx = int(ok[0]) if ok.size else None
    elif rule.rule == "budget":
        ok = np.flatnonzero(per_day <= rule.alerts_per_day)
        idx = int(ok[-1]) if ok.size else None
    else:
        idx = int(np.argmax(_fbeta(precision, recall, rule.beta)))
    fallback, message = None, f"rule {rule.describe()} met"
    if idx is None:
        idx = int(np.argmax(_fbeta(precision, recall, rule.beta)))
        fallback = "fbeta"
        if rule.rule == "budget":
            why = f"even the highest score flags {per_day[0]:.1f} rows/day"
        elif rule.target_metric == "precision":
            reach = precision[recall >= rule.min_recall]
            why = f"the best precision at recall >= {rule.min_recall:g} is {reach.max():.3f}"
        else:
            why = "no threshold reaches that recall"
        message = (f"rule {rule.describe()} cannot be met on validation ({why}); "
                   f"falling back to the best F{rule.beta:g} threshold")
    return ThresholdChoice(threshold=float(table.scores[idx]), precision=float(precision[idx]),
                           recall=float(recall[idx]), flagged=int(flagged[idx]), alerts_per_day=float(per_day[idx]),
                           rule=rule.describe(), met=fallback is None, fallback=fallback, message=message)


def flag_metrics(flags: np.ndarray, labels: np.ndarray, days: int) -> dict[str, Any]:
    """Precision, recall and alerts per day of boolean ``flags`` against 0/1 ``labels`` (NaN: unlabelled).

    Unlabelled rows count in the alerts per day only; precision/recall are None without labels.
    """
    flags = np.asarray(flags, bool)
    labels = np.asarray(labels, np.float64)
    known = ~np.isnan(labels)
    positive = known & (labels > 0)
    flagged_known = int((flags & known).sum())
    tp = int((flags & positive).sum())
    n_pos = int(positive.sum())
    return {"flagged": int(flags.sum()), "alerts_per_day": float(flags.sum()) / max(int(days), 1),
            "precision": (tp / flagged_known if flagged_known else float("nan")) if n_pos else None,
            "recall": tp / n_pos if n_pos else None}
