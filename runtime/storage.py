"""Reading and writing tables on local paths or s3a:// URIs (Parquet, Delta, CSV, JSON lines)."""
from __future__ import annotations

import contextlib
import datetime as dt
from typing import Mapping, Sequence
from urllib.parse import unquote

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

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


#: How an input's format is told from its name when ``schema.<dataset>.format`` is "auto"
#: (a compression suffix such as .gz is looked past).
INPUT_SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet"}
_COMPRESSION = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst")


def _suffix_format(name: str) -> str | None:
    name = name.lower().rstrip("/")
    for suffix in _COMPRESSION:
        if name.endswith(suffix) and not name.endswith(".parquet" + suffix):
            name = name[: -len(suffix)]
    return next((fmt for suffix, fmt in INPUT_SUFFIXES.items() if name.endswith(suffix)), None)


def input_format(path: str, configured: str = "auto") -> str:
    """The format to read ``path`` in: ``configured`` unless it is "auto"; else the path's
    extension (.csv; .json, .jsonl, .ndjson: JSON lines; .parquet), else for a folder a Delta
    table (``_delta_log``) or the extension its data files share. StorageError names the path
    when none of these tells.
    """
    from runtime import fs

    if configured != "auto":
        return configured
    fmt = _suffix_format(path)
    if fmt:
        return fmt
    try:
        if fs.exists(fs.join(path, "_delta_log")):
            return "delta"
        names = [f.rsplit("/", 1)[-1] for f in fs.list_files(path, recursive=True)]
    except Exception as exc:  # an unreachable store: say so rather than guess
        raise StorageError(f"cannot tell the format of {path}: {first_line(exc)}") from None
    found = {_suffix_format(n) for n in names if not n.startswith(("_", "."))} - {None}
    if len(found) == 1:
        return found.pop()
    what = f"its files are {', '.join(sorted(found))}" if found else "its name and files have no known extension"
    raise StorageError(f"cannot tell the format of {path} ({what}): name it .csv, .json/.jsonl or .parquet, "
                       "or set schema.<dataset>.format (parquet, csv, json or delta)")


#: Columns :func:`read_strict` adds to a CSV or JSON input: the raw line of a record that could
#: not be read as one, the reason why (ingest/validation.py quarantines the row with exactly that
#: reason) and the file each row came from (kept in the quarantine).
CORRUPT = "_corrupt_record"
PROBLEM = "_problem"
SOURCE_FILE = "_source_file"
_NO_NULL = "\u0000\u0001"   # a null marker no field holds: empty fields stay "", missing ones null


def _byte_lines(encoding: str) -> bool:
    """Whether lines of text in ``encoding`` end at a newline byte (ASCII-compatible encodings)."""
    import codecs

    try:
        return codecs.lookup(encoding).encode("\n")[0] == b"\n"
    except LookupError:
        return True   # a Java-only name: Spark says whether it knows it


def read_strict(spark: SparkSession, path: str, fmt: str, *, encoding: str = "UTF-8") -> DataFrame:
    """A user's raw input, read so that no value is silently changed.

    CSV: every column as text. JSON lines: the types Spark infers (a value of another type in
    some line makes that line unreadable, not null). In both, each line's bytes are decoded in
    ``encoding`` and a row that cannot be read exactly gets a reason in ``_problem`` (and its
    line in ``_corrupt_record``): bytes that are not valid ``encoding`` (never replaced by
    U+FFFD, which would make two distinct ids equal), more or fewer fields than the header
    (CSV), a line that is not a JSON object of the inferred types (JSON). ``_source_file`` names
    the file. Parquet: every file's footer is read first, so a corrupt file is named here.

    StorageError names the input when it cannot be read, has no header (an empty CSV) or has no
    rows (a header only, empty files).
    """
    if fmt not in RAW_FORMATS:
        raise StorageError(f"unknown input format {fmt!r} for {path} (use one of {', '.join(RAW_FORMATS)})")
    try:
        if fmt in ("csv", "json"):
            df = _read_lines(spark, path, fmt, encoding)
        else:
            if fmt == "parquet":
                # mergeSchema reads every file's footer: a corrupt file fails here, by name
                spark.read.option("mergeSchema", "true").parquet(path).schema  # noqa: B018
            df = spark.read.format(fmt).load(path)
        empty = not df.limit(1).count()
    except StorageError:
        raise
    except Exception as exc:  # AnalysisException, or a py4j error from a corrupt file
        raise StorageError(f"cannot read {fmt} input {path}: {failure_text(exc)}") from None
    if empty:
        what = f"a header only ({', '.join(df.columns)})" if fmt == "csv" else "no records"
        raise StorageError(f"{fmt} input {path} has no rows: {what}")
    return df


