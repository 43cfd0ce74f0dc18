"""Structured Streaming plumbing: sources, the one writer function and the exactly-once sink.

Sources (each returns a streaming frame that :mod:`ingest.decode` turns into payloads):

* :func:`kinesis_source` - ``spark.readStream.format("aws-kinesis")`` (EMR 7.1+ image only);
* :func:`landing_source` - a prefix of JSON-lines files read as *text*, so a bad line reaches the
  decoder (and the dead letters) instead of being dropped by a JSON reader.

:func:`write_stream` is the only place that starts a query: it refuses batch frames and holds the
trigger, output mode and checkpoint. :class:`MicroBatchProcessor` is the ``foreachBatch``
function; per micro-batch ``N`` it

1. decodes the records (dead letters with a reason for anything unusable);
2. reads the *history* snapshot of the latest batch before ``N`` (``<checkpoint>/history``: the
   accepted events of the last ``history_seconds`` behind the max event time seen), rejects
   events older than the watermark (``late``) or already in the history (``duplicate``);
3. runs the batch feature function on history + batch and keeps the batch's rows (so a record
   gets exactly the features - and the score - the batch job gives it), scores them with the
   scorer obtained for this batch;
4. commits the sink idempotently: the batch is written to ``<output>/_staging/batch_id=N``, its
   files are renamed into ``<output>/date=../hour=../part-N-*.parquet`` (names fixed by the batch
   id, a manifest lists them so a retried batch first removes a half-moved attempt) and a marker
   ``<checkpoint>/sink_commits/N`` is written last; a batch with a marker is never written again;
5. overwrites ``<dead_letter>/batch_id=N`` and ``<checkpoint>/history/batch_id=N`` (idempotent);
6. publishes alerts with a sent-keys ledger at ``<checkpoint>/alerts_sent/N``.

Spark re-runs batch ``N`` with the same input after a crash (its offset log), and every step
above either is skipped (marker, ledger) or rewrites the same content, so a ``kill -9`` anywhere
never duplicates a row or an alert.

With the incremental engine (transactions) steps 2-4 run on the driver instead: one Arrow
transfer brings the raw payloads over, clean records are decoded there (ingest/fastdecode.py;
the others go through the Spark decoder, which gives the reasons), in-batch duplicates, late
and already-processed events are marked there, the features come from the in-memory state
(features/incremental.py), a scorer with a ``pandas`` twin (scoring/core.py ``score_pandas``)
scores the frame, and :meth:`ExactlyOnceSink.write_arrow` writes it under the same commit.
Every one of these is tested equal to the Spark path.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from ingest.decode import (CARRIED_COLUMNS, decode_records, rejected_as_dead_letters,
                             split_late_and_duplicates)
from ingest.validation import REASON

Scorer = Callable[[DataFrame], DataFrame]
AVAILABLE_NOW = "available-now"
_REASON_DETAIL = r" \(.*"     # "late (event_time before ...)" counts as "late"
_INTERVAL = re.compile(r"^\s*\d+(\.\d+)?\s*(ms|millisecond|milliseconds|s|second|seconds|min|minute|minutes)\s*$")


class StreamConfigError(ValueError):
    """A stream setting that cannot work (trigger, source options, ...)."""


# --------------------------------------------------------------------------- sources


def landing_source(spark: SparkSession, path: str, *, max_files_per_trigger: int) -> DataFrame:
    """JSON-lines files under ``path`` as a streaming text frame (``value``; ``_metadata`` hidden).

    Files must appear atomically (written elsewhere, then renamed in): Firehose does this on S3
    and the replay job's landing mode writes a hidden temporary file first.
    """
    return (spark.readStream.format("text")
            .option("maxFilesPerTrigger", int(max_files_per_trigger))
            .load(path))


def kinesis_source(spark: SparkSession, *, stream_name: str, region: str, endpoint_url: str | None,
                   starting_position: str, consumer_type: str = "GetRecords",
                   max_fetch_records: int | None = None) -> DataFrame:
    """The EMR ``aws-kinesis`` connector (in the EMR 7.1+ image; not available elsewhere).

    Columns: ``data`` (binary), ``streamName``, ``partitionKey``, ``sequenceNumber``,
    ``approximateArrivalTimestamp``.
    """
    if not stream_name:
        raise StreamConfigError("the kinesis source needs a stream name (--input or stream.kinesis.stream_name)")
    reader = (spark.readStream.format("aws-kinesis")
              .option("kinesis.region", region)
              .option("kinesis.streamName", stream_name)
              .option("kinesis.consumerType", consumer_type)
              .option("kinesis.startingPosition", starting_position))
    if endpoint_url:
        reader = reader.option("kinesis.endpointUrl", endpoint_url)
    if max_fetch_records:
        reader = reader.option("kinesis.getRecords.numberOfRecordsPerFetch", str(int(max_fetch_records)))
    return reader.load()


# --------------------------------------------------------------------------- the writer


def check_trigger(trigger: str) -> str:
    """``available-now`` or a processing-time interval like ``5 seconds``."""
    if trigger == AVAILABLE_NOW or _INTERVAL.match(trigger or ""):
        return trigger
    raise StreamConfigError(f"trigger must be an interval like '5 seconds' or '{AVAILABLE_NOW}', got {trigger!r}")


def write_stream(df: DataFrame, *, checkpoint: str, trigger: str,
                 process_batch: Callable[[DataFrame, int], None], query_name: str | None = None) -> StreamingQuery:
    """Start the one streaming query of a sink: foreachBatch, append mode, its own checkpoint."""
    if not df.isStreaming:
        raise StreamConfigError("write_stream needs a streaming DataFrame (spark.readStream...); "
                                "write batch frames with runtime.storage.write_table")
    if not checkpoint:
        raise StreamConfigError("a streaming sink needs a checkpoint folder")
    writer = (df.writeStream.foreachBatch(process_batch)
              .outputMode("append")
              .option("checkpointLocation", checkpoint))
    if check_trigger(trigger) == AVAILABLE_NOW:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=trigger)
    if query_name:
        writer = writer.queryName(query_name)
    return writer.start()


# --------------------------------------------------------------------------- file system


class HadoopFs:
    """Small file operations through Hadoop's FileSystem, so local paths and s3a:// both work."""

    def __init__(self, spark: SparkSession):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _resolve(self, path: str):
        jpath = self._jvm.org.apache.hadoop.fs.Path(path)
        return jpath.getFileSystem(self._conf), jpath

    def exists(self, path: str) -> bool:
        fs, p = self._resolve(path)
        return bool(fs.exists(p))

    def delete(self, path: str) -> None:
        fs, p = self._resolve(path)
        if fs.exists(p):
            fs.delete(p, True)

    def rename(self, src: str, dst: str) -> None:
        fs, s = self._resolve(src)
        _, d = self._resolve(dst)
        fs.mkdirs(d.getParent())
        if fs.exists(d):
            fs.delete(d, False)
        if not fs.rename(s, d):
            raise OSError(f"could not rename {src} to {dst}")

    def copy_from_local(self, local: str, dst: str) -> None:
        """Copy a file of this machine's disk to ``dst`` (any Hadoop file system; the local file stays)."""
        fs, d = self._resolve(dst)
        fs.copyFromLocalFile(False, True, self._jvm.org.apache.hadoop.fs.Path("file://" + os.path.abspath(local)), d)

    def list_dirs(self, folder: str) -> list[str]:
        fs, p = self._resolve(folder)
        if not fs.exists(p):
            return []
        return [s.getPath().toString() for s in fs.listStatus(p) if s.isDirectory()]

    def list_files(self, folder: str, recursive: bool = False) -> list[str]:
        fs, p = self._resolve(folder)
        if not fs.exists(p):
            return []
        found = []
        it = fs.listFiles(p, recursive)
        while it.hasNext():
            found.append(it.next().getPath().toString())
        return sorted(found)

    def read_text(self, path: str) -> str:
        fs, p = self._resolve(path)
        stream = fs.open(p)
        try:
            return self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        """Write ``text`` whole or not at all: a stop mid-write must not leave a truncated marker or
        ledger behind (a restart would trip over it). Written beside the target, then renamed.
        """
        fs, p = self._resolve(path)
        tmp = self._jvm.org.apache.hadoop.fs.Path(p.getParent(), f".{p.getName()}.writing")
        out = fs.create(tmp, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        if fs.exists(p):
            fs.delete(p, False)
        if not fs.rename(tmp, p):
            raise OSError(f"could not rename {tmp.toString()} to {path}")


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _batch_ids(paths: Sequence[str]) -> list[int]:
    ids = []
    for path in paths:
        match = re.fullmatch(r"batch_id=(\d+)", _name(path))
        if match:
            ids.append(int(match.group(1)))
    return sorted(ids)


# --------------------------------------------------------------------------- exactly-once sink


class ExactlyOnceSink:
    """Parquet partitioned by ``date``/``hour``; each micro-batch committed once (see module doc)."""

    def __init__(self, fs: HadoopFs, output: str, commits: str, partition_by: Sequence[str] = ("date", "hour")):
        self.fs = fs
        self.output = output.rstrip("/")
        self.commits = commits.rstrip("/")
        self.partition_by = tuple(partition_by)

    def marker(self, batch_id: int) -> str:
        return f"{self.commits}/{batch_id}"

    def committed(self, batch_id: int) -> bool:
        return self.fs.exists(self.marker(batch_id))

    def committed_ids(self) -> list[int]:
        return sorted(int(_name(p)) for p in self.fs.list_files(self.commits) if _name(p).isdigit())

    def commit_info(self, batch_id: int) -> dict:
        return json.loads(self.fs.read_text(self.marker(batch_id)))

    def write(self, df: DataFrame, batch_id: int, extra: Mapping[str, Any] | None = None) -> dict:
        """Write ``df`` as batch ``batch_id`` unless already committed; returns the commit record.

        ``extra`` is stored in the commit record (the incremental engine keeps its watermark there).
        """
        if self.committed(batch_id):
            return self._skipped(batch_id)
        staging = self._fresh_staging(batch_id)
        df.write.mode("overwrite").partitionBy(*self.partition_by).parquet(staging)
        return self._commit(batch_id, staging, extra)

    def write_arrow(self, table, batch_id: int, extra: Mapping[str, Any] | None = None) -> dict:
        """:meth:`write` for a ``pyarrow.Table`` made on the driver (no Spark job).

        One Parquet file per (date, hour) of the batch, written locally with pyarrow, copied into
        the staging folder through Hadoop's file system (so s3a:// works too), then committed
        exactly as :meth:`write` commits. The table holds the partition columns; the files do not
        (they are in the folder names, as Spark writes them).
        """
        import tempfile

        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if self.committed(batch_id):
            return self._skipped(batch_id)
        staging = self._fresh_staging(batch_id)
        keys = list(self.partition_by)
        data = table.drop_columns(keys)
        groups = table.select(keys).group_by(keys).aggregate([]) if table.num_rows else None
        with tempfile.TemporaryDirectory(prefix="sink_") as tmp:
            for g in range(groups.num_rows if groups is not None else 0):
                values = [groups.column(k)[g] for k in keys]
                mask = None
                for k, v in zip(keys, values, strict=True):
                    eq = pc.equal(table.column(k), v)
                    mask = eq if mask is None else pc.and_(mask, eq)
                local = os.path.join(tmp, f"part-{g:05d}.parquet")
                pq.write_table(data.filter(mask), local, compression="snappy")
                folder = "/".join(f"{k}={_partition_text(v.as_py())}" for k, v in zip(keys, values, strict=True))
                self.fs.copy_from_local(local, f"{staging}/{folder}/part-{g:05d}.parquet")
        return self._commit(batch_id, staging, extra)

    def _skipped(self, batch_id: int) -> dict:
        info = self.commit_info(batch_id)
        info["skipped"] = True
        return info

    def _fresh_staging(self, batch_id: int) -> str:
        """An empty staging folder for the batch, after undoing what a crashed attempt moved."""
        staging = f"{self.output}/_staging/batch_id={batch_id}"
        manifest = f"{staging}.manifest.json"
        if self.fs.exists(manifest):     # a crashed attempt may have moved some files already
            for target in json.loads(self.fs.read_text(manifest)):
                self.fs.delete(target)
            self.fs.delete(manifest)
        self.fs.delete(staging)
        return staging

    def _commit(self, batch_id: int, staging: str, extra: Mapping[str, Any] | None) -> dict:
        """Move the staged files to their final names (listed in a manifest first), then write the marker."""
        manifest = f"{staging}.manifest.json"
        sources = [p for p in self.fs.list_files(staging, recursive=True)
                   if _name(p).startswith("part-") and not _name(p).endswith(".crc")]
        moves = []
        for n, src in enumerate(sources):
            relative = src.split(f"batch_id={batch_id}/", 1)[1]
            folder = relative.rsplit("/", 1)[0] if "/" in relative else ""
            target = "/".join(p for p in (self.output, folder, f"part-{batch_id:010d}-{n:05d}.parquet") if p)
            moves.append((src, target))
        self.fs.write_text(manifest, json.dumps([t for _, t in moves]))
        for src, target in moves:
            self.fs.rename(src, target)
        info = {"batch_id": batch_id, "files": len(moves), "committed_at": time.time(), **(extra or {})}
        self.fs.write_text(self.marker(batch_id), json.dumps(info))
        self.fs.delete(staging)
        self.fs.delete(manifest)
        info["skipped"] = False
        return info


def _partition_text(value) -> str:
    """A partition value as Spark writes it in a folder name (dates ISO, numbers plain)."""
    return value.isoformat() if isinstance(value, dt.date) else str(value)


# --------------------------------------------------------------------------- the micro-batch


@dataclass
class StreamSettings:
    """Plain values the processor needs (from ``stream.*`` and ``schema.<dataset>``)."""

    dataset: str
    schema_conf: Mapping[str, Any]
    output: str
    checkpoint: str
    dead_letter: str
    history_seconds: int
    allowed_lateness_seconds: int = 0
    max_record_bytes: int = 65536
    id_column: str = "event_id"


@dataclass
class BatchReport:
    batch_id: int
    records: int = 0
    scored: int = 0
    dead_letters: int = 0
    alerts_sent: int = 0
    alerts_skipped: int = 0
    alerts_failed: int = 0
    sink_skipped: bool = False
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_max_s: float | None = None
    seconds: float = 0.0
    dead_reasons: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)

    def phase(self, name: str, since: float) -> float:
        """Record the seconds spent in ``name`` since ``since``; returns now (the next phase's start)."""
        now = time.time()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - since, 3)
        return now

    def timings(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.phases.items())

    def line(self) -> str:
        lat = ("n/a" if self.latency_p50_s is None else
               f"p50 {self.latency_p50_s:.1f} s, p95 {self.latency_p95_s:.1f} s, max {self.latency_max_s:.1f} s")
        again = " (sink already committed: not rewritten)" if self.sink_skipped else ""
        return (f"batch {self.batch_id}: {self.records:,} records, {self.scored:,} events scored{again}, "
                f"{self.alerts_sent:,} alerts raised ({self.alerts_skipped} already sent), "
                f"{self.dead_letters:,} dead letters, event-to-sink latency {lat}, batch took {self.seconds:.1f} s"
                + (f" ({self.timings()})" if self.phases else ""))


