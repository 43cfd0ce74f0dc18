"""Reading and writing tables on local paths or s3a:// URIs (Parquet, Delta, CSV, JSON lines)."""
from __future__ import annotations

from typing import Sequence
from urllib.parse import unquote

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

RAW_FORMATS = ("parquet", "csv", "json", "delta")
_PLANNED_WRITE = "spark.sql.optimizer.plannedWrite.enabled"
_OPEN_FILES = "spark.sql.maxConcurrentOutputFileWriters"


class StorageError(RuntimeError):
    """A location that cannot be read or written; the message names it."""


def read_raw(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    """A user's raw input. CSV columns stay text and unparseable JSON lines are kept in
    ``_corrupt_record``, so validation sees every row as it was.
    """
    if fmt not in RAW_FORMATS:
        raise StorageError(f"unknown input format {fmt!r} for {path} (use one of {', '.join(RAW_FORMATS)})")
    reader = spark.read
    if fmt == "csv":
        reader = reader.option("header", "true").option("inferSchema", "false").option("mode", "PERMISSIVE")
    elif fmt == "json":
        reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", "_corrupt_record")
    try:
        df = reader.format(fmt).load(path)
        df.schema  # noqa: B018 - forces Spark to open the files now, so a bad file is named here
    except Exception as exc:  # AnalysisException, or a py4j error from a corrupt file
        raise StorageError(f"cannot read {fmt} input {path}: {first_line(exc)}") from None
    return df


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_table(spark: SparkSession, path: str, fmt: str = "parquet") -> DataFrame:
    """A table this project wrote (Parquet or Delta)."""
    try:
        return spark.read.format(fmt).load(path)
    except AnalysisException as exc:
        raise StorageError(f"cannot read {fmt} table {path}: {first_line(exc)}") from None


def partition_files(df: DataFrame, column: str) -> list[tuple[str, str]] | None:
    """``(file, value of column)`` of each file of a table partitioned by ``column`` (Hive layout).

    None when some file is not on the local file system or not under a ``column=value`` folder:
    the Python workers read the files themselves (models/scoring.py ``score_parquet_files``),
    and they read local files only so far (on S3 the job reads through Spark).
    """
    out = []
    for uri in df.inputFiles():
        if not (uri.startswith("file:") or uri.startswith("/")):
            return None
        folders = uri.split("/")[:-1]
        values = [unquote(part.split("=", 1)[1]) for part in folders if part.startswith(f"{column}=")]
        if len(values) != 1:
            return None
        out.append((uri, values[0]))
    return sorted(out)


def write_table(df: DataFrame, path: str, fmt: str = "parquet", *, partition_by: Sequence[str] = (),
                mode: str = "overwrite", plain_columns: Sequence[str] = (), open_files: int = 0) -> None:
    """Write ``df``. With partitions and mode overwrite only the partitions present in ``df`` are
    replaced (dynamic partition overwrite), so rebuilding one date leaves the others alone.

    ``plain_columns`` (Parquet only): columns written without dictionary encoding, for columns
    whose values hardly repeat (ids, timestamps, scores): Parquet tries a dictionary for each
    column chunk and falls back to plain encoding when it grows too big, and for such columns that
    attempt costs writing time for nothing (about a quarter of the scores write, measured).

    ``open_files`` (> 0, with partitions): write without sorting the rows by partition first;
    each task keeps up to that many files open (one per partition value it meets) and sorts only
    the rest. For rows that arrive grouped by partition already (scores of a date-partitioned
    feature table); it saved a tenth of the JVM time of scoring 10M rows. Every open file buffers
    its row group in memory, so keep it small.
    """
    writer = df.write.format(fmt).mode(mode)
    if fmt == "csv":
        writer = writer.option("header", "true")
    if fmt == "parquet":
        for column in plain_columns:
            writer = writer.option(f"parquet.enable.dictionary#{column}", "false")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
        if fmt == "delta" and mode == "overwrite":
            writer = writer.option("partitionOverwriteMode", "dynamic")
    if not (partition_by and open_files > 0):
        writer.save(path)
        return
    conf = df.sparkSession.conf
    # Spark >= 3.4 plans a sort by the partition columns into every partitioned write; without
    # it, FileFormatWriter uses up to maxConcurrentOutputFileWriters open files instead.
    saved = {key: conf.get(key, None) for key in (_PLANNED_WRITE, _OPEN_FILES)}
    conf.set(_PLANNED_WRITE, "false")
    conf.set(_OPEN_FILES, str(int(open_files)))
    try:
        writer.save(path)
    finally:
        for key, value in saved.items():
            if value is None:
                conf.unset(key)
            else:
                conf.set(key, value)


def is_local(path: str) -> bool:
    """True for a path on this machine's file system (a plain path or a ``file:`` URI)."""
    return path.startswith("file:") or "://" not in path


def local_path(path: str) -> str:
    """``path`` without a ``file:`` scheme (``file:/x``, ``file:///x`` -> ``/x``)."""
    if path.startswith("file:"):
        path = path[len("file:"):]
        if path.startswith("//"):
            path = path[2:]
    return unquote(path)


def replace_partitions(table: str, column: str, staged: dict[str, list[str]], staging: str) -> None:
    """Make the files ``staged[value]`` the whole ``column=value`` partition of the local table
    ``table``, for each value; the table's other partitions stay as they are (the dynamic
    partition overwrite that Spark's writer does, for files written outside Spark: models/scoring.py
    ``write_scored_files``).

    ``staging`` is a folder inside ``table`` whose name starts with ``_`` (Spark and pyarrow skip
    it when they read the table) and holds the staged files; it is removed at the end, also when
    this fails. A partition is swapped by two renames: the old folder into ``staging``, the new
    one into its place, so a reader sees either the old files or all the new ones. A failure
    before the swaps leaves every partition as it was; one during them puts the old folder back.
    """
    import os
    import shutil

    root, staging = local_path(table), local_path(staging)
    if os.path.dirname(os.path.normpath(staging)) != os.path.normpath(root) or \
            not os.path.basename(staging).startswith("_"):
        raise StorageError(f"staging folder {staging} must be a '_' folder directly inside {root}")
    try:
        ready = {}
        for value, files in staged.items():
            folder = os.path.join(staging, "commit", partition_folder(column, value))
            os.makedirs(folder, exist_ok=True)
            for path in files:
                path = local_path(path)
                os.rename(path, os.path.join(folder, os.path.basename(path)))
            ready[value] = folder
        os.makedirs(os.path.join(staging, "old"), exist_ok=True)
        for value, folder in ready.items():
            final = os.path.join(root, partition_folder(column, value))
            old = os.path.join(staging, "old", partition_folder(column, value))
            if os.path.exists(final):
                os.rename(final, old)
            try:
                os.rename(folder, final)
            except OSError:
                if os.path.exists(old) and not os.path.exists(final):
                    os.rename(old, final)
                raise
        with open(os.path.join(root, "_SUCCESS"), "w"):
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def partition_folder(column: str, value: str) -> str:
    """``column=value``, for values that need no escaping in a Hive-style path (dates, ids)."""
    import re

    if not re.fullmatch(r"[0-9A-Za-z_.+-]+", value):
        raise StorageError(f"partition value {value!r} of {column} needs escaping in a path; "
                           "write this table through Spark")
    return f"{column}={value}"