def _read_lines(spark: SparkSession, path: str, fmt: str, encoding: str) -> DataFrame:
    """CSV or JSON lines, one row per non-blank line, with the columns :func:`read_strict` describes."""
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    if fmt == "csv":
        header = spark.read.option("header", "true").option("inferSchema", "false").option("encoding", encoding)
        columns = header.csv(path).columns
        if not columns:
            raise StorageError(f"csv input {path} is empty: no header line")
    else:
        inferred = spark.read.option("encoding", encoding).json(path).schema
    if not _byte_lines(encoding):
        # UTF-16/32: Spark's own reader decodes (undecodable bytes cannot be told apart there)
        reader = spark.read.options(**options, encoding=encoding)
        if fmt == "csv":
            schema = ", ".join(f"{_ddl_name(c)} STRING" for c in [*columns, CORRUPT])
            df = reader.option("header", "true").schema(schema).csv(path)
        else:
            df = reader.json(path)
        if CORRUPT not in df.columns:
            df = df.withColumn(CORRUPT, F.lit(None).cast("string"))
        reason = "unreadable CSV row (field count)" if fmt == "csv" else "unparseable JSON record"
        return df.select("*", F.when(F.col(CORRUPT).isNotNull(), F.lit(reason)).alias(PROBLEM),
                         F.col("_metadata.file_path").alias(SOURCE_FILE))

    lines = spark.read.text(path).select(F.col("value").cast("binary").alias("_bytes"),
                                         F.col("_metadata.file_path").alias(SOURCE_FILE))
    if fmt == "csv":
        # Spark's CSV reader skips each file's header line likewise (the lines equal to the header)
        first = lines.select("_bytes").limit(1).collect()
        if first:
            lines = lines.where(F.col("_bytes") != F.lit(bytes(first[0][0])))
    text = F.decode(F.col("_bytes"), encoding)
    lines = lines.select(text.alias("_line"), (F.encode(text, encoding) != F.col("_bytes")).alias("_undecodable"),
                         SOURCE_FILE)
    lines = lines.where(F.trim("_line") != "")
    undecodable = F.lit(f"undecodable bytes (not valid {encoding})")
    if fmt == "csv":
        ddl = ", ".join(f"{_ddl_name(c)} STRING" for c in columns)
        parsed = F.from_csv("_line", f"{ddl}, {CORRUPT} STRING", options)
        # only for rows that failed: the fields parsed with one column more tell too many from too few
        wide = F.from_csv("_line", f"{ddl}, `_one_more` STRING", {"nullValue": _NO_NULL})
        bad_count = F.when(wide["_one_more"].isNotNull(), F.lit(f"too many fields (the header has {len(columns)})")) \
            .otherwise(F.lit(f"too few fields (the header has {len(columns)})"))
        names = columns
    else:
        fields = [f for f in inferred.fields if f.name != CORRUPT]
        schema = T.StructType([*fields, T.StructField(CORRUPT, T.StringType())])
        parsed = F.from_json("_line", schema, options)
        bad_count = F.lit("unparseable JSON record (not a JSON object with the types of the other lines)")
        names = [f.name for f in fields]
    # parsed once per line (a separate projection: the fields below read the one struct)
    lines = lines.select("*", parsed.alias("_parsed"))
    corrupt = F.col(f"_parsed.{CORRUPT}").isNotNull()
    problem = F.when(F.col("_undecodable"), undecodable).when(corrupt, bad_count)
    return lines.select(*[F.col("_parsed")[n].alias(n) for n in names],
                        F.when(corrupt | F.col("_undecodable"), F.col("_line")).alias(CORRUPT),
                        problem.alias(PROBLEM), SOURCE_FILE)