class MicroBatchProcessor:
    """The ``foreachBatch`` function: decode, features over history, score, commit, alert.

    The streaming frame must already be a payload frame (``ingest.decode.payloads_from_*`` applied
    to the source: the file source's ``_metadata`` is gone inside foreachBatch).

    ``transform`` is the batch feature function (canonical events -> features, same rows);
    ``scorer_factory()`` is called at the start of every micro-batch and returns
    ``score(features_df) -> scored_df`` (so a new champion is picked up without a restart);
    ``alerter`` (or None) has ``publish(events, scope)`` like :class:`streaming.alerts.SnsAlerter`.
    """

    def __init__(self, settings: StreamSettings, *, transform: Callable[[DataFrame], DataFrame],
                 scorer_factory: Callable[[], Scorer], alerter=None, on_batch: Callable[[BatchReport], None] | None = None,
                 alert_columns: Sequence[str] = (), incremental=None):
        self.s = settings
        self.incremental = incremental
        self._state = None
        self._state_batch: int | None = None
        self.transform = transform
        self.scorer_factory = scorer_factory
        self.alerter = alerter
        self.on_batch = on_batch
        self.alert_columns = tuple(alert_columns)
        self.reports: list[BatchReport] = []
        self._fs: HadoopFs | None = None

    # -- state folders
    @property
    def history_root(self) -> str:
        return f"{self.s.checkpoint.rstrip('/')}/history"

    def _history_before(self, spark: SparkSession, batch_id: int):
        """(the latest complete history snapshot before ``batch_id``, max event time seen) or (None, None)."""
        ids = [i for i in _batch_ids(self._fs.list_dirs(self.history_root)) if i < batch_id
               and self._fs.exists(f"{self.history_root}/batch_id={i}/_max_event_time")]
        if not ids:
            return None, None
        snapshot = f"{self.history_root}/batch_id={ids[-1]}"
        text = self._fs.read_text(f"{snapshot}/_max_event_time").strip()
        return spark.read.parquet(snapshot), (dt.datetime.fromisoformat(text) if text else None)

    def _prune_history(self, batch_id: int) -> None:
        # Keep the snapshot before this batch: a re-run of this batch (crash before Spark's own
        # commit) reads it again.
        ids = [i for i in _batch_ids(self._fs.list_dirs(self.history_root)) if i < batch_id]
        for old in ids[:-1]:
            self._fs.delete(f"{self.history_root}/batch_id={old}")

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        started = time.time()
        spark = batch_df.sparkSession
        if self._fs is None:
            self._fs = HadoopFs(spark)
        s = self.s
        report = BatchReport(batch_id)
        score = self.scorer_factory()
        sink = ExactlyOnceSink(self._fs, s.output, f"{s.checkpoint.rstrip('/')}/sink_commits")

        decoded = decode_records(batch_df, dataset=s.dataset, schema_conf=s.schema_conf,
                                 max_record_bytes=s.max_record_bytes)
        if self.incremental is None:   # the history engine reads the decoded records several times
            decoded = decoded.persist(StorageLevel.MEMORY_AND_DISK)
        engine = self._incremental_features if self.incremental is not None else self._history_features
        features, rejected, save_state, cleanup, known = engine(spark, decoded, batch_id, report, sink, batch_df)
        mark = time.time()
        local_score = getattr(score, "pandas", None)
        if known is not None and known.get("frame") is not None and local_score is not None:
            # the micro-batch is on the driver already: score it there and write it with pyarrow
            scored_local = local_score(local_feature_frame(known["frame"], self.incremental))
            scored_local["hour"] = scored_local["event_time"].dt.hour.astype("int32")
            scored_local["batch_id"] = np.int64(batch_id)
            report.scored = len(scored_local)
            mark = report.phase("score", mark)
            commit = sink.write_arrow(arrow_table(scored_local), batch_id, extra=known.get("commit"))
            self._finish(batch_id, report, sink, decoded, rejected, save_state, cleanup, known, commit, mark,
                         started, anomalies=lambda cols: local_anomalies(scored_local, cols))
            return
        if callable(features):
            features = features()
        scored = score(features)
        if "date" not in scored.columns:
            scored = scored.withColumn("date", F.to_date("event_time"))
        scored = (scored.withColumn("hour", F.hour("event_time"))
                  .withColumn("batch_id", F.lit(batch_id).cast("long")))
        if known is None or self.alerter is not None:   # read more than once: keep it
            scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        # count, arrival-time quantiles (for the latency) and newest event time; the incremental
        # engine knows them already, the other takes one pass over the scored rows
        stats = known or scored.agg(
            F.count(F.lit(1)).alias("n"),
            F.percentile_approx(F.unix_micros("arrival_time"), [0.5, 0.05, 0.0], 10000).alias("q"),
            F.max("event_time").alias("newest"),
        ).first()
        report.scored = stats["n"]
        mark = report.phase("score", mark)

        commit = sink.write(scored, batch_id, extra=(known or {}).get("commit"))

        def anomalies(cols):
            wanted = [c for c in cols if c in scored.columns]
            return [row.asDict(recursive=True) for row in scored.where(F.col("is_anomaly")).select(*wanted).collect()]

        self._finish(batch_id, report, sink, decoded, rejected, save_state, cleanup, stats, commit, mark,
                     started, anomalies=anomalies, scored=scored)

    def _finish(self, batch_id, report, sink, decoded, rejected, save_state, cleanup, stats, commit, mark,
                started, *, anomalies, scored=None) -> None:
        """After the sink write: latency, dead letters, state, alerts, the report."""
        s = self.s
        report.sink_skipped = commit["skipped"]
        if stats["n"] and stats["q"] is not None:
            committed_at = commit["committed_at"]
            q50, q05, q0 = (v / 1e6 if v is not None else None for v in stats["q"])
            if q50 is not None:
                report.latency_p50_s = committed_at - q50
                report.latency_p95_s = committed_at - q05
                report.latency_max_s = committed_at - q0
        mark = report.phase("sink", mark)
        _maybe_kill("after-sink", batch_id)

        if isinstance(stats, dict) and "decoded" in stats:    # the incremental engine decoded on the driver
            decoded = stats["decoded"]                        # (None: every record was clean)
        parts = [] if decoded is None else [decoded.dead_letters]
        if rejected is not None:
            parts.append(rejected_as_dead_letters(rejected))
        dead = None
        if parts:
            dead = parts[0]
            for more in parts[1:]:
                dead = dead.unionByName(more)
            dead = dead.withColumn("dataset", F.lit(s.dataset)).withColumn("dead_at", F.current_timestamp())
        if isinstance(stats, dict) and "dead_reasons" in stats:    # counted already: no pass when there are none
            report.dead_reasons = dict(stats["dead_reasons"])
        elif dead is not None:
            dead = dead.persist(StorageLevel.MEMORY_AND_DISK)
            reasons = dead.groupBy(F.regexp_replace("reason", _REASON_DETAIL, "").alias("r")).count().collect()
            report.dead_reasons = {r["r"]: r["count"] for r in reasons}
        report.dead_letters = sum(report.dead_reasons.values())
        if report.dead_letters and dead is not None:
            dead.write.mode("overwrite").parquet(f"{s.dead_letter.rstrip('/')}/batch_id={batch_id}")
        mark = report.phase("dead letters", mark)

        save_state(stats["newest"])
        mark = report.phase("state", mark)

        if self.alerter is not None:
            flagged = anomalies(list(self.alert_columns))
            if flagged:
                published = self.alerter.publish(flagged, scope=str(batch_id))
                report.alerts_sent, report.alerts_skipped = published.sent, published.skipped
                report.alerts_failed = published.failed
            report.phase("alerts", mark)
        _maybe_kill("after-alerts", batch_id)

        report.records = report.scored + report.dead_letters
        for df in (scored, dead, decoded.records if decoded is not None else None):
            if df is not None:
                df.unpersist()   # a no-op for frames that were not persisted
        cleanup()
        report.seconds = time.time() - started
        self.reports.append(report)
        if self.on_batch:
            self.on_batch(report)

    # -- engine 1: the batch feature function over a history snapshot (any data set)
    def _history_features(self, spark: SparkSession, decoded, batch_id: int, report: BatchReport, _sink, _batch_df):
        """Run the batch feature function over the history snapshot + the batch (Spark jobs)."""
        s = self.s
        mark = time.time()
        canonical = list(decoded.canonical)
        id_col = decoded.id_column
        history, max_seen = self._history_before(spark, batch_id)
        watermark = None
        if max_seen is not None:
            watermark = max_seen - dt.timedelta(seconds=s.allowed_lateness_seconds)
        accepted, rejected = split_late_and_duplicates(decoded.valid, history, id_column=id_col, watermark=watermark)
        accepted = accepted.persist(StorageLevel.MEMORY_AND_DISK)
        batch_events = accepted.select(*canonical)
        combined = batch_events if history is None else history.select(*canonical).unionByName(batch_events)
        features = self.transform(combined)
        batch_keys = accepted.select(id_col, *CARRIED_COLUMNS[:1])   # id + arrival_time
        features = features.join(batch_keys, id_col, "inner")
        report.phase("decode+features", mark)

        def save_state(batch_newest) -> None:
            # The next batch's history: everything accepted so far within the feature lookback of
            # the newest event (the max event time seen is always kept, so it also carries the watermark).
            new_history = combined
            newest = max([t for t in (max_seen, batch_newest) if t is not None], default=None)
            if newest is not None:
                keep_from = newest - dt.timedelta(seconds=s.history_seconds + s.allowed_lateness_seconds)
                new_history = new_history.where(F.col("event_time") >= F.lit(keep_from).cast("timestamp"))
            snapshot = f"{self.history_root}/batch_id={batch_id}"
            new_history.write.mode("overwrite").parquet(snapshot)
            self._fs.write_text(f"{snapshot}/_max_event_time", newest.isoformat() if newest else "")
            self._prune_history(batch_id)

        return features, rejected, save_state, accepted.unpersist, None

    # -- engine 2: incremental features from per-entity state in driver memory
    def _incremental_features(self, spark: SparkSession, decoded, batch_id: int, report: BatchReport, sink,
                              batch_df: DataFrame):
        """Features from the in-memory state (rebuilt from the sink's committed rows when needed)."""
        s = self.s
        inc = self.incremental
        mark = time.time()
        state = self._state_before(spark, batch_id, sink)
        mark = report.phase("state", mark)
        id_col = decoded.id_column
        events, raw, decoded_left, spark_reasons = self._decode_on_driver(spark, batch_df)
        mark = report.phase("decode", mark)
        reason = pd.Series(None, index=events.index, dtype=object)
        # the earliest good record of an id in the batch keeps it (first in the input on equal times)
        order = np.lexsort((events["_order"].to_numpy(), events["ts"].to_numpy()))
        repeated = np.zeros(len(events), bool)
        repeated[order] = events[id_col].iloc[order].duplicated().to_numpy()
        reason[repeated] = f"duplicate {id_col}"
        if state.max_seen_us is not None:
            watermark_us = state.max_seen_us - s.allowed_lateness_seconds * 1_000_000
            watermark = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=watermark_us)
            reason[(events["ts"].to_numpy() < watermark_us) & reason.isna().to_numpy()] = \
                f"late (event_time before the watermark {watermark.isoformat()})"
        seen = state.seen_ids(events[id_col])
        reason[seen & reason.isna().to_numpy()] = f"duplicate {id_col} (already processed)"
        bad = reason.notna().to_numpy()
        accepted = events[~bad].drop(columns=["_order"]).reset_index(drop=True)
        rejected = None
        if bad.any():    # dead letters with their raw payloads, from the rows collected already
            rows = raw.iloc[events.loc[bad, "_order"].to_numpy()]
            dead_pdf = pd.DataFrame({"payload": rows["payload"].astype(object).to_numpy(),
                                     REASON: reason[bad].astype(object).to_numpy(),
                                     "_arrival_us": rows["_arrival_us"].to_numpy(np.float64),
                                     "record_source": rows["record_source"].astype(object).to_numpy()})
            rejected = spark.createDataFrame(dead_pdf, "payload string, reason string, _arrival_us double, "
                                                       "record_source string") \
                .select("payload", REASON, F.timestamp_micros(F.col("_arrival_us").cast("long")).alias("arrival_time"),
                        "record_source")
        feats = state.features(accepted)
        frame = pd.concat([accepted, feats.reset_index(drop=True)], axis=1)

        def features():    # for a Spark scorer only: a driver-local one takes ``frame`` as it is
            return inc.to_spark(spark, frame)

        report.phase("features", mark)

        rows = accepted[list(inc.state_columns)]
        newest = int(rows["ts"].max()) if len(rows) else None
        max_seen = max([v for v in (state.max_seen_us, newest) if v is not None], default=None)

        def save_state(_batch_newest) -> None:
            state.add(rows)
            self._state, self._state_batch = state, batch_id

        dead_reasons = pd.concat([spark_reasons, reason[bad]]).astype(str) \
            .str.replace(_REASON_DETAIL, "", regex=True).value_counts()
        known = {"n": len(accepted), "q": None, "newest": None, "commit": {"max_seen_us": max_seen}, "frame": frame,
                 "dead_reasons": {str(k): int(v) for k, v in dead_reasons.items()}, "decoded": decoded_left}
        if len(accepted):
            arrival = accepted["_arrival_us"].dropna().to_numpy(np.float64)
            known["q"] = [float(np.quantile(arrival, q)) for q in (0.5, 0.05, 0.0)] if len(arrival) else None
            known["newest"] = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=newest)
        return features, rejected, save_state, lambda: None, known

    def _decode_on_driver(self, spark: SparkSession, batch_df: DataFrame):
        """(good events with ``_arrival_us`` and ``_order``, the raw rows, the Spark-decoded left-overs, their reasons).

        One Arrow transfer brings the raw payloads to the driver; clean records are decoded there
        (ingest/fastdecode.py) and only the others go through the Spark decoder, which judges
        them exactly as the batch path does. ``_order`` is a record's position in the batch.
        """
        from ingest.fastdecode import decode_clean_transactions

        s = self.s
        inc = self.incremental
        raw = batch_df.select("payload", F.unix_micros("arrival_time").alias("_arrival_us"),
                              "record_source").toPandas()
        payloads = raw["payload"].astype(object).tolist()
        events, clean = decode_clean_transactions(payloads, schema_conf=s.schema_conf,
                                                  max_record_bytes=s.max_record_bytes)
        events["_arrival_us"] = raw["_arrival_us"].to_numpy(np.float64)[clean]
        events["_order"] = np.flatnonzero(clean)
        decoded_left, spark_reasons = None, pd.Series([], dtype=object)
        if not clean.all():
            left = raw[~clean]
            left_pdf = pd.DataFrame({
                "payload": left["payload"].astype(object).to_numpy(),
                "payload_bytes": [len(p.encode("utf-8")) if isinstance(p, str) else 0 for p in left["payload"]],
                "_arrival_us": left["_arrival_us"].to_numpy(np.float64),
                "record_source": left["record_source"].astype(object).to_numpy()})
            left_df = spark.createDataFrame(left_pdf, "payload string, payload_bytes int, _arrival_us double, "
                                                      "record_source string").select(
                "payload", "payload_bytes", F.timestamp_micros(F.col("_arrival_us").cast("long")).alias("arrival_time"),
                "record_source")
            decoded_left = decode_records(left_df, dataset=s.dataset, schema_conf=s.schema_conf,
                                          max_record_bytes=s.max_record_bytes, dedupe=False)
            # no shuffle in the plan (dedupe=False), so rows come back in the order they went in
            judged = decoded_left.records.select(*inc.to_state_columns(),
                                                 F.unix_micros("arrival_time").alias("_arrival_us"),
                                                 F.col(REASON)).toPandas()
            ok = judged[REASON].isna().to_numpy()
            spark_reasons = judged.loc[~ok, REASON]
            more = judged[ok].drop(columns=[REASON])
            more["_arrival_us"] = more["_arrival_us"].astype(np.float64)
            more["_order"] = np.flatnonzero(~clean)[ok]
            events = pd.concat([events, more], ignore_index=True)
        return events.reset_index(drop=True), raw, decoded_left, spark_reasons

    def _state_before(self, spark: SparkSession, batch_id: int, sink: ExactlyOnceSink):
        """The incremental state as of the end of batch ``batch_id - 1``.

        Kept in memory between micro-batches. After a restart it is rebuilt from the sink: the
        rows of the committed batches before this one within the history window (the sink holds
        every accepted event) and the max event time seen, from the latest commit record.
        """
        if self._state is not None and self._state_batch == batch_id - 1:
            return self._state
        inc = self.incremental
        state = inc.new_state()
        earlier = [i for i in sink.committed_ids() if i < batch_id]
        if earlier:
            state.max_seen_us = sink.commit_info(earlier[-1]).get("max_seen_us")
            rows = self._sink_rows(spark, batch_id, inc)
            if rows is not None:
                if state.max_seen_us is None:     # committed by the Spark engine: no watermark kept
                    newest = rows.agg(F.max(F.unix_micros("event_time"))).first()[0]
                    state.max_seen_us = None if newest is None else int(newest)
                cutoff = state.cutoff_us()
                if cutoff is not None:
                    cutoff_time = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=cutoff)
                    rows = rows.where((F.col("date") >= F.lit(cutoff_time.date()))
                                      & (F.unix_micros("event_time") >= F.lit(cutoff)))
                    state.frame = rows.select(*inc.to_state_columns()).toPandas()[list(inc.state_columns)]
                    state.prune()
        self._state, self._state_batch = state, batch_id - 1
        return state

    def _sink_rows(self, spark: SparkSession, batch_id: int, inc):
        """The sink's committed rows of batches before ``batch_id`` (None when it holds no file yet)."""
        from pyspark.errors import AnalysisException

        try:
            rows = spark.read.parquet(self.s.output)
        except AnalysisException:      # nothing written yet: no schema to infer
            return None
        missing = [c for c in ("batch_id", "date", *inc.source_columns) if c not in rows.columns]
        if missing:
            raise StreamConfigError(f"the sink {self.s.output} lacks column(s) {', '.join(missing)}: the incremental "
                                    "engine rebuilds its history from the sink, so the scorer must keep them")
        return rows.where(F.col("batch_id") < F.lit(batch_id))


