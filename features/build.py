"""The feature-table run: read raw events, validate them, quarantine the rejects, build, write.

Every row that fails validation (ingest/validation.py: unparseable time, missing id, non-numeric /
negative / NaN / infinite values, duplicate ids) goes to the quarantine table with its reason;
the log shows rows in = valid + quarantined. The point-in-time features of the valid rows
(the data set's ``feature_builder``, features/datasets.py) are written partitioned by ``date``.
Given a first and last date, only those dates are rebuilt (the history before them is read as
far back as the features look); other dates of the table stay as they are.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable, Mapping, Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.datasets import dataset as dataset_named
from ingest.validation import Validated, count_outcome
from runtime.errors import InputError
from runtime.progress import log, step
from runtime.storage import StorageError, read_raw, write_table


def quarantine_rejects(validated: Validated, source: str, path: str) -> None:
    """Count the outcome of validation, write the rejected rows to ``path`` and log the top reasons."""
    with step("features", f"validating {source}"):
        counts = count_outcome(validated)
    log("features", f"rows in {counts['rows_in']:,} = valid {counts['valid']:,} + quarantined {counts['quarantined']:,}")
    if not counts["quarantined"]:
        return
    with step("features", f"writing {counts['quarantined']:,} quarantined rows to {path}"):
        write_table(validated.quarantine, path, "parquet")
    for row in validated.quarantine.groupBy("reason").count().orderBy(F.desc("count")).limit(10).collect():
        log("features", f"  quarantined {row['count']:>9,}  {row['reason']}")


def features_of_dates(valid_df: DataFrame, transform: Callable[[DataFrame], DataFrame], history_days: int,
                      first: Optional[dt.date], last: Optional[dt.date]) -> DataFrame:
    """``transform`` of the valid rows; with ``first``..``last``, the feature rows of those dates only."""
    if first is None:
        return transform(valid_df)
    since = first - dt.timedelta(days=history_days)
    until = last + dt.timedelta(days=1)
    window = valid_df.where((F.col("event_time") >= F.lit(str(since)).cast("timestamp"))
                            & (F.col("event_time") < F.lit(str(until)).cast("timestamp")))
    return transform(window).where(F.col("date").between(F.lit(str(first)).cast("date"), F.lit(str(last)).cast("date")))


def build_feature_table(spark: SparkSession, config: Mapping, *, source: str, output: str, quarantine: str,
                        first: Optional[dt.date] = None, last: Optional[dt.date] = None) -> None:
    """Read ``source``, quarantine the rejects, write the features of ``config["dataset"]`` to ``output``.

    ``config`` is the whole config because the data set's features depend on its ``features``
    and ``schema`` sections. ``first``/``last``: the dates to rebuild (None: every date).
    """
    dataset = dataset_named(config["dataset"])
    schema_conf = config["schema"][dataset.name]
    try:
        validated = dataset.validate(read_raw(spark, source, schema_conf["format"]), schema_conf)
    except (StorageError, ValueError) as exc:
        raise InputError(str(exc)) from None
    validated.checked.persist(StorageLevel.MEMORY_AND_DISK)
    quarantine_rejects(validated, source, quarantine)
    transform, history_days = dataset.feature_builder(config)
    features_df = features_of_dates(validated.valid, transform, history_days, first, last)
    what = f"dates {first}..{last}" if first else "every date"
    with step("features", f"writing features ({what}) to {output}"):
        write_table(features_df, output, config["storage"]["format"], partition_by=["date"])
    validated.checked.unpersist()
