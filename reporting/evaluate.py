"""The champion models evaluated on a test window, behind `python -m jobs evaluate`.

Scores the test window of the feature table with the champions and measures each detector and
the combined risk (``models.evaluation``); for data sets with a card column, the Fraud Detection
Handbook's protocol: cards already known compromised are excluded from the test window and card
precision@k is added. The metrics, ROC, PR and histogram plots go into one HTML report
(``reporting.report``).

The feature table is read at one Delta version (models/snapshots.py): the latest by default, or
the one ``as_of`` names (a version, a time, a registry version, or ``champion``: the snapshot the
champions were trained on), so an evaluation can be repeated on exactly the data it saw; the
result names the version read (``snapshots``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from features.datasets import Dataset
from models.evaluation import exclude_known_compromised
from reporting.report import evaluation_report, write_report
from runtime.config import ScoringConfig
from runtime.errors import InputError
from runtime.progress import step
from models.snapshots import open_training_data
from runtime.storage import between_dates
from scoring.champions import load_champions, registry_root
from scoring.plan import ScoringError
from scoring.spark import score_events
from scoring.table import kept_columns

__all__ = ["HEADLINE", "metric_lines", "run_evaluation"]

HEADLINE = ("auc_roc", "average_precision", "precision", "recall", "precision_at_k", "card_precision_at_100")


def window_dates(window: dict, test_from: str | None, test_to: str | None) -> tuple[dt.date, dt.date]:
    """The test dates: the ones given, else those the champion was tested on at training."""
    try:
        first = dt.date.fromisoformat(test_from or window["test_from"])
        last = dt.date.fromisoformat(test_to or window["test_to"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"bad or missing test window ({exc}): give --test-from and --test-to") from None
    return first, last


def run_evaluation(spark: SparkSession, scoring: ScoringConfig, *, dataset: Dataset, features: str, models: str,
                   storage_format: str, k: int, output: str, label_delay_days: int,
                   test_from: str | None = None, test_to: str | None = None, quiet: bool = False,
                   as_of: str | None = None, labels: str | None = None) -> dict[str, Any]:
    """Evaluate the champions of ``dataset`` (registry ``models``) on the test window of the feature
    table ``features``; write the HTML report to ``output`` and return the headline metrics of the
    combined risk with a ``detectors`` entry per detector. ``label_delay_days`` is the Handbook's
    feedback delay, used when the champion's data window does not record its gap. ``as_of``:
    which snapshot of the feature table to read (module docstring); ``labels``: the labels
    table's path, whose version is named in the result when it is a Delta table.
    """
    try:
        champions = load_champions(models, dataset.name)
    except ScoringError as exc:
        raise InputError(str(exc)) from None
    data = open_training_data(spark, features=features, fmt=storage_format, labels=labels, as_of=as_of,
                              registry_root=registry_root(models, dataset.name), kinds=tuple(champions.info))
    table = data.table
    window = next(iter(champions.info.values()))["data_window"]
    first, last = window_dates(window, test_from, test_to)
    test_df = between_dates(table, str(first), str(last))
    card = {}
    if dataset.card_col:
        gap = int(window.get("gap_days", label_delay_days))
        since = window.get("train_from", str(first))
        test_df = exclude_known_compromised(test_df, between_dates(table, since, str(last)), card_col=dataset.card_col,
                                            date_col="date", delay_days=gap, since=since)
        card = {"card_col": dataset.card_col, "date_col": "date"}
    scored = score_events(test_df, champions, risk_method=scoring.risk_method, anomaly_risk=scoring.anomaly_risk,
                          reasons=scoring.reasons, keep=kept_columns(dataset, test_df.columns))
    scored = scored.where(F.col("label").isNotNull()).persist()
    if scored.limit(1).count() == 0:
        raise InputError(f"no labeled rows in the test window {first}..{last}: nothing to evaluate")
    stacked = scoring.risk_method == "stacked" and champions.stacker is not None
    thresholds = {"risk": champions.stacker.threshold if stacked else scoring.anomaly_risk}
    if champions.rcf is not None:
        thresholds["rcf_score"] = champions.rcf.threshold
    if champions.logistic is not None:
        thresholds["logistic_score"] = champions.logistic.threshold
    progress = contextlib.nullcontext() if quiet else step("evaluate", f"evaluating {', '.join(thresholds)}")
    with progress:
        page, metrics = evaluation_report(
            scored, thresholds, k=k, title=f"Detector evaluation — {dataset.name}, test {first}..{last}",
            notes=[f"rcf {champions.rcf_version}, logistic {champions.logistic_version}",
                   f"read {data.describe()}" + (f" (as of {as_of})" if as_of else ""),
                   f"combined risk: scoring/risk.py ({scoring.risk_method} of each detector squashed to 0.5 "
                   "at its own threshold)"],
            **card)
        write_report(output, page)
    scored.unpersist()
    result = {key: metrics["risk"].get(key) for key in HEADLINE if key in metrics["risk"]}
    result.update({"dataset": dataset.name, "test_from": str(first), "test_to": str(last), "k": k, "report": output,
                   "models": {"rcf": champions.rcf_version, "logistic": champions.logistic_version},
                   "stacker": champions.stacker_version if stacked else None,
                   "risk_method": "stacked" if stacked else ("max" if scoring.risk_method == "stacked"
                                                             else scoring.risk_method),
                   "risk_threshold": thresholds["risk"],
                   "snapshots": data.snapshots,
                   "detectors": {name: {key: m.get(key) for key in HEADLINE if key in m}
                                 for name, m in metrics.items() if name != "risk"}})
    return result


def metric_lines(result: dict[str, Any]) -> list[str]:
    """One line per score (the combined risk first) with its headline metrics, for the console."""
    scores = {"risk": result, **result["detectors"]}
    return [f"{name:<15} " + ", ".join(f"{key} {m[key]:.3f}" for key in HEADLINE
                                       if isinstance(m.get(key), (int, float)))
            for name, m in scores.items()]
