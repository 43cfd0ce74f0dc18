"""Reading and writing tables on local paths or s3a:// URIs (Parquet, Delta, CSV, JSON lines)."""
from __future__ import annotations

import datetime as dt
from typing import Mapping, Sequence
from urllib.parse import unquote

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from runtime.errors import NothingToDo

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


def between_dates(df: DataFrame, first, last, column: str = "date") -> DataFrame:
    """The rows of ``df`` whose ``column`` is in ``first..last`` (dates or yyyy-MM-dd, inclusive;
    on a table partitioned by ``column`` Spark reads only those partitions).
    """
    return df.where(F.col(column).between(F.lit(str(first)).cast("date"), F.lit(str(last)).cast("date")))


def read_table(spark: SparkSession, path: str, fmt: str = "parquet") -> DataFrame:
    """A table this project wrote (Parquet or Delta)."""
    try:
        return spark.read.format(fmt).load(path)
    except AnalysisException as exc:
        raise StorageError(f"cannot read {fmt} table {path}: {first_line(exc)}") from None


def rows_per_date(df: DataFrame, column: str = "date") -> dict[dt.date, int]:
    """Rows of ``df`` per date of its date column ``column`` (one aggregation; on a table
    partitioned by ``column`` Spark reads the file footers only).
    """
    return {row[0]: row[1] for row in df.groupBy(column).count().collect() if row[0] is not None}


def date_runs(dates: Sequence[dt.date]) -> str:
    """``dates`` named compactly, consecutive ones as a range: "2026-01-01..2026-01-03, 2026-01-07"."""
    runs: list[list[dt.date]] = []
    for day in sorted(dates):
        if runs and day - runs[-1][-1] == dt.timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}" for run in runs)


def dates_with_rows(rows: Mapping[dt.date, int], first: dt.date, last: dt.date, *, what: str,
                    allow_empty: bool) -> tuple[list[dt.date], list[dt.date]]:
    """(dates of ``first..last`` that have rows, those that have none); ``rows``: rows per date,
    e.g. :func:`rows_per_date`.

    Raises :class:`NothingToDo` naming the empty dates when no date has rows, or when some have
    none and ``allow_empty`` is false (the caller then writes nothing); ``what`` says what was
    looked for, e.g. "feature rows in s3a://lake/features".
    """
    asked = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    full = [day for day in asked if rows.get(day)]
    empty = [day for day in asked if not rows.get(day)]
    if not full:
        raise NothingToDo(f"no {what} on {date_runs(empty)}", empty)
    if empty and not allow_empty:
        raise NothingToDo(f"no {what} on {len(empty)} of the {len(asked)} dates asked: {date_runs(empty)}; "
                          f"nothing was written (--allow-empty goes on with the {len(full)} dates that have rows)",
                          empty)
    return full, empty


