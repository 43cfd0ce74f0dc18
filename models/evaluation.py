"""Evaluation of detector scores: ranking metrics, threshold metrics, the Fraud Detection Handbook's
card precision@k and its train/test protocol (the plots are in ``reporting.plots``).

Definitions (they match scikit-learn and the Handbook, so numbers are comparable):

* ``auc_roc``: area under the ROC curve with ties counted half (Mann-Whitney U / (P N)), as
  ``sklearn.metrics.roc_auc_score``.
* ``average_precision``: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds taken
  from high to low, as ``sklearn.metrics.average_precision_score`` (no interpolation).
* ``precision``/``recall`` at a threshold: a row is flagged when ``score >= threshold``.
* ``precision_at_k``: share of frauds among the ``k`` highest scored rows (ties broken by order).
* ``card_precision_at_k`` (Handbook, "Precision top-k metrics"): for each day, every card gets
  the maximum score and the maximum label of its transactions that day; the ``k`` cards with the
  highest score are the day's alerts and the day's value is (number of fraudulent cards among
  them) / ``k``. Cards found fraudulent in an earlier day's alerts are removed from later days.
  The result is the mean over days.
* Known-compromised exclusion (Handbook ``get_train_test_set``): a test transaction on day ``t``
  is dropped when its card had a fraud on a day from the start of the training period up to
  ``t - delay_days - 1`` (frauds become known after the feedback delay).

Everything is aggregated in Spark; only aggregates come to the driver: one row per distinct score
(or per bin when there are more than ``max_points`` distinct scores), top-``k`` rows.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

__all__ = [
    "ScoreTable",
    "auc_roc",
    "average_precision",
    "card_precision_at_k",
    "evaluate_scores",
    "exclude_known_compromised",
    "handbook_train_test_split",
    "label_int",
    "precision_at_k",
    "score_table",
    "threshold_for_target",
    "threshold_metrics",
]

DEFAULT_MAX_POINTS = 1_000_000


class EvaluationError(ValueError):
    """The scores cannot be evaluated (no rows, only one class, missing columns)."""


def _require(df: DataFrame, *cols: str | None) -> None:
    missing = [c for c in cols if c and c not in df.columns]
    if missing:
        raise EvaluationError(f"missing columns {missing}; the frame has {df.columns}")


@dataclass(frozen=True)
class ScoreTable:
    """Positive and negative counts per distinct score (or score bin), scores descending."""

    scores: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    binned: bool = False

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg.sum())

    def cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """True and false positives when flagging ``score >= scores[i]``."""
        return np.cumsum(self.pos), np.cumsum(self.neg)

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        tp, fp = self.cumulative()
        fpr = np.concatenate([[0.0], fp / max(self.n_neg, 1)])
        tpr = np.concatenate([[0.0], tp / max(self.n_pos, 1)])
        return fpr, tpr

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        tp, fp = self.cumulative()
        precision = tp / np.maximum(tp + fp, 1)
        recall = tp / max(self.n_pos, 1)
        return recall, precision


def label_int(label_col: str) -> Column:
    """The label as 0/1 (any positive value is 1); a null label stays null."""
    return (F.col(label_col).cast("double") > 0).cast("int")


def score_table(df: DataFrame, score_col: str, label_col: str = "label",
                max_points: int = DEFAULT_MAX_POINTS) -> ScoreTable:
    """Aggregate ``df`` to counts per distinct score in Spark and bring that table to the driver.

    With more than ``max_points`` distinct scores the scores are put in ``max_points`` equal-width
    bins (each represented by its highest score); metrics then treat a bin as one tie group.
    Rows with a null score or label are ignored.
    """
    _require(df, score_col, label_col)
    base = (df.select(F.col(score_col).cast("double").alias("s"), label_int(label_col).alias("y"))
            .where(F.col("s").isNotNull() & ~F.isnan("s") & F.col("y").isNotNull()))
    grouped = base.groupBy("s").agg(F.sum("y").alias("pos"), (F.count("*") - F.sum("y")).alias("neg"))
    binned = False
    pdf = grouped.limit(max_points + 1).toPandas()  # one job when the scores fit
    if len(pdf) > max_points:
        lo, hi = base.agg(F.min("s"), F.max("s")).first()
        width = (hi - lo) / max_points or 1.0
        bucket = F.least(F.floor((F.col("s") - F.lit(lo)) / F.lit(width)), F.lit(max_points - 1))
        grouped = (base.groupBy(bucket.alias("b"))
                   .agg(F.max("s").alias("s"), F.sum("y").alias("pos"),
                        (F.count("*") - F.sum("y")).alias("neg"))
                   .drop("b"))
        binned = True
        pdf = grouped.toPandas()
    if pdf.empty:
        raise EvaluationError(f"no rows with a score in '{score_col}' and a label in '{label_col}'")
    pdf = pdf.sort_values("s", ascending=False)
    return ScoreTable(scores=pdf["s"].to_numpy(dtype=float), pos=pdf["pos"].to_numpy(dtype=np.int64),
                      neg=pdf["neg"].to_numpy(dtype=np.int64), binned=binned)


def array_table(scores: np.ndarray, labels: np.ndarray) -> ScoreTable:
    """The :class:`ScoreTable` of numpy ``scores`` and 0/1 ``labels`` (rows where either is NaN are
    ignored), for scores computed on the driver (the stacked risk of the train job).
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    keep = ~(np.isnan(scores) | np.isnan(labels))
    if not keep.any():
        raise EvaluationError("no rows with both a score and a label")
    values, inverse = np.unique(scores[keep], return_inverse=True)
    pos = np.bincount(inverse, weights=(labels[keep] > 0).astype(np.float64), minlength=len(values))
    total = np.bincount(inverse, minlength=len(values))
    order = np.arange(len(values))[::-1]
    return ScoreTable(scores=values[order], pos=pos[order].astype(np.int64),
                      neg=(total - pos)[order].astype(np.int64))