def _ddl_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def failure_text(exc: BaseException) -> str:
    """The line of a read failure that names the file (Spark's "Could not read footer for file"
    and "Encountered error while reading file"), else its first line.
    """
    import re

    text = str(exc)
    for pattern in (r"[^\n]*(?:reading file|footer for file|for file)[^\n]*", r"[^\n]*(?:file:|s3a?://)[^\n]*"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip()[:500]
    return first_line(exc)


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
    with unsorted_writes(df, open_files if partition_by else 0):
        writer.save(path)


@contextlib.contextmanager
def unsorted_writes(df: DataFrame, open_files: int):
    """While in it, partitioned writes of ``df``'s session do not sort their rows by partition
    first when ``open_files`` > 0 (:func:`write_table`'s ``open_files``); the session's settings
    are put back after.
    """
    if open_files <= 0:
        yield
        return
    conf = df.sparkSession.conf
    # Spark >= 3.4 plans a sort by the partition columns into every partitioned write (and Delta's
    # writer sorts likewise); without it, FileFormatWriter uses up to
    # maxConcurrentOutputFileWriters open files instead.
    saved = {key: conf.get(key, None) for key in (_PLANNED_WRITE, _OPEN_FILES)}
    conf.set(_PLANNED_WRITE, "false")
    conf.set(_OPEN_FILES, str(int(open_files)))
    try:
        yield
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


# Delta's commit conflicts (io.delta.exceptions.*): another writer committed first; a
# replaceWhere is safe to run again on the new snapshot (ProtocolChanged: two writers creating
# one table)
DELTA_CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
                   "ConcurrentWriteException", "MetadataChangedException", "ProtocolChangedException",
                   "DeltaConcurrentModificationException")
COMMIT_RETRIES = 4  # commits retried after a conflict with a concurrent writer, backing off 1, 2, 4, 8 s


def delta_conflict(exc: BaseException) -> str | None:
    """The name of the Delta commit conflict ``exc`` is (Spark's ``io.delta.exceptions``, delta-rs's
    CommitFailedError), or None for any other error.
    """
    if type(exc).__name__ == "CommitFailedError":
        return "CommitFailedError"
    text = f"{type(exc).__name__}: {exc}"
    return next((name for name in DELTA_CONFLICTS if name in text), None)


def replace_where(df: DataFrame, path: str, where: str, *, partition_by: Sequence[str] = (), open_files: int = 0,
                  merge_schema: bool = False, retries: int = COMMIT_RETRIES, notify=None) -> None:
    """Replace the rows of the Delta table ``path`` that match ``where`` (SQL) by ``df``'s, in one
    Delta transaction (``replaceWhere``): readers see the old rows or the new ones, never a mix,
    and a write that dies before its commit leaves the table as it was.

    A commit that loses a race with a concurrent writer (Delta's ConcurrentAppendException and
    its kin) is run again on the new snapshot, up to ``retries`` times (backing off 1, 2, 4, ...
    s; ``notify``, a function of one line, hears of each), then the conflict is raised: replacing
    the same rows again is safe, and so the two runs commit one after the other. Running again
    recomputes ``df``. Local tables commit with an atomic put-if-absent; on S3 only with the
    DynamoDB log store (README "Nightly scoring"). ``open_files``: as :func:`write_table`'s.
    The table is created when missing; every row of ``df`` must match ``where`` (Delta refuses
    the write otherwise); ``merge_schema``: columns of ``df`` the table lacks are added to it.
    """
    import time

    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", where)
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    for attempt in range(retries + 1):
        try:
            with unsorted_writes(df, open_files if partition_by else 0):
                writer.save(path)
            return
        except Exception as exc:
            conflict = delta_conflict(exc)
            if conflict is None or attempt == retries:
                raise
            if notify is not None:
                notify(f"{path}: {conflict} (a concurrent writer committed first); writing again "
                       f"({attempt + 1} of {retries})")
            time.sleep(2 ** attempt)


def delta_layout_problem(spark: SparkSession, path: str) -> str | None:
    """Why the Parquet files of the Delta table ``path`` do not hold its rows as they are, or
    None when they do: deletion vectors (rows deleted without rewriting a file) and column
    mapping (physical column names that are not the table's) are table features a plain Parquet
    reader must not read past.
    """
    try:
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    except AnalysisException as exc:
        return f"cannot describe {path}: {first_line(exc)}"
    features = set(detail["tableFeatures"] or []) if "tableFeatures" in detail else set()
    properties = detail["properties"] or {}
    if "deletionVectors" in features or str(properties.get("delta.enableDeletionVectors", "")).lower() == "true":
        return f"{path} has deletion vectors"
    if "columnMapping" in features or properties.get("delta.columnMapping.mode", "none") != "none":
        return f"{path} uses column mapping"
    return None


