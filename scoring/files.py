"""The files adapter: the Python workers read a local feature table's Parquet files (and may
write the scores table's files) themselves; the JVM only hands out file names.

:func:`score_parquet_files` is the nightly job's faster way for a local feature table (Parquet,
or the files of a Delta table's snapshot): Spark hands the table's files to the Python workers,
which read them with pyarrow and score them with the scoring core (scoring/plan.py
``score_batch``); Spark writes what they return. :func:`write_scored_files` also leaves the
writing to them and commits their files to a Delta table in one transaction.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from scoring.champions import Champions
from scoring.plan import SCORE_COLUMNS, Columns, ScoringError, ScoringPlan, score_batch
from scoring.spark import OUT_FIELDS, arrow_floats, checked_keep, forest_of, output_batch, with_versions


def score_parquet_files(spark, files: Sequence[tuple[str, str]], champions: Champions, *, table_schema: T.StructType,
                        keep: Sequence[str], partition_col: str = "date", risk_method: str = "max",
                        anomaly_risk: float = 0.5, reasons: int = 3, rcf_attribution: str = "flagged",
                        batch_rows: int = 65_536) -> DataFrame:
    """``score_events`` of a Parquet table given as its files: the Python workers read them.

    ``files``: ``(path, partition value)`` per file (the value of ``partition_col``, which the
    files do not hold; runtime/storage.py ``partition_files``), local paths or ``file:`` URIs;
    ``table_schema`` the table's Spark schema. Spark tasks of about
    ``spark.sql.files.maxPartitionBytes`` of whole files each: a task's Python worker reads
    the columns the models and ``keep`` need with pyarrow, in batches of ``batch_rows``, scores
    them with the scoring core (scoring/plan.py ``score_batch``) and hands the kept columns and
    the scores to Spark, which writes them. The JVM never builds a row of the ~90 feature columns,
    which makes this the faster path (README "Benchmarks"). The result has
    scoring/spark.py ``score_events``'s columns in its order, and the same values (a test holds
    the two paths to each other). :func:`write_scored_files` also leaves the writing to them.
    """
    scorer = _parquet_scorer(spark, champions, table_schema, keep, partition_col, batch_rows,
                             dict(risk_method=risk_method, anomaly_risk=anomaly_risk, reasons=reasons,
                                  rcf_attribution=rcf_attribution))
    schema = T.StructType([table_schema[c] for c in scorer.kept] + OUT_FIELDS)
    return with_versions(_listing(spark, files).mapInArrow(scorer, schema), scorer.kept, champions)


def write_scored_files(spark, files: Sequence[tuple[str, str]], champions: Champions, table: str, *,
                       table_schema: T.StructType, keep: Sequence[str], columns: Sequence[str],
                       plain_columns: Sequence[str] = (), partition_col: str = "date",
                       values: Optional[Sequence[str]] = None, risk_method: str = "max", anomaly_risk: float = 0.5,
                       reasons: int = 3, rcf_attribution: str = "flagged", batch_rows: int = 65_536,
                       notify=None) -> dict[str, tuple[int, int]]:
    """:func:`score_parquet_files`, and the Python workers write the scores too: into the local
    Delta table ``table``, partitioned by ``partition_col``, replacing its partitions ``values``
    (default: those written) in one Delta transaction; returns ``{value: (rows, anomalies)}``.

    Each task writes its rows of a partition value to one Parquet file (pyarrow; the codec of
    ``spark.sql.parquet.compression.codec``, dictionary encoding but for ``plain_columns``) in
    the table's own ``partition_col=value`` folder, where no reader sees it yet (Delta readers
    read the files the log names). When every task has succeeded, the driver commits the files
    and the removal of the replaced partitions' files as one Delta transaction (delta-rs;
    runtime/storage.py ``commit_partitions``): readers see the old partitions or all the new
    ones. A run that fails before the commit removes the files it wrote; one killed before it
    leaves them unreferenced (VACUUM removes them) and the table as it was. ``columns``: the
    table's columns in order (``keep`` and the score columns). Spark reads the files as it reads
    its own (the same column types; timestamps as INT64 microseconds in UTC). The JVM then only
    hands out file names: it no longer turns the Arrow rows into its own rows and encodes them
    again, which was most of its work in the score job (README "Benchmarks").
    """
    import uuid

    from runtime.storage import commit_partitions, delta_writable, local_table_path

    root = local_table_path(spark, table)
    if root is None:
        raise ScoringError(f"the Python workers write local Delta tables only, not {table}; "
                           "write the scores through Spark (scoring.writer: spark)")
    problem = delta_writable(root, partition_col)
    if problem:
        raise ScoringError(f"the Python workers cannot write the scores: {problem}; "
                           "write them through Spark (scoring.writer: spark)")
    codec = arrow_codec(spark)
    if codec is None:
        raise ScoringError("spark.sql.parquet.compression.codec "
                           f"{spark.conf.get('spark.sql.parquet.compression.codec')!r} has no pyarrow twin; "
                           "write the scores through Spark (scoring.writer: spark)")
    scorer = _parquet_scorer(spark, champions, table_schema, keep, partition_col, batch_rows,
                             dict(risk_method=risk_method, anomaly_risk=anomaly_risk, reasons=reasons,
                                  rcf_attribution=rcf_attribution))
    missing = [c for c in columns if c not in (*scorer.kept, *SCORE_COLUMNS)]
    if missing:
        raise ScoringError(f"cannot write column(s) {', '.join(missing)}: neither kept nor a score")
    job = uuid.uuid4().hex
    writer = ScoresWriter(scorer, root, job, [c for c in columns if c != partition_col],
                          champions.versions, plain_columns, codec)
    try:
        written = _listing(spark, files).mapInArrow(
            writer, "value string, path string, bytes long, rows long, anomalies long").collect()
    except BaseException:
        _remove_files_of(root, partition_col, job)
        raise
    counts: dict[str, tuple[int, int]] = {}
    for row in written:
        rows, anomalies = counts.get(row["value"], (0, 0))
        counts[row["value"]] = (rows + row["rows"], anomalies + row["anomalies"])
    # a StorageError here (a commit that kept losing to concurrent runs) fails the job (exit 1)
    commit_partitions(root, partition_col, list(values) if values is not None else sorted(counts),
                      [(row["path"], row["value"], row["bytes"], row["rows"]) for row in written],
                      _arrow_schema(table_schema, columns), notify=notify)
    return counts


def _arrow_schema(table_schema: T.StructType, columns: Sequence[str]):
    """The scores table's pyarrow schema: ``columns`` in order, the kept ones typed as in the
    feature table ``table_schema``, the scores as scoring/spark.py makes them.
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_type

    types = {f.name: f.dataType for f in [*table_schema.fields, *OUT_FIELDS]}
    types.update(rcf_version=T.StringType(), logistic_version=T.StringType())
    return pa.schema([pa.field(c, to_arrow_type(types[c])) for c in columns])