def auc_roc(table: ScoreTable) -> float:
    """Area under the ROC curve, ties counted half (equal to sklearn's ``roc_auc_score``)."""
    n_pos, n_neg = table.n_pos, table.n_neg
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_at_or_above = np.cumsum(table.neg)
    neg_below = n_neg - neg_at_or_above
    return float(np.sum(table.pos * (neg_below + 0.5 * table.neg)) / (n_pos * n_neg))


def average_precision(table: ScoreTable) -> float:
    """``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds (sklearn's ``average_precision_score``)."""
    if table.n_pos == 0:
        return float("nan")
    tp, fp = table.cumulative()
    precision = tp / (tp + fp)
    return float(np.sum(precision * table.pos) / table.n_pos)


def table_threshold_metrics(table: ScoreTable, threshold: float) -> dict[str, Any]:
    """``threshold_metrics`` from a score table (exact unless the table is binned)."""
    flagged_mask = table.scores >= threshold
    tp, flagged = int(table.pos[flagged_mask].sum()), int((table.pos + table.neg)[flagged_mask].sum())
    return {
        "threshold": float(threshold),
        "precision": tp / flagged if flagged else float("nan"),
        "recall": tp / table.n_pos if table.n_pos else float("nan"),
        "flagged": flagged,
        "true_positives": tp,
    }


def threshold_metrics(df: DataFrame, score_col: str, label_col: str, threshold: float) -> dict[str, Any]:
    """Precision, recall and counts when flagging ``score >= threshold`` (computed in Spark)."""
    _require(df, score_col, label_col)
    y = label_int(label_col)
    flag = (F.col(score_col) >= F.lit(float(threshold))).cast("int")
    row = df.agg(F.count(F.col(score_col)).alias("n"), F.sum(y).alias("pos"),
                 F.sum(flag).alias("flagged"), F.sum(flag * y).alias("tp")).first()
    _, pos, flagged, tp = (int(v or 0) for v in row)
    return {
        "threshold": float(threshold),
        "precision": tp / flagged if flagged else float("nan"),
        "recall": tp / pos if pos else float("nan"),
        "flagged": flagged,
        "true_positives": tp,
    }