# --------------------------------------------------------------------------- driver-local micro-batches

def local_feature_frame(frame: pd.DataFrame, inc) -> pd.DataFrame:
    """The incremental engine's batch frame as the rows ``inc.to_spark`` would give, in pandas.

    Same columns, order and values: times from epoch microseconds (UTC), ``label`` a nullable
    int, ``date`` from the engine's ``unix_day``, ``arrival_time`` from ``_arrival_us``.
    """
    from features.transactions import transaction_feature_columns

    names = [c for c in transaction_feature_columns(inc.windows_days) if c != "amount"]
    label = frame["label"].to_numpy(np.float64)
    out = pd.DataFrame({
        "transaction_id": frame["transaction_id"].astype(object).to_numpy(),
        "event_time": pd.to_datetime(frame["ts"].to_numpy(np.int64), unit="us", utc=True),
        "customer_id": frame["customer_id"].astype(object).to_numpy(),
        "terminal_id": frame["terminal_id"].astype(object).to_numpy(),
        "amount": frame["amount"].to_numpy(np.float64),
        "label": pd.array(label, dtype="Float64").astype("Int32"),    # NaN: unknown (null)
    })
    out["date"] = (np.datetime64("1970-01-01", "D") + frame["unix_day"].to_numpy(np.int64).astype("timedelta64[D]"))
    for c in names:
        out[c] = frame[c].to_numpy()
    arrival = frame["_arrival_us"].to_numpy(np.float64)
    out["arrival_time"] = pd.to_datetime(np.where(np.isnan(arrival), np.nan, arrival), unit="us", utc=True)
    return out


