"""The scores table: its columns, how a window of dates is written, and what a run wrote.

Columns: ids, event time, date, label and context (amount, anomaly_type, fraud_scenario where the
data set has them), then each detector's score, risk, is_anomaly, the model versions and reasons.
The features stay in the feature table (join on the event id): carrying ~90 of them through
scoring and writing them again doubled the nightly job's time.
"""
from __future__ import annotations

from typing import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.datasets import Dataset
from runtime.progress import log
from runtime.storage import between_dates, read_table, replace_where, write_table

SCORES = ["rcf_score", "logistic_score", "risk", "is_anomaly", "rcf_version", "logistic_version", "reasons"]
CONTEXT = ["amount", "anomaly_type", "fraud_scenario"]
OPEN_FILES = 8  # dates one writing task keeps open before it sorts (runtime/storage.write_table)
# written without dictionary encoding: their values hardly repeat (runtime/storage.write_table)
UNIQUE_COLUMNS = ["event_time", "rcf_score", "logistic_score", "risk"]


def kept_columns(dataset: Dataset, available: Sequence[str]) -> list[str]:
    """The feature table's columns the scores table carries: ids, time, date, label and context."""
    ids = [*dataset.id_columns, "event_time", "date", "label"]
    return [c for c in ids + CONTEXT if c in available]


def output_columns(dataset: Dataset, available: Sequence[str]) -> list[str]:
    """The scores table's columns in order: the kept columns, then the scores."""
    return kept_columns(dataset, available) + [c for c in SCORES if c in available]


def plain_columns(dataset: Dataset, columns: Sequence[str]) -> list[str]:
    """The columns of the scores table written without dictionary encoding (their values hardly repeat)."""
    return [c for c in [dataset.event_id, *UNIQUE_COLUMNS] if c in columns]


def write_scores(scored_df: DataFrame, path: str, fmt: str, first, last, dataset: Dataset,
                 dates: Sequence | None = None, notify=None) -> None:
    """Replace the partitions of ``first..last`` (of ``dates`` only, when given: the dates of the
    range that have rows); other dates stay as they are.

    Delta: one transaction (``replaceWhere`` on those dates), so readers see the old rows of
    those dates or the new ones, and a write that dies before its commit changes nothing; a
    commit that loses a race with a concurrent run is made again (runtime/storage.py
    ``replace_where``; ``notify`` hears of it). Parquet: Spark's dynamic partition overwrite,
    which renames each partition's files into place after the tasks succeed: not atomic on S3,
    where a rename is a copy and a delete.
    """
    if fmt == "delta":
        where = (f"date IN ({', '.join(repr(str(d)) for d in dates)})" if dates is not None
                 else f"date >= '{first}' AND date <= '{last}'")
        replace_where(scored_df, path, where, partition_by=["date"], open_files=OPEN_FILES, notify=notify)
    else:
        # the feature table is partitioned by date, so a task's rows come in one or two dates
        write_table(scored_df, path, fmt, partition_by=["date"], open_files=OPEN_FILES,
                    plain_columns=plain_columns(dataset, scored_df.columns))


def report_written(spark: SparkSession, output: str, fmt: str, first, last,
                   dates: Sequence | None = None) -> dict[str, tuple[int, int]]:
    """Print events and anomalies per date of ``first..last`` (of ``dates`` only, when given) as
    they are in the scores table now; returns ``{date: (events, anomalies)}``.
    """
    written = between_dates(read_table(spark, output, fmt), first, last)
    if dates is not None:
        written = written.where(F.col("date").isin([str(d) for d in dates]))
    counts = {}
    for row in written.groupBy("date").agg(F.count(F.lit(1)).alias("rows"),
                                           F.sum(F.col("is_anomaly").cast("int")).alias("anomalies")) \
            .orderBy("date").collect():
        log("score", f"  {row['date']}: {row['rows']:,} events, {row['anomalies']:,} anomalies")
        counts[str(row["date"])] = (row["rows"], row["anomalies"] or 0)
    return counts