def precision_at_k(df: DataFrame, score_col: str, label_col: str = "label", k: int = 100) -> float:
    """Share of positives among the ``k`` highest scores (divided by ``k``, as the Handbook does)."""
    _require(df, score_col, label_col)
    top = (df.where(F.col(score_col).isNotNull()).orderBy(F.col(score_col).desc())
           .limit(k).agg(F.sum(label_int(label_col))).first()[0])
    return float(top or 0) / k


def card_precision_at_k(df: DataFrame, score_col: str, label_col: str = "label", *, card_col: str,
                        date_col: str, k: int = 100, remove_detected: bool = True) -> dict[str, Any]:
    """The Handbook's card precision top-k (see the module docstring).

    ``date_col`` is a date (or a timestamp, taken to its UTC day). Returns ``{"mean": float,
    "per_day": [...], "days": [...], "detected_cards": n, "compromised_per_day": [...],
    "ceiling": float}``: the fraudulent cards still candidates each day (after removal) and the
    best mean reachable with them (``mean(min(n_d, k) / k)``). Ties in a day's card scores are
    broken by ascending card id so the result is deterministic.
    """
    _require(df, score_col, label_col, card_col, date_col)
    per_card_day = (df.select(F.to_date(F.col(date_col)).alias("_day"), F.col(card_col).alias("_card"),
                              F.col(score_col).cast("double").alias("_score"),
                              label_int(label_col).alias("_y"))
                    .where(F.col("_score").isNotNull())
                    .groupBy("_day", "_card").agg(F.max("_score").alias("_score"), F.max("_y").alias("_y"))
                    .cache())
    try:
        days = [r[0] for r in per_card_day.select("_day").distinct().orderBy("_day").collect()]
        detected: list = []
        per_day: list = []
        compromised: list = []
        for day in days:
            candidates = per_card_day.where(F.col("_day") == F.lit(day))
            if detected:
                candidates = candidates.where(~F.col("_card").isin(detected))
            compromised.append(int(candidates.agg(F.sum("_y")).first()[0] or 0))
            top = candidates.orderBy(F.col("_score").desc(), F.col("_card").asc()).limit(k).collect()
            caught = [r["_card"] for r in top if r["_y"] == 1]
            per_day.append(len(caught) / k)
            if remove_detected:
                detected.extend(caught)
    finally:
        per_card_day.unpersist()
    if not per_day:
        raise EvaluationError("no scored rows for card precision@k")
    return {"mean": float(np.mean(per_day)), "per_day": per_day, "days": [str(d) for d in days],
            "detected_cards": len(detected), "compromised_per_day": compromised,
            "ceiling": float(np.mean([min(n, k) / k for n in compromised]))}


def exclude_known_compromised(test_df: DataFrame, history_df: DataFrame, *, card_col: str,
                              date_col: str, label_col: str = "label", delay_days: int = 7,
                              since: str | None = None) -> DataFrame:
    """Drop test rows of cards already known to be compromised on the row's day.

    A card is known compromised on day ``t`` when ``history_df`` has a fraud for it on a day in
    ``[since, t - delay_days - 1]`` (``since``: first day counted, e.g. the start of training;
    None counts all history). ``history_df`` may include the test period itself.
    """
    _require(test_df, card_col, date_col)
    _require(history_df, card_col, date_col, label_col)
    frauds = history_df.where(label_int(label_col) == 1)
    if since is not None:
        frauds = frauds.where(F.to_date(F.col(date_col)) >= F.to_date(F.lit(since)))
    first_fraud = (frauds.groupBy(F.col(card_col).alias("_kc_card"))
                   .agg(F.min(F.to_date(F.col(date_col))).alias("_kc_first")))
    joined = test_df.join(first_fraud, test_df[card_col] == first_fraud["_kc_card"], "left")
    known = F.date_add(F.col("_kc_first"), delay_days + 1) <= F.to_date(F.col(date_col))
    return joined.where(F.col("_kc_first").isNull() | ~known).drop("_kc_card", "_kc_first")