def delta_writable(path: str, column: str) -> str | None:
    """Why files written outside Spark cannot be committed to the local Delta table ``path``
    partitioned by ``column`` with :func:`commit_partitions`, or None when they can (a table
    that does not exist yet is created).
    """
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(path):
        return None
    table = DeltaTable(path)
    partitions = table.metadata().partition_columns
    if list(partitions) != [column]:
        return f"{path} is partitioned by {', '.join(partitions) or 'nothing'}, not {column}"
    protocol = table.protocol()
    if protocol.min_reader_version > 1 or protocol.min_writer_version > 2:
        return (f"{path} needs Delta reader {protocol.min_reader_version} / writer {protocol.min_writer_version} "
                "(table features)")
    return None


def commit_partitions(path: str, column: str, values: Sequence[str], files: Sequence[tuple[str, str, int, int]],
                      schema, *, retries: int = COMMIT_RETRIES, notify=None) -> None:
    """Make ``files`` the whole of the partitions ``values`` of ``column`` in the local Delta
    table ``path``, in one Delta transaction (delta-rs): the ``replaceWhere`` of Spark's writer,
    for Parquet files written outside Spark (scoring/files.py ``write_scored_files``). The
    table's other partitions stay as they are; a table that does not exist yet is created
    (partitioned by ``column``, with the pyarrow ``schema``, which names every column).

    ``files``: ``(path relative to the table, value of column, bytes, rows)``, already written
    under the table's folder, where readers do not see them: a Delta reader reads the files the
    log names. Until this commit nothing changed for readers; a run that dies before it leaves
    the previous version as it was (its files stay unreferenced until VACUUM removes them).
    Readers then see the old partitions or all the new ones, never a mix. A commit that loses a
    race with a concurrent writer is made again on the new snapshot, up to ``retries`` times
    (the files stay valid: they replace the same partitions), then :class:`StorageError`.
    """
    import json
    import os
    import time

    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError, DeltaError
    from deltalake.transaction import AddAction, create_table_with_add_actions

    adds = []
    for relative, value, size, rows in files:
        modified = int(os.path.getmtime(os.path.join(path, relative)) * 1000)
        adds.append(AddAction(relative, int(size), {column: str(value)}, modified, True,
                              json.dumps({"numRecords": int(rows)})))
    ours = Schema.from_arrow(schema)
    for attempt in range(retries + 1):
        creating = not DeltaTable.is_deltatable(path)
        try:
            if creating:
                create_table_with_add_actions(path, ours, adds, mode="error", partition_by=[column])
                return
            table = DeltaTable(path)
            problem = delta_writable(path, column) or _schema_difference(table.schema(), ours)
            if problem:
                raise StorageError(f"cannot commit the new files to {path}: {problem}")
            # no rebasing inside delta-rs: its conflict check does not take the partition filter
            # as what the transaction read, so a concurrent add to a partition that was empty here
            # would survive our overwrite (two runs' rows side by side). Any concurrent commit
            # fails this one instead, and the loop computes the removes again on the new snapshot.
            table.create_write_transaction(adds, mode="overwrite", schema=table.schema(), partition_by=[column],
                                           partition_filters=[(column, "in", [str(v) for v in values])],
                                           commit_properties=CommitProperties(max_commit_retries=0))
            return
        except DeltaError as exc:
            # lost to a concurrent commit of the same version (creating a table that another
            # writer has just created fails likewise): commit again on the new snapshot
            lost = isinstance(exc, CommitFailedError) or (creating and DeltaTable.is_deltatable(path))
            if not lost or attempt == retries:
                raise StorageError(f"cannot commit the new files to {path}: {first_line(exc)}") from exc
            if notify is not None:
                notify(f"{path}: a concurrent writer committed first ({type(exc).__name__}); committing again "
                       f"on its version ({attempt + 1} of {retries})")
            time.sleep(2 ** attempt)


def _schema_difference(table_schema, ours) -> str | None:
    """What differs between two Delta schemas (names and types; nullability aside), or None."""
    import json

    def fields(schema):
        def plain(kind):
            if isinstance(kind, dict):
                return {k: plain(v) for k, v in kind.items() if k not in ("containsNull", "valueContainsNull",
                                                                          "nullable", "metadata")}
            return [plain(v) for v in kind] if isinstance(kind, list) else kind
        return {f["name"]: plain(f["type"]) for f in json.loads(schema.to_json())["fields"]}

    have, want = fields(table_schema), fields(ours)
    if have == want:
        return None
    changed = [name for name in {**have, **want} if have.get(name) != want.get(name)]
    return (f"its columns differ from the scores' in {', '.join(changed)} "
            f"(table: {[f'{n} {have.get(n)}' for n in changed]}; new: {[f'{n} {want.get(n)}' for n in changed]})")


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