def partition_files(df: DataFrame, column: str) -> list[tuple[str, str]] | None:
    """``(file, value of column)`` of each file of a table partitioned by ``column`` (Hive layout).

    None when some file is not on the local file system or not under a ``column=value`` folder:
    the Python workers read the files themselves (scoring/files.py ``score_parquet_files``),
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


def local_table_path(spark: SparkSession, path: str) -> str | None:
    """The absolute local file system path of the table at ``path``, or None when it is not on
    this machine's file system: qualified as Spark qualifies it (a path without a scheme is on
    ``fs.defaultFS``, the working directory's file system only when that is ``file:``).
    """
    if "://" in path and not path.startswith("file:"):
        return None  # s3a://, hdfs://, ...: never local, and loading their file system may fail
    try:
        hadoop_path = spark._jvm.org.apache.hadoop.fs.Path(path)
        uri = hadoop_path.getFileSystem(spark._jsc.hadoopConfiguration()).makeQualified(hadoop_path).toUri()
    except Exception:  # py4j errors: a path Hadoop cannot parse is not ours to write by hand
        return None
    return str(uri.getPath()) if uri.getScheme() == "file" else None


STAGING_PREFIX = "_scoring-"  # staging folders of files written outside Spark; readers skip "_" names
STALE_STAGING_SECONDS = 6 * 3600  # a staging folder this old belongs to a run that died


def replace_partitions(root: str, column: str, staged: dict[str, list[str]], staging: str) -> None:
    """Make the files ``staged[value]`` the whole ``column=value`` partition of the local table
    at ``root`` (a plain path), for each value; the table's other partitions stay as they are:
    the dynamic partition overwrite Spark's writer does, for files written outside Spark
    (scoring/files.py ``write_scored_files``).

    ``staging`` is a folder directly inside ``root`` named ``_scoring-...`` (Spark and pyarrow
    skip it when they read the table) that holds the staged files; it is removed at the end.
    Each partition is swapped in with one atomic exchange of two folders (Linux
    ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, with a moment where the partition is
    missing), so a reader sees a partition's old files or all its new ones. A failure undoes
    the swaps already made, so the table is as it was; if even that fails, the staging folder
    stays with the previous partitions in it (the error names it) and :func:`sweep_staging`
    puts back, on the next run, a partition left missing between two renames. A driver killed
    between the swaps of two dates leaves each date whole, some old and some new, as Spark's
    own commit does: score the window again.
    """
    import os
    import shutil

    if os.path.dirname(os.path.normpath(staging)) != os.path.normpath(root) or \
            not os.path.basename(staging).startswith(STAGING_PREFIX):
        raise StorageError(f"staging folder {staging} must be a '{STAGING_PREFIX}...' folder directly inside {root}")
    done: list[tuple[str, str | None, str]] = []  # (partition, where its previous folder is, staged folder)
    keep = False
    try:
        ready = {}
        for value, files in staged.items():
            folder = os.path.join(staging, "commit", partition_folder(column, value))
            os.makedirs(folder, exist_ok=True)
            for path in files:
                os.rename(path, os.path.join(folder, os.path.basename(path)))
            ready[value] = folder
        os.makedirs(os.path.join(staging, "old"), exist_ok=True)
        try:
            for value, folder in ready.items():
                final = os.path.join(root, partition_folder(column, value))
                previous = _swap_in(folder, final, os.path.join(staging, "old", partition_folder(column, value)))
                done.append((final, previous, folder))
        except BaseException:
            keep = not _undo(done)
            raise
        with open(os.path.join(root, "_SUCCESS"), "w"):
            pass
    except OSError as exc:
        kept = f"; the previous partitions are kept in {staging}" if keep else ""
        raise StorageError(f"cannot swap the new partitions into {root}: {exc}{kept}") from exc
    finally:
        if not keep:
            shutil.rmtree(staging, ignore_errors=True)


def _swap_in(new: str, final: str, old: str) -> str | None:
    """Make the folder ``new`` the folder ``final``; returns where the previous ``final`` is now
    (``new`` after an atomic exchange, else ``old``), or None when there was none.
    """
    import os

    if not os.path.exists(final):
        os.rename(new, final)
        return None
    if _exchange(new, final):
        return new
    os.rename(final, old)
    try:
        os.rename(new, final)
    except OSError:
        os.rename(old, final)
        raise
    return old


def _undo(done: list[tuple[str, str | None, str]]) -> bool:
    """Put back the previous partitions of ``done`` swaps, newest first; False if one could not be."""
    import os

    ok = True
    for final, previous, new in reversed(done):
        try:
            if previous is None:
                os.rename(final, new)  # the partition did not exist before: take it out again
            elif not _exchange(previous, final):
                os.rename(final, new)
                os.rename(previous, final)
        except OSError:
            ok = False
    return ok


def _exchange(a: str, b: str) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False
    where the C library, kernel or file system does not offer it.
    """
    import ctypes
    import errno
    import os

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def sweep_staging(root: str, column: str, max_age_s: float = STALE_STAGING_SECONDS) -> list[str]:
    """Clean up after runs that died mid-write on the local table at ``root``: a partition folder
    missing from ``root`` whose previous files sit in some ``_scoring-*/old`` is put back, and
    staging folders older than ``max_age_s`` are removed. Returns what it did, one line each.
    """
    import os
    import shutil
    import time

    done: list[str] = []
    if not os.path.isdir(root):
        return done
    for name in sorted(os.listdir(root)):
        staging = os.path.join(root, name)
        if not name.startswith(STAGING_PREFIX) or not os.path.isdir(staging):
            continue
        old = os.path.join(staging, "old")
        for folder in sorted(os.listdir(old)) if os.path.isdir(old) else []:
            if folder.startswith(f"{column}=") and not os.path.exists(os.path.join(root, folder)):
                os.rename(os.path.join(old, folder), os.path.join(root, folder))
                done.append(f"put back {folder} from {staging}")
        if time.time() - os.path.getmtime(staging) > max_age_s:
            shutil.rmtree(staging, ignore_errors=True)
            done.append(f"removed {staging}, left by a run that did not finish")
    return done


_PLAIN_VALUE = r"[0-9A-Za-z_.+-]+"


def needs_escaping(value: str) -> bool:
    """Whether a partition value needs escaping in a Hive-style path (dates and ids do not)."""
    import re

    return re.fullmatch(_PLAIN_VALUE, value) is None


def partition_folder(column: str, value: str) -> str:
    """``column=value``, for values that need no escaping in a Hive-style path (dates, ids)."""
    if needs_escaping(value):
        raise StorageError(f"partition value {value!r} of {column} needs escaping in a path; "
                           "write this table through Spark")
    return f"{column}={value}"
