"""The stream's sinks: each micro-batch appended to a Delta table once, whatever crashes.

Every write of micro-batch ``N`` is one Delta commit carrying Delta's idempotent-write options,
``txnAppId`` (the query's application id, below) and ``txnVersion`` = ``N``. Delta records the
pair in the same commit as the rows and skips a write whose version is not above the last one
recorded for that application, so a batch Spark runs again after a crash between the sink write
and its own commit (its offset log still names the batch) adds nothing. No staging folder,
manifest or marker of ours: the commit is Delta's log entry. Spark frames go through Spark's
Delta writer, which reaches ``s3a://`` with the session's settings; an Arrow table made on the
driver (the fast stream path) is committed by delta-rs on local paths, with the same txn
action (:meth:`DeltaSink.write_arrow` says why and how a repeat is skipped there).

The application id comes from the checkpoint: the query id Spark keeps in
``<checkpoint>/metadata``. It is the same for every restart of that checkpoint, and a new
checkpoint (which numbers its batches from 0 again) gets a new one; an id made from the
checkpoint's path would make Delta skip every batch of a re-created checkpoint up to the old
query's last one. The scored rows and the dead letters are two tables with two application ids.

Each commit's ``userMetadata`` holds ``{"app": ..., "batch_id": N, ...}`` plus what the caller
adds (the incremental engine keeps its watermark there), so the stream can read back from the
table's history whether a batch is in already (reported as ``sink_skipped``) and what the
newest earlier batch recorded. Delta's own ``txn`` check stays the rule; the history only
reports it.

A re-run batch is not always the same batch. The Kinesis connectors decide what a micro-batch
holds while they read it (bounded by time and record count), and the qubole connector starts the
next batch after what the *last* run of a batch read: when records arrived between a crash and
the restart, the re-run of batch ``N`` can hold more records than the attempt that committed.
Skipping it whole would lose those records (the next batch starts after them). So a skipped write
given a ``key`` is *topped up*: the rows of the re-run whose key is not among the table's rows of
batch ``N`` are appended in one more Delta commit (same ``batch_id`` column and ``userMetadata``
with ``"top_up": <rows>``, no ``txn`` action, which Delta would skip). It is idempotent by
content: a crash after it and before Spark's commit re-runs the batch again, and that run finds
the rows in and adds nothing. With a deterministic source (landing files) the re-run holds the
same rows and nothing is written; only a re-run pays the read of the batch's keys.
"""
from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from runtime import fs
from runtime.sources import StreamConfigError

SINK_PARTITIONS = ("date", "hour")
HISTORY_SCAN = 100      # newest commits read first; the whole history only when none of them is ours


def stream_app_id(checkpoint: str) -> str:
    """The Delta application id of the stream query whose checkpoint is ``checkpoint``.

    Spark writes ``<checkpoint>/metadata`` (``{"id": <query uuid>}``) when the query starts, so
    inside ``foreachBatch`` it is always there.
    """
    path = f"{checkpoint.rstrip('/')}/metadata"
    try:
        query = json.loads(fs.read_text(path))["id"]
    except (OSError, ValueError, KeyError) as exc:
        raise StreamConfigError(f"cannot read the stream query's id from {path} (written by Spark when the "
                                f"query starts): {exc}") from None
    return f"zen-anomaly-stream-{query}"


def check_sink_target(spark: SparkSession, path: str, what: str) -> None:
    """Refuse a ``path`` that holds files but no Delta table (e.g. the Parquet sink of an older
    version), and a session without Delta Lake.

    Delta would start a new table there and hide the files; convert the folder first
    (``CONVERT TO DELTA parquet.`<path>` PARTITIONED BY (...)``) or pick another path.
    """
    from delta.tables import DeltaTable

    try:
        is_delta = DeltaTable.isDeltaTable(spark, path)
    except Exception as exc:   # py4j: no Delta classes in this JVM ('JavaPackage' object is not callable)
        raise StreamConfigError(f"the stream's sink is a Delta table, and this Spark session has no Delta Lake "
                                f"({type(exc).__name__}: {exc}): set spark.delta_package, or on EMR the "
                                "delta-defaults classification") from None
    if is_delta or not fs.exists(path):
        return
    if fs.list_files(path) or fs.list_dirs(path):
        raise StreamConfigError(f"the stream's {what} {path} holds files but is not a Delta table: convert it "
                                f"(CONVERT TO DELTA parquet.`{path}`, with PARTITIONED BY for its partition "
                                "folders) or choose another path")


