"""The nightly run: score a window of dates of the feature table into the scores table.

Reading (scoring.reader): auto lets the Python workers read the feature files of a local table
themselves (pyarrow: a Parquet table's files, or the files of a Delta table's current snapshot
when no deletion vectors or column mapping stand between its files and its rows), and Spark read
anything else (S3, such Delta tables); arrow insists on the former, spark always reads through
Spark. Writing (scoring.writer): auto: where the Python workers read the features and the scores
table is a local Delta table, they write its files too (pyarrow) and the driver commits them in
one Delta transaction (delta-rs); spark: Spark writes them (Delta: ``replaceWhere``; Parquet:
dynamic partition overwrite). Every combination writes the same rows. One run is one Delta
transaction whichever writes it, retried when a concurrent run committed first.

A date asked for with no feature rows stops the run before anything is written (NothingToDo,
naming the empty dates); with ``allow_empty`` a range goes on with the dates that have rows.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

from pyspark.sql import DataFrame, SparkSession

from features.datasets import Dataset
from runtime.errors import InputError
from runtime.progress import RunSummary, log, step
from runtime.storage import (StorageError, between_dates, date_runs, dates_with_rows, delta_layout_problem,
                             delta_writable, local_table_path, needs_escaping, partition_files, read_table,
                             rows_per_date)
from scoring.table import SCORES, kept_columns, output_columns, plain_columns, report_written, write_scores


def score_window(dates: Sequence[dt.date], *, date: dt.date | None = None, first: dt.date | None = None,
                 last: dt.date | None = None, last_days: int | None = None) -> tuple[dt.date, dt.date]:
    """(first, last) date to score from the options and the dates the feature table holds."""
    if not dates:
        raise InputError("the feature table is empty: run the features job first")
    dates = sorted(dates)
    if last_days:
        return dates[max(0, len(dates) - last_days)], dates[-1]
    if date and (first or last):
        raise InputError("give --date or --from/--to, not both")
    if date:
        return date, date
    if first or last:
        first, last = first or dates[0], last or dates[-1]
        if last < first:
            raise InputError(f"--to {last} is before --from {first}")
        return first, last
    return dates[-1], dates[-1]


def one_machine_problem(spark) -> str | None:
    """Why the Python workers must not read or write the tables' files by their local paths, or
    None when they may: under a ``local`` master the driver and the executors are one JVM on one
    disk; under any other (a standalone cluster, YARN) an executor may run on another machine,
    where a local path names nothing, and files it wrote there are not on the driver's disk for
    the commit.
    """
    master = spark.sparkContext.master
    if master.startswith("local"):
        return None
    return f"master {master}: executors may not share the driver's disk"


def window_files(spark, table, source, fmt, reader, first, last):
    """(the feature files of ``first..last`` for the Python workers to read, None) or (None, why
    Spark reads them instead): scoring.reader spark; or auto on a table they cannot read (not
    local, not partitioned by date, a Delta table with deletion vectors or column mapping) or
    executors that may not share the driver's disk. ``table`` is the whole table as Spark reads
    it: of a Delta table, its files are those of the snapshot Spark reads now.
    """
    if reader == "spark":
        return None, "scoring.reader spark"
    files = partition_files(table, "date") if fmt in ("parquet", "delta") else None
    problem = delta_layout_problem(spark, source) if files is not None and fmt == "delta" else None
    if files is None:
        problem = f"{source} is not a local {fmt} table partitioned by date"
    problem = problem or one_machine_problem(spark)
    if problem:
        if reader == "arrow":
            raise InputError(f"scoring.reader arrow needs a local feature table partitioned by date, read on the "
                             f"driver's machine (storage.format {fmt}; {problem}); use auto or spark")
        return None, problem
    return [(path, day) for path, day in files if str(first) <= day <= str(last)], None


def python_writes(spark, writer, files, fmt, output):
    """Whether the Python workers write the scores files themselves (scoring.writer auto): they
    read the features (``files``), and the scores table is a local Delta table (on the file
    system Spark qualifies ``output`` to; new, or one delta-rs can commit to: partitioned by
    date, no table features) in a codec pyarrow has, partitioned by plain values.
    """
    from scoring.files import arrow_codec

    if not (writer == "auto" and files is not None and fmt == "delta" and arrow_codec(spark) is not None
            and not any(needs_escaping(value) for _, value in files)):
        return False
    root = local_table_path(spark, output)
    return root is not None and delta_writable(root, "date") is None


@dataclass(frozen=True)
class ScoreWindow:
    """The dates one run scores and the feature rows it reads."""

    source: str                     # where the feature table is
    table: DataFrame                # the whole feature table
    features_df: DataFrame          # its rows of first..last
    first: dt.date
    last: dt.date
    dates: list[dt.date]            # the dates of first..last that have feature rows: the ones scored
    rows_in: int                    # feature rows of those dates
    empty: list[dt.date]            # dates of first..last without feature rows (only with allow_empty)


def read_window(spark: SparkSession, source: str, fmt: str, *, allow_empty: bool = False, **window) -> ScoreWindow:
    """The :class:`ScoreWindow` of the window options of ``score_window`` over the feature table ``source``.

    NothingToDo (nothing read or written yet) names the dates of the window without feature rows:
    every date of it, or some of them unless ``allow_empty``.
    """
    try:
        table = read_table(spark, source, fmt)
    except StorageError as exc:
        raise InputError(str(exc)) from None
    rows = rows_per_date(table)
    first, last = score_window(list(rows), **window)
    dates, empty = dates_with_rows(rows, first, last, what=f"feature rows in {source}", allow_empty=allow_empty)
    return ScoreWindow(source, table, between_dates(table, first, last), first, last, dates,
                       sum(rows[d] for d in dates), empty)


def score_nightly(spark: SparkSession, dataset: Dataset, *, window: ScoreWindow, output: str,
                  fmt: str, models_root: str, scoring) -> RunSummary:
    """Score the feature rows of ``window`` with the champions under ``models_root`` and replace
    those dates of the scores table ``output``; what was read, written and flagged.
    """
    from scoring import files, spark as spark_frames
    from scoring.champions import load_champions
    from scoring.plan import ScoringError, scoring_options

    try:
        champions = load_champions(models_root, dataset.name)
    except ScoringError as exc:
        raise InputError(str(exc)) from None
    table, features_df, first, last = window.table, window.features_df, window.first, window.last
    if window.empty:
        log("score", f"no feature rows on {date_runs(window.empty)}: those dates are skipped (--allow-empty)")
    files_read, spark_reads = window_files(spark, table, window.source, fmt, scoring["reader"], first, last)
    log("score", f"{dataset.name} {first}..{last} with rcf {champions.rcf_version}, logistic {champions.logistic_version}"
                 + (f" ({len(files_read)} files read by the Python workers)" if files_read is not None
                    else f" (read by Spark: {spark_reads})"))
    options = dict(scoring_options(scoring), keep=kept_columns(dataset, features_df.columns))
    if python_writes(spark, scoring["writer"], files_read, fmt, output):
        columns = output_columns(dataset, [*options["keep"], *SCORES])
        try:
            with step("score", f"scoring and writing to {output} (written by the Python workers)"):
                files.write_scored_files(spark, files_read, champions, output, table_schema=table.schema,
                                         columns=columns, plain_columns=plain_columns(dataset, columns),
                                         values=[str(d) for d in window.dates], **options,
                                         notify=lambda line: log("score", line))
        except ScoringError as exc:
            raise InputError(str(exc)) from None
    else:
        try:
            if files_read is not None:
                scored = files.score_parquet_files(spark, files_read, champions, table_schema=table.schema, **options)
            else:
                scored = spark_frames.score_events(features_df, champions, **options)
        except ScoringError as exc:
            raise InputError(str(exc)) from None
        scored = scored.select(*output_columns(dataset, scored.columns))
        with step("score", f"scoring and writing to {output}"):
            write_scores(scored, output, fmt, first, last, dataset, dates=window.dates,
                         notify=lambda line: log("score", line))
    written = report_written(spark, output, fmt, first, last, dates=window.dates)
    return RunSummary("score", dataset=dataset.name, dates=[str(d) for d in window.dates], rows_in=window.rows_in,
                      rows_out=sum(rows for rows, _ in written.values()),
                      alerts=sum(anomalies for _, anomalies in written.values()),
                      versions={"rcf": champions.rcf_version, "logistic": champions.logistic_version},
                      extra={"empty_dates": date_runs(window.empty)} if window.empty else {})