def handbook_train_test_split(df: DataFrame, start_date_training: str, *, delta_train: int = 7,
                              delta_delay: int = 7, delta_test: int = 7, card_col: str = "customer_id",
                              time_col: str = "event_time",
                              label_col: str = "label") -> tuple[DataFrame, DataFrame]:
    """The Handbook's ``get_train_test_set``: ``delta_train`` training days from
    ``start_date_training``, a gap of ``delta_delay`` days, then ``delta_test`` test days with the
    known-compromised cards removed (frauds from the training start up to ``t - delta_delay - 1``).
    """
    start = _dt.date.fromisoformat(start_date_training)
    day = F.to_date(F.col(time_col))

    def between(first: _dt.date, days: int) -> Column:
        return (day >= F.lit(first)) & (day < F.lit(first + _dt.timedelta(days=days)))

    train_df = df.where(between(start, delta_train))
    test_start = start + _dt.timedelta(days=delta_train + delta_delay)
    test_df = df.where(between(test_start, delta_test))
    history = df.where(between(start, delta_train + delta_delay + delta_test))
    test_df = exclude_known_compromised(test_df, history, card_col=card_col, date_col=time_col,
                                        label_col=label_col, delay_days=delta_delay,
                                        since=start.isoformat())
    return train_df, test_df


def threshold_for_target(table: ScoreTable, target: dict[str, float]) -> dict[str, Any]:
    """The decision threshold meeting ``{"precision": p}`` (lowest threshold with precision >= p,
    i.e. the most recall) or ``{"recall": r}`` (highest threshold with recall >= r).

    When no threshold reaches the target, the one closest to it is returned with
    ``target_met: False``: for precision the threshold of highest precision, for recall the lowest.
    """
    if len(target) != 1 or next(iter(target)) not in ("precision", "recall"):
        raise ValueError(f"target must be {{'precision': p}} or {{'recall': r}}, got {target!r}")
    kind, goal = next(iter(target.items()))
    tp, fp = table.cumulative()
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(table.n_pos, 1)
    if kind == "precision":
        ok = np.flatnonzero(precision >= goal)
        idx = int(ok[-1]) if ok.size else int(np.argmax(precision))
    else:
        ok = np.flatnonzero(recall >= goal)
        idx = int(ok[0]) if ok.size else len(table.scores) - 1
    return {"threshold": float(table.scores[idx]), "precision": float(precision[idx]),
            "recall": float(recall[idx]), "target": dict(target), "target_met": bool(ok.size)}


def evaluate_scores(df: DataFrame, score_col: str, label_col: str = "label", threshold: float = 0.5,
                    k: int = 100, card_col: str | None = None, date_col: str | None = None,
                    max_points: int = DEFAULT_MAX_POINTS, table: ScoreTable | None = None) -> dict[str, Any]:
    """All metrics of ``score_col`` against ``label_col`` as one JSON-friendly dict.

    Keys: ``n``, ``n_positive``, ``auc_roc``, ``average_precision``, ``threshold``,
    ``precision``, ``recall``, ``flagged``, ``k``, ``precision_at_k``; with ``card_col`` and
    ``date_col`` also ``card_precision_at_{k}`` (e.g. ``card_precision_at_100``) and
    ``card_precision_per_day``. Known-compromised cards must already be excluded from ``df``
    (``exclude_known_compromised``). ``table``: a ``score_table`` of the same data, to reuse.
    """
    if (card_col is None) != (date_col is None):
        raise ValueError("card_col and date_col go together")
    table = table or score_table(df, score_col, label_col, max_points=max_points)
    at_threshold = (threshold_metrics(df, score_col, label_col, threshold) if table.binned
                    else table_threshold_metrics(table, threshold))
    out: dict[str, Any] = {
        "n": table.n_pos + table.n_neg,
        "n_positive": table.n_pos,
        "auc_roc": auc_roc(table),
        "average_precision": average_precision(table),
        "threshold": float(threshold),
        "precision": at_threshold["precision"],
        "recall": at_threshold["recall"],
        "flagged": at_threshold["flagged"],
        "k": k,
        "precision_at_k": precision_at_k(df, score_col, label_col, k),
        "approximate": table.binned,
    }
    if card_col is not None:
        cpk = card_precision_at_k(df, score_col, label_col, card_col=card_col, date_col=date_col, k=k)
        out[f"card_precision_at_{k}"] = cpk["mean"]
        out["card_precision_per_day"] = cpk["per_day"]
        out[f"card_precision_at_{k}_ceiling"] = cpk["ceiling"]
    return out