class DeltaSink:
    """One Delta table the stream appends to, one commit per micro-batch (see the module doc).

    Keep one object per table for the life of the query: the newest batch it holds is read from
    the table's history once, then followed as batches are written.
    """

    def __init__(self, spark: SparkSession, path: str, app_id: str, partition_by: Sequence[str] = ()):
        self.spark = spark
        self.path = path.rstrip("/")
        self.app_id = app_id
        self.partition_by = tuple(partition_by)
        self._commits: dict[int, dict] | None = None    # this app's commits read from the history

    # ------------------------------------------------------------------ reading back

    def commits(self, *, whole_history: bool = False) -> dict[int, dict]:
        """This application's commits by batch id: their metadata, ``version`` and ``committed_at``
        (epoch seconds), from the newest ``HISTORY_SCAN`` commits (all with ``whole_history``, or
        when none of those is ours: other writers, e.g. OPTIMIZE, came after).
        """
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(self.spark, self.path):
            return {}
        table = DeltaTable.forPath(self.spark, self.path)
        rows = table.history(None if whole_history else HISTORY_SCAN) \
            .select("version", "timestamp", "userMetadata").collect()
        found = self._ours(rows)
        if not found and not whole_history and len(rows) == HISTORY_SCAN:
            return self.commits(whole_history=True)
        return found

    def _ours(self, rows) -> dict[int, dict]:
        found = {}
        for row in rows:
            try:
                meta = json.loads(row["userMetadata"] or "")
            except ValueError:
                continue
            if isinstance(meta, dict) and meta.get("app") == self.app_id:
                batch = int(meta["batch_id"])
                if batch in found and found[batch]["version"] > row["version"]:
                    continue     # a top-up commit after the batch's own: the newest carries its metadata
                found[batch] = {**meta, "version": row["version"], "committed_at": row["timestamp"].timestamp()}
        return found

    def _known(self) -> dict[int, dict]:
        if self._commits is None:
            self._commits = self.commits()
        return self._commits

    def last_batch(self) -> int | None:
        """The newest batch id this application committed (None: none yet)."""
        known = self._known()
        return max(known) if known else None

    def commit_before(self, batch_id: int) -> dict | None:
        """The metadata of this application's newest commit of a batch before ``batch_id`` (None: none)."""
        earlier = [n for n in self._known() if n < batch_id]
        return self._known()[max(earlier)] if earlier else None

    def rows(self) -> DataFrame | None:
        """The table (None before its first commit)."""
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(self.spark, self.path):
            return None
        return self.spark.read.format("delta").load(self.path)

    def batch_rows(self, batch_id: int, prune: Mapping[str, Sequence] | None = None) -> DataFrame | None:
        """The table's rows of batch ``batch_id`` (None before its first commit); ``prune`` (partition
        column -> values, e.g. a commit record's ``partition_values``) narrows the files read.
        """
        rows = self.rows()
        if rows is None:
            return None
        for column, values in (prune or {}).items():
            rows = rows.where(F.col(column).isin(list(values)))
        return rows.where(F.col("batch_id") == F.lit(batch_id))

    # ------------------------------------------------------------------ writing

    def write(self, df: DataFrame, batch_id: int, extra: Mapping[str, Any] | None = None, *,
              key: Sequence[str] = ()) -> dict:
        """Append ``df`` as batch ``batch_id`` in one Delta commit; Delta skips it when the batch is in already.

        Returns the commit record: ``extra``, ``batch_id``, ``committed_at``, ``skipped`` (the
        batch was committed before: Delta skipped this write) and ``topped_up`` (rows of a skipped
        batch appended now: those of ``df`` whose ``key`` columns match no row of batch
        ``batch_id`` in the table; see the module doc; no ``key``: never topped up).
        ``partition_values`` (partition column -> values of ``df``) is there when a top-up was
        looked for. ``extra`` is kept in the commit's ``userMetadata``. New columns are added to
        the table (``mergeSchema``); a column whose type changed fails the write.
        """
        last = self.last_batch()
        skipped = last is not None and batch_id <= last   # what Delta's txn check below will find
        meta = self._meta(batch_id, extra)
        writer = (df.write.format("delta").mode("append")
                  .option("txnAppId", self.app_id).option("txnVersion", str(batch_id))
                  .option("userMetadata", json.dumps(meta, sort_keys=True))
                  .option("mergeSchema", "true"))
        if self.partition_by:
            writer = writer.partitionBy(*self.partition_by)
        writer.save(self.path)   # skipped by Delta before a row is computed when the batch is in
        if not (skipped and key):
            return self._record(batch_id, meta, skipped)
        topped_up, prune = self._top_up(df, batch_id, tuple(key), meta)
        return self._record(batch_id, meta, skipped, topped_up, prune)

    def _top_up(self, df: DataFrame, batch_id: int, key: tuple[str, ...], meta: dict) -> tuple[int, dict]:
        """Append the rows of ``df`` whose ``key`` is not in the table's batch ``batch_id``, in one
        commit without a txn action; (rows appended, the partition values looked in).
        """
        prune = {}
        part = next((c for c in self.partition_by if c in df.columns), None)
        if part is not None:     # the table's rows of this batch sit in the partitions of the re-run's rows
            prune = {part: [r[0] for r in df.select(part).distinct().collect()]}
            if not prune[part]:
                return 0, prune
        existing = self.batch_rows(batch_id, prune)
        if existing is None:
            return 0, prune
        names = [f"_top_up_key{i}" for i in range(len(key))]
        existing = existing.select(*[F.col(k).alias(n) for k, n in zip(key, names, strict=True)])
        condition = [df[k].eqNullSafe(existing[n]) for k, n in zip(key, names, strict=True)]
        missing = df.join(existing, condition, "left_anti").persist(StorageLevel.MEMORY_AND_DISK)
        try:
            added = missing.count()
            if added:
                writer = (missing.write.format("delta").mode("append")
                          .option("userMetadata", json.dumps({**meta, "top_up": added}, sort_keys=True))
                          .option("mergeSchema", "true"))
                if self.partition_by:
                    writer = writer.partitionBy(*self.partition_by)
                writer.save(self.path)
        finally:
            missing.unpersist()
        return added, prune

    def write_arrow(self, table, batch_id: int, extra: Mapping[str, Any] | None = None, *,
                    key: Sequence[str] = ()) -> dict:
        """:meth:`write` for a ``pyarrow.Table`` made on the driver (its column types are the table's).

        On the local file system the table is committed by delta-rs (``deltalake``), which writes
        the Arrow data with no Spark job, in one Delta commit with the same ``txn`` action and
        ``userMetadata`` as :meth:`write` (delta-spark reads both: its own txn check skips a
        batch delta-rs committed, and the other way round). delta-rs records a txn but does not
        refuse a repeated one, so the batch is skipped here when the table's txn version for this
        application (read by delta-rs from the log) is at or above it; the stream is the table's
        only writer (one query per checkpoint), so nothing can commit in between. A skipped batch
        is topped up by ``key`` as :meth:`write` does, from Arrow. Elsewhere (``s3a://``) the rows
        go through Spark's Delta writer, which reaches the object store with the session's settings.
        """
        local = fs.local_path(self.path)
        if local is None:
            from pyspark.sql.pandas.types import from_arrow_schema

            df = self.spark.createDataFrame(table.to_pandas(), schema=from_arrow_schema(table.schema))
            return self.write(df, batch_id, extra, key=key)
        from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

        meta = self._meta(batch_id, extra)
        done = DeltaTable(local).transaction_version(self.app_id) if DeltaTable.is_deltatable(local) else None
        skipped = done is not None and batch_id <= done
        if not skipped:
            write_deltalake(local, table, mode="append", partition_by=list(self.partition_by) or None,
                            schema_mode="merge", commit_properties=CommitProperties(
                                custom_metadata={"userMetadata": json.dumps(meta, sort_keys=True)},
                                app_transactions=[Transaction(self.app_id, batch_id)]))
            return self._record(batch_id, meta, skipped)
        if not key:
            return self._record(batch_id, meta, skipped)
        missing, prune = self._missing_arrow(local, table, batch_id, tuple(key))
        if missing.num_rows:
            write_deltalake(local, missing, mode="append", partition_by=list(self.partition_by) or None,
                            schema_mode="merge", commit_properties=CommitProperties(custom_metadata={
                                "userMetadata": json.dumps({**meta, "top_up": missing.num_rows}, sort_keys=True)}))
        return self._record(batch_id, meta, skipped, missing.num_rows, prune)

    def _missing_arrow(self, local: str, table, batch_id: int, key: tuple[str, ...]):
        """(the rows of ``table`` whose ``key`` matches no row of batch ``batch_id`` in the Delta
        table at ``local``, the partition values looked in), read with delta-rs.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        from deltalake import DeltaTable

        prune = {}
        filters = [("batch_id", "=", batch_id)]
        part = next((c for c in self.partition_by if c in table.column_names), None)
        if part is not None:
            prune = {part: pc.unique(table[part]).to_pylist()}
            if not prune[part]:
                return table.slice(0, 0), prune
            filters.append((part, "in", prune[part]))
        existing = DeltaTable(local).to_pyarrow_table(columns=list(key), filters=filters)
        existing = existing.cast(pa.schema([table.schema.field(k) for k in key]))
        rows = pa.table({**{k: table[k] for k in key}, "_top_up_row": pa.array(range(table.num_rows), pa.int64())})
        # Arrow's join matches no null key (the Spark path does): the key here is the event id, never null
        kept = rows.join(existing, keys=list(key), join_type="left anti", use_threads=False)
        rows_kept = kept["_top_up_row"]
        return table.take(pc.take(rows_kept, pc.sort_indices(rows_kept))), prune     # in the re-run's order

    def _meta(self, batch_id: int, extra: Mapping[str, Any] | None) -> dict:
        return fs.json_safe({**(extra or {}), "app": self.app_id, "batch_id": batch_id})

    def _record(self, batch_id: int, meta: dict, skipped: bool, topped_up: int = 0,
                prune: Mapping[str, Sequence] | None = None) -> dict:
        if skipped and not topped_up:
            record = dict(self._known().get(batch_id) or {**meta, "committed_at": None})
        else:
            record = {**meta, "committed_at": time.time()}
            if topped_up:
                record["top_up"] = topped_up
            self._known()[batch_id] = dict(record)
        record["skipped"] = skipped
        record["topped_up"] = topped_up
        if prune is not None:
            record["partition_values"] = dict(prune)
        return record


def with_batch_id(df: DataFrame, batch_id: int) -> DataFrame:
    """``df`` with the micro-batch id as a ``batch_id`` column (long)."""
    return df.withColumn("batch_id", F.lit(batch_id).cast("long"))