def _remove_files_of(root: str, partition_col: str, job: str) -> None:
    """Remove the files run ``job`` wrote into the table at ``root`` (none is in its log yet)."""
    import glob

    for path in glob.glob(os.path.join(glob.escape(root), f"{partition_col}=*", f"part-*-{job}-*")):
        try:
            os.remove(path)
        except OSError:
            pass  # unreferenced either way: VACUUM removes it


# spark.sql.parquet.compression.codec -> (pyarrow's name, Spark's file name extension)
# (not brotli: Spark reads it only with a codec library EMR and pyspark do not ship)
_CODECS = {"none": ("none", ""), "uncompressed": ("none", ""), "snappy": ("snappy", ".snappy"),
           "gzip": ("gzip", ".gz"), "zstd": ("zstd", ".zstd")}


def arrow_codec(spark) -> Optional[tuple[str, str]]:
    """The codec's name in pyarrow and Spark's file name extension for it, or None (lzo, lz4,
    brotli: Spark's writer only).
    """
    return _CODECS.get(str(spark.conf.get("spark.sql.parquet.compression.codec", "snappy")).lower())


def _parquet_scorer(spark, champions: Champions, table_schema: T.StructType, keep: Sequence[str], partition_col: str,
                    batch_rows: int, options: dict) -> ParquetScorer:
    from pyspark.sql.pandas.types import to_arrow_type

    plan = ScoringPlan.of(champions, **options)
    kept = checked_keep(plan, table_schema.fieldNames(), keep)
    kept_types = [to_arrow_type(table_schema[c].dataType) for c in kept]
    read = list(dict.fromkeys([*(c for c in kept if c != partition_col), *plan.inputs]))
    forest_bc = champions.rcf.forest_broadcast(spark.sparkContext) if champions.rcf is not None else None
    return ParquetScorer(plan, forest_bc, kept, kept_types, read, partition_col, batch_rows)