_ARROW_TYPES = {"reasons": "list<string>", "rcf_version": "string", "logistic_version": "string",
                "is_anomaly": "bool", "hour": "int32", "batch_id": "int64", "date": "date32", "label": "int32"}


def arrow_table(frame: pd.DataFrame):
    """``frame`` as a ``pyarrow.Table`` with the types Spark gives the same columns (NaN -> null)."""
    import pyarrow as pa

    named = {"list<string>": pa.list_(pa.string()), "string": pa.string(), "bool": pa.bool_(),
             "int32": pa.int32(), "int64": pa.int64(), "date32": pa.date32()}
    arrays, names = [], []
    for name in frame.columns:
        col = frame[name]
        kind = _ARROW_TYPES.get(name)
        if kind == "date32":
            array = pa.array(col.to_numpy("datetime64[D]"), pa.date32())
        elif kind == "list<string>":      # from Python lists (an empty column has no list dtype)
            array = pa.array(col.tolist(), named[kind])
        elif kind is not None:
            array = pa.array(col, named[kind], from_pandas=True)
        elif col.dtype == object or str(col.dtype) in ("str", "string"):
            array = pa.array(col, pa.string(), from_pandas=True)
        elif str(col.dtype).startswith("datetime64"):
            array = pa.array(col, pa.timestamp("us", tz="UTC"), from_pandas=True)
        else:
            array = pa.array(col, from_pandas=True)
        arrays.append(array)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def local_anomalies(scored: pd.DataFrame, cols: Sequence[str]) -> list[dict]:
    """The flagged rows' ``cols`` as plain Python values, as ``Row.asDict`` gives them from Spark."""
    wanted = [c for c in cols if c in scored.columns]
    out = []
    for record in scored.loc[scored["is_anomaly"].to_numpy(bool), wanted].to_dict("records"):
        for k, v in record.items():
            if isinstance(v, pd.Timestamp):
                record[k] = v.tz_convert(None).to_pydatetime() if v.tzinfo else v.to_pydatetime()
            elif isinstance(v, float) and v != v:
                record[k] = None
            elif v is pd.NA:
                record[k] = None
            elif isinstance(v, np.generic):
                record[k] = v.item()
        out.append(record)
    return out


def _maybe_kill(point: str, batch_id: int) -> None:
    """Fault injection for the exactly-once tests: ZEN_STREAM_KILL_AT=<point>:<batch id>."""
    if os.environ.get("ZEN_STREAM_KILL_AT") == f"{point}:{batch_id}":
        os.kill(os.getpid(), signal.SIGKILL)
