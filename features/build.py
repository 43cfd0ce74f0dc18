"""The feature-table run: read raw events, validate them, quarantine the rejects, build, write.

Every row that fails validation (ingest/validation.py: unparseable time, missing id, non-numeric /
negative / NaN / infinite values, duplicate ids) goes to the quarantine table with its reason;
the log shows rows in = valid + quarantined. The point-in-time features of the valid rows
(the data set's ``feature_builder``, features/datasets.py) are written partitioned by ``date``.
Given a first and last date, only those dates are rebuilt (the history before them is read as
far back as the features look); other dates of the table stay as they are. A date of that range
without valid raw rows stops the run before anything is written (NothingToDo, naming the empty
dates); with ``allow_empty`` the dates that have rows are built.

Both tables are written in ``storage.format`` (Delta by default). The feature table's dates are
replaced by dynamic partition overwrite: one commit that replaces exactly the dates written.
The input is read strictly (``runtime.storage.read_strict``: no value coerced, undecodable bytes
and malformed lines quarantined by name, an empty input or a corrupt file an InputError naming it).
The quarantine holds the rejects of each input as its last run found them: every run validates
its whole input, and its rejects replace that input's earlier ones (rows whose ``input_path`` is
the input as given) and every reject dated on a date the run rebuilds (``event_date``; with
Parquet the whole quarantine is replaced), so running the features again never duplicates them
nor leaves a fixed file's old rejects behind. With a labels table (features/labels.py) the features use the late
labels known by each row's time, and the ``label`` column is each event's latest label.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable, Mapping, Optional, Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.datasets import dataset as dataset_named
from features.labels import read_labels, with_eventual_labels
from ingest.validation import EVENT_DATE, Validated, count_outcome
from runtime import fs
from runtime.errors import InputError
from runtime.delta import is_delta, sql_string
from runtime.progress import RunSummary, log, step
from runtime.storage import (StorageError, date_runs, dates_with_rows, failure_text, input_format, read_strict,
                             read_table, replace_where, rows_per_date, write_table)


def validation_outcome(validated: Validated, source: str) -> dict[str, int]:
    """Rows in, valid and quarantined (``ingest.validation.count_outcome``), logged."""
    with step("features", f"validating {source}"):
        counts = count_outcome(validated)
    log("features", f"rows in {counts['rows_in']:,} = valid {counts['valid']:,} + quarantined {counts['quarantined']:,}")
    return counts


INPUT_PATH = "input_path"   # quarantine column: the input a reject came from, as given


def quarantine_rejects(validated: Validated, quarantined: int, path: str, fmt: str, source: str,
                       dates: Sequence[dt.date] = ()) -> None:
    """Make the ``quarantined`` rejected rows of ``source`` its rows in the quarantine table at
    ``path`` and log the top reasons. Delta: in one commit, the rows of an earlier run over
    ``source`` and the rows of ``dates`` (the dates this run rebuilds, from whatever input) are
    replaced (other rows stay), so a re-run never leaves rejects of a rebuilt date behind;
    Parquet: the whole table is replaced. Nothing is written when there is nothing to quarantine
    and no table yet.
    """
    spark = validated.checked.sparkSession
    exists = is_delta(spark, path) if fmt == "delta" else fs.exists(path)
    if not quarantined and not exists:
        return
    rejects = validated.quarantine.withColumn(INPUT_PATH, F.lit(source))
    with step("features", f"writing {quarantined:,} quarantined rows to {path}"):
        if fmt == "delta":
            where = f"{INPUT_PATH} = {sql_string(source)}"
            # a table written before the quarantine had dates is matched by input only
            if dates and (not exists or EVENT_DATE in read_table(spark, path, "delta").columns):
                where += f" OR {EVENT_DATE} IN ({', '.join(f'DATE {sql_string(str(d))}' for d in sorted(dates))})"
            replace_where(rejects, path, where, merge_schema=True)
        else:
            write_table(rejects, path, fmt)
    if quarantined:
        for row in validated.quarantine.groupBy("reason").count().orderBy(F.desc("count")).limit(10).collect():
            log("features", f"  quarantined {row['count']:>9,}  {row['reason']}")


def in_dates(first: dt.date, last: dt.date, column=None):
    """The condition that the date ``column`` (default the ``date`` column) is in ``first..last`` (inclusive)."""
    return (F.col("date") if column is None else column).between(F.lit(str(first)).cast("date"), F.lit(str(last)).cast("date"))


def dates_to_build(valid_df: DataFrame, first: dt.date, last: dt.date, source: str,
                   allow_empty: bool) -> tuple[list[dt.date], list[dt.date]]:
    """(dates of ``first..last`` with valid raw rows, those without); NothingToDo names the empty
    ones (see ``runtime.storage.dates_with_rows``).
    """
    day = F.to_date("event_time")
    rows = rows_per_date(valid_df.where(in_dates(first, last, day)).select(day.alias("date")))
    return dates_with_rows(rows, first, last, what=f"valid raw rows in {source}", allow_empty=allow_empty)


def features_of_dates(valid_df: DataFrame, transform: Callable[[DataFrame], DataFrame], history_days: int,
                      first: Optional[dt.date], last: Optional[dt.date]) -> DataFrame:
    """``transform`` of the valid rows; with ``first``..``last``, the feature rows of those dates only."""
    if first is None:
        return transform(valid_df)
    since = first - dt.timedelta(days=history_days)
    until = last + dt.timedelta(days=1)
    window = valid_df.where((F.col("event_time") >= F.lit(str(since)).cast("timestamp"))
                            & (F.col("event_time") < F.lit(str(until)).cast("timestamp")))
    return transform(window).where(in_dates(first, last))


def late_labels(spark: SparkSession, path: Optional[str]):
    """The labels table at ``path`` (logged), or None when there is none."""
    labels_df = read_labels(spark, path) if path else None
    if labels_df is None:
        log("features", f"no labels table{f' at {path}' if path else ''}: the raw labels only")
    else:
        log("features", f"late labels from {path}: {labels_df.count():,}")
    return labels_df


def rows_written(df: DataFrame, dates: Optional[Sequence[dt.date]]) -> dict[dt.date, int]:
    """Rows per date of the feature table ``df`` now: of ``dates``, or of every date (None)."""
    return {day: n for day, n in rows_per_date(df).items() if dates is None or day in dates}


def build_feature_table(spark: SparkSession, config: Mapping, *, source: str, output: str, quarantine: str,
                        first: Optional[dt.date] = None, last: Optional[dt.date] = None,
                        allow_empty: bool = False, labels: Optional[str] = None) -> RunSummary:
    """Read ``source``, quarantine the rejects, write the features of ``config["dataset"]`` to ``output``.

    ``config`` is the whole config because the data set's features depend on its ``features``
    and ``schema`` sections. ``first``/``last``: the dates to rebuild (None: every date); a date
    of them without valid raw rows raises NothingToDo before anything is written, unless
    ``allow_empty`` (then the others are built). ``labels``: the labels table (none there, or
    None: the raw labels only). The summary: rows in (raw), rows out (feature rows of the dates
    built, as the table holds them now), quarantined.
    """
    dataset = dataset_named(config["dataset"])
    schema_conf = config["schema"][dataset.name]
    try:
        fmt = input_format(source, schema_conf["format"])
        raw_df = read_strict(spark, source, fmt, encoding=schema_conf["encoding"])
        validated = dataset.validate(raw_df, schema_conf)
    except (StorageError, ValueError) as exc:
        raise InputError(str(exc)) from None
    validated.checked.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        try:
            counts = validation_outcome(validated, source)
        except Exception as exc:  # a file that fails while its rows are read (a corrupt Parquet page)
            raise InputError(f"cannot read {fmt} input {source}: {failure_text(exc)}") from None
        dates, empty = dates_to_build(validated.valid, first, last, source, allow_empty) if first else (None, [])
        if empty:
            log("features", f"no valid raw rows on {date_runs(empty)}: those dates are skipped (--allow-empty)")
        fmt = config["storage"]["format"]
        rebuilt = dates if first else list(rows_per_date(validated.valid.select(F.to_date("event_time").alias("date"))))
        quarantine_rejects(validated, counts["quarantined"], quarantine, fmt, source, rebuilt)
        labels_df = late_labels(spark, labels)
        transform, history_days = dataset.feature_builder(config, labels_df)
        features_df = with_eventual_labels(features_of_dates(validated.valid, transform, history_days, first, last),
                                           labels_df, dataset.event_id)
        what = f"dates {first}..{last}" if first else "every date"
        with step("features", f"writing features ({what}) to {output}"):
            write_table(features_df, output, fmt, partition_by=["date"])
    finally:
        validated.checked.unpersist()
    written = rows_written(read_table(spark, output, config["storage"]["format"]), dates)
    return RunSummary("features", dataset=dataset.name, dates=[str(d) for d in sorted(written)],
                      rows_in=counts["rows_in"], rows_out=sum(written.values()),
                      extra={"quarantined": counts["quarantined"]}
                      | ({"empty_dates": date_runs(empty)} if empty else {}))