def _listing(spark, files: Sequence[tuple[str, str]]) -> DataFrame:
    return spark.createDataFrame(
        spark.sparkContext.parallelize([(str(path), str(value)) for path, value in files], _tasks(spark, files)),
        "path string, value string")


def _tasks(spark, files: Sequence[tuple[str, str]]) -> int:
    """Tasks for ``files``: about spark.sql.files.maxPartitionBytes of them each (as Spark's own
    reader splits), at least one per core while there are files. A task costs its Python worker
    a fixed start-up (PySpark re-reads the directories of the zips and jars on its path), so one
    task per small file would spend much of the work on it.
    """
    if not files:
        return 1
    per_task = _size(spark.conf.get("spark.sql.files.maxPartitionBytes", "128m"))
    total = sum(os.path.getsize(path[len("file:"):] if path.startswith("file:") else path) for path, _ in files)
    cores = spark.sparkContext.defaultParallelism
    return max(1, min(len(files), max(cores, -(-total // per_task))))


def _size(text: str) -> int:
    """Bytes of a Spark size setting ("128m", "134217728b", "134217728")."""
    text = str(text).strip().lower()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text[:-1] if text.endswith("b") and len(text) > 1 and not text[-2].isdigit() else text.rstrip("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


class ParquetScorer:
    """The Python step of :func:`score_parquet_files`: ``(path, partition value)`` rows in, scored rows out."""

    def __init__(self, plan: ScoringPlan, forest_bc: Any, kept: Sequence[str], kept_types: Sequence[Any],
                 read: Sequence[str], partition_col: str, batch_rows: int):
        self.plan, self.forest_bc, self.kept, self.kept_types = plan, forest_bc, list(kept), list(kept_types)
        self.read, self.partition_col, self.batch_rows = list(read), partition_col, int(batch_rows)

    def __call__(self, listings):
        forest = self.forest()
        for path, value in self.files(listings):
            yield from self.score_file(path, value, forest)

    def forest(self):
        return forest_of(self.forest_bc)

    @staticmethod
    def files(listings):
        for listing in listings:
            yield from zip(listing.column(0).to_pylist(), listing.column(1).to_pylist(), strict=True)

    def score_file(self, path: str, value: str, forest):
        import pyarrow as pa
        import pyarrow.parquet as pq

        local = path[len("file:"):] if path.startswith("file:") else path
        # Spark writes timestamps as INT96 by default: read them as microseconds, Spark's unit
        parquet = pq.ParquetFile(local, coerce_int96_timestamp_unit="us")
        missing = [c for c in self.read if c not in parquet.schema_arrow.names]
        if missing:
            raise ScoringError(f"{path} lacks column(s) {', '.join(missing)}")
        constant = pa.array([value], pa.string()).cast(self.kept_types[self.kept.index(self.partition_col)])[0] \
            if self.partition_col in self.kept else None
        for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=self.read, use_threads=False):
            yield self.score_batch(batch, constant, forest)

    def score_batch(self, batch, constant, forest):
        import pyarrow as pa

        n = batch.num_rows
        scored = score_batch(self.plan, forest, Columns(batch.column, n, arrow_floats))
        kept = [pa.repeat(constant, n) if name == self.partition_col else batch.column(name).cast(kind)
                for name, kind in zip(self.kept, self.kept_types, strict=True)]
        return output_batch(kept, self.kept, scored)


class ScoresWriter:
    """The Python step of :func:`write_scored_files`: ``(path, partition value)`` rows in, the
    scores written to Parquet files in the table's partition folders under ``root``, one row per
    file out: ``(value, path relative to root, bytes, rows, anomalies)``. A file's name holds the
    run (``job``) and the task attempt, so a retried attempt never writes over another's, and
    only the files of the attempts that succeed reach the driver and the commit. Rows are
    written in row groups of ``row_group_rows`` (Spark's are as large: one or two per file here).
    """

    def __init__(self, scorer: ParquetScorer, root: str, job: str, columns: Sequence[str],
                 versions: tuple[Optional[str], Optional[str]], plain_columns: Sequence[str], codec: tuple[str, str],
                 row_group_rows: int = 1 << 20):
        self.scorer, self.root, self.job, self.columns = scorer, root, job, list(columns)
        self.versions, self.plain, self.codec = versions, set(plain_columns), codec
        self.row_group_rows = int(row_group_rows)

    def __call__(self, listings):
        import contextlib

        import pyarrow as pa
        import pyarrow.compute as pc
        from pyspark import TaskContext

        context = TaskContext.get()
        attempt = context.taskAttemptId() if context is not None else os.getpid()
        part = context.partitionId() if context is not None else 0
        forest, scorer = self.scorer.forest(), self.scorer
        files: dict[str, _PartFile] = {}
        with contextlib.ExitStack() as stack:
            for path, value in scorer.files(listings):
                for batch in scorer.score_file(path, value, forest):
                    batch = self.finish(batch)
                    if value not in files:
                        files[value] = stack.enter_context(self.open(attempt, part, len(files), value, batch.schema))
                    files[value].add(batch, pc.sum(batch.column("is_anomaly")).as_py() or 0)
        yield pa.RecordBatch.from_arrays(
            [pa.array(list(files), pa.string()),
             pa.array([os.path.relpath(f.path, self.root) for f in files.values()], pa.string()),
             pa.array([os.path.getsize(f.path) for f in files.values()], pa.int64()),
             pa.array([f.rows for f in files.values()], pa.int64()),
             pa.array([f.anomalies for f in files.values()], pa.int64())],
            names=["value", "path", "bytes", "rows", "anomalies"])

    def open(self, attempt: int, part: int, n: int, value: str, schema) -> "_PartFile":
        """The file of this task's rows of partition ``value``, in the table's folder of that value."""
        import pyarrow as pa

        from runtime.storage import partition_folder

        folder = os.path.join(self.root, partition_folder(self.scorer.partition_col, value))
        os.makedirs(folder, exist_ok=True)
        compression, extension = self.codec
        name = os.path.join(folder, f"part-{part:05d}-{self.job}-{attempt}.c{n:03d}{extension}.parquet")
        # Parquet names a list's values <column>.list.element; dictionary encoding is chosen per leaf
        dictionary = [f"{f.name}.list.element" if pa.types.is_list(f.type) else f.name
                      for f in schema if f.name not in self.plain]
        return _PartFile(name, schema, compression, dictionary, self.row_group_rows)

    def finish(self, batch):
        """A scored batch as the table's columns, in order, the model versions added."""
        import pyarrow as pa

        rcf_version, logistic_version = self.versions
        extra = {"rcf_version": rcf_version, "logistic_version": logistic_version}
        n = batch.num_rows
        arrays = [(pa.nulls(n, pa.string()) if extra[c] is None else pa.repeat(pa.scalar(extra[c], pa.string()), n))
                  if c in extra else batch.column(c) for c in self.columns]
        return pa.RecordBatch.from_arrays(arrays, names=self.columns)


class _PartFile:
    """One Parquet file a :class:`ScoresWriter` task writes, buffering batches into row groups."""

    def __init__(self, path: str, schema, compression: str, dictionary: list[str], row_group_rows: int):
        import pyarrow.parquet as pq

        self.path, self.rows, self.anomalies = path, 0, 0
        self.row_group_rows, self.pending, self.pending_rows = row_group_rows, [], 0
        self.writer = pq.ParquetWriter(path, schema, compression=compression, use_dictionary=dictionary)

    def add(self, batch, anomalies: int) -> None:
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.rows += batch.num_rows
        self.anomalies += anomalies
        if self.pending_rows >= self.row_group_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), row_group_size=self.row_group_rows)
            self.pending, self.pending_rows = [], 0

    def __enter__(self) -> "_PartFile":
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                self.flush()
        finally:
            self.writer.close()
