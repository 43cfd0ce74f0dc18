"""PNG plots of detector scores for the evaluation report: ROC and precision-recall curves (from a
``models.evaluation.ScoreTable``) and score histograms by label (counted in Spark).
"""
from __future__ import annotations

import io

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from models.evaluation import EvaluationError, ScoreTable, auc_roc, average_precision, label_int, score_table

__all__ = ["evaluation_plots", "plot_pr", "plot_roc", "plot_score_histogram"]


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _figure().close(fig)
    return buf.getvalue()


def _thin(*arrays: np.ndarray, points: int = 5000) -> tuple[np.ndarray, ...]:
    n = len(arrays[0])
    if n <= points:
        return arrays
    idx = np.unique(np.linspace(0, n - 1, points).astype(int))
    return tuple(a[idx] for a in arrays)


def plot_roc(table: ScoreTable, title: str = "ROC curve") -> bytes:
    """ROC curve as PNG bytes."""
    plt = _figure()
    fpr, tpr = _thin(*table.roc_curve())
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC = {auc_roc(table):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _png(fig)


def plot_pr(table: ScoreTable, title: str = "Precision-recall curve") -> bytes:
    """Precision-recall curve as PNG bytes (with the positive rate as the chance line)."""
    plt = _figure()
    recall, precision = _thin(*table.pr_curve())
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.step(recall, precision, where="post", label=f"AP = {average_precision(table):.3f}")
    rate = table.n_pos / max(table.n_pos + table.n_neg, 1)
    ax.axhline(rate, linestyle="--", color="grey", linewidth=0.8, label=f"positive rate {rate:.3%}")
    ax.set(xlabel="Recall", ylabel="Precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right")
    return _png(fig)


def plot_score_histogram(df: DataFrame, score_col: str, label_col: str = "label", bins: int = 50,
                         threshold: float | None = None, title: str | None = None) -> bytes:
    """Score histograms by label (densities, counted in Spark) as PNG bytes."""
    plt = _figure()
    base = df.select(F.col(score_col).cast("double").alias("s"), label_int(label_col).alias("y")) \
        .where(F.col("s").isNotNull() & ~F.isnan("s"))
    lo, hi = base.agg(F.min("s"), F.max("s")).first()
    if lo is None:
        raise EvaluationError(f"no scores in '{score_col}'")
    width = (hi - lo) / bins if hi > lo else 1.0
    bucket = F.least(F.floor((F.col("s") - F.lit(lo)) / F.lit(width)), F.lit(bins - 1)).cast("int")
    counts = base.groupBy(bucket.alias("b"), "y").count().collect()
    hist = np.zeros((2, bins))
    for row in counts:
        hist[int(row["y"]), int(row["b"])] = row["count"]
    edges = lo + width * np.arange(bins + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for y, name in ((0, "legitimate (0)"), (1, "fraud / anomaly (1)")):
        total = hist[y].sum()
        if total:
            ax.stairs(hist[y] / (total * width), edges, label=f"{name}, n={int(total)}", fill=True, alpha=0.5)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=0.8, label=f"threshold {threshold:.3g}")
    ax.set(xlabel=score_col, ylabel="density", title=title or f"{score_col} by label")
    ax.legend()
    return _png(fig)


def evaluation_plots(df: DataFrame, score_col: str, label_col: str = "label",
                     threshold: float | None = None, table: ScoreTable | None = None) -> dict[str, bytes]:
    """``{"roc": png, "pr": png, "histogram": png}`` for one score column."""
    table = table or score_table(df, score_col, label_col)
    return {
        "roc": plot_roc(table, f"ROC: {score_col}"),
        "pr": plot_pr(table, f"Precision-recall: {score_col}"),
        "histogram": plot_score_histogram(df, score_col, label_col, threshold=threshold),
    }
