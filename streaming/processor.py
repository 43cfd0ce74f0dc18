"""The stream's ``foreachBatch`` function: features, score, commit once, dead letters, alerts.

Per micro-batch ``N`` the :class:`MicroBatchProcessor`

1. has its feature engine (streaming/engines.py) decode the records (dead letters with a reason
   for anything unusable), reject late and duplicate events and compute the batch's features;
2. scores them with the scorer obtained for this batch (on the driver when the engine kept the
   batch there and the scorer is a :class:`scoring.scorer.FrameScorer`, which has a pandas twin);
3. appends them to the sink's Delta table with Delta's idempotent writes (streaming/sink.py:
   ``txnAppId`` = the query's, ``txnVersion`` = ``N``; Delta skips a batch it holds already);
4. appends the dead letters to their own Delta table the same way, and keeps the engine's state
   for the next batch (idempotent);
5. publishes alerts with a sent-keys ledger at ``<checkpoint>/alerts_sent/N``, and retries the
   alerts earlier batches could not deliver (streaming/alerts.py: none lost, none sent twice).

Spark re-runs batch ``N`` after a crash (its offset log), and every step above either is
skipped (Delta's txn check, the ledger) or rewrites the same content, so a ``kill -9`` anywhere
never duplicates a row or an alert. A re-run may hold *more* records than the attempt that
committed (a Kinesis connector decides a batch's end while it reads): the sinks then top the
batch up with the rows the first attempt did not write (streaming/sink.py: by event id for the
scored rows, by ``record_source`` + ``payload`` - the Kinesis stream, partition key and sequence
number - for the dead letters), the alerts of a re-run come from the sink's rows of the batch
(so the extra records' alerts go out once and the ledger skips the earlier ones), and the
engine's state is rebuilt before the re-run from the batches before ``N``, so it counts the extra
records once. The tests prove it by passing ``fault``, called at the points ``after-sink``,
``after-alerts`` and ``before-commit`` (the end of the batch: next comes Spark's own commit) of
every batch.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.datasets import dataset as dataset_named
from ingest.decode import rejected_as_dead_letters
from scoring.scorer import FrameScorer
from streaming.batch import BatchReport, BatchStats, PreparedBatch, StreamSettings
from streaming.engines import (REASON_DETAIL, HistoryEngine, IncrementalEngine, arrow_table, local_anomalies)
from streaming.sink import SINK_PARTITIONS, DeltaSink, stream_app_id, with_batch_id

SparkScore = Callable[[DataFrame], DataFrame]  # a stream.scorer hook: Spark frames only
FAULT_POINTS = ("after-sink", "after-alerts", "before-commit")   # where ``fault`` is called, in order
# What tells a dead letter from another when a re-run batch is topped up: its raw record and where it
# came from (a Kinesis record's stream/partition key/sequence number, a landing file's path).
DEAD_LETTER_KEY = ("record_source", "payload")


class MicroBatchProcessor:
    """The ``foreachBatch`` function: decode, features over history, score, commit, alert.

    The streaming frame must already be a payload frame (``ingest.decode.payloads_from_*`` applied
    to the source: the file source's ``_metadata`` is gone inside foreachBatch).

    ``transform`` is the batch feature function (canonical events -> features, same rows) of the
    history engine; ``incremental`` (or None) an incremental twin of it (features/incremental.py),
    which selects the driver-local engine. ``scorer_factory()`` is called at the start of every
    micro-batch and returns a :class:`scoring.scorer.FrameScorer` (the champions' ``Scorer``) or a
    ``stream.scorer`` hook's
    ``score(features_df) -> scored_df`` (so a new champion is picked up without a restart);
    ``alerter`` (or None) has ``publish(events, scope)`` like
    :class:`streaming.alerts.SnsAlerter`. ``fault(point, batch_id)`` (tests only) is called at
    each fault point. ``persist_input`` keeps the batch frame for the batch's several actions
    (a Kinesis source; the landing source re-reads cheap local files instead).
    """

    def __init__(self, settings: StreamSettings, *, transform: Callable[[DataFrame], DataFrame],
                 scorer_factory: Callable[[], FrameScorer | SparkScore], alerter=None,
                 on_batch: Callable[[BatchReport], None] | None = None,
                 alert_columns: Sequence[str] = (), incremental=None,
                 fault: Callable[[str, int], None] | None = None, persist_input: bool = False):
        self.s = settings
        self.persist_input = persist_input
        self.engine = (HistoryEngine(settings, transform) if incremental is None
                       else IncrementalEngine(settings, incremental))
        self.scorer_factory = scorer_factory
        self.alerter = alerter
        self.on_batch = on_batch
        self.alert_columns = tuple(alert_columns)
        self.fault = fault
        self.reports: list[BatchReport] = []
        self._sinks: tuple[DeltaSink, DeltaSink] | None = None
        self.event_key = (dataset_named(settings.dataset).event_id,)    # tops up a re-run batch's scored rows

    def sinks(self, spark) -> tuple[DeltaSink, DeltaSink]:
        """(scored events, dead letters): one :class:`DeltaSink` each for the life of the query."""
        if self._sinks is None:
            app = stream_app_id(self.s.checkpoint)
            self._sinks = (DeltaSink(spark, self.s.output, app, partition_by=SINK_PARTITIONS),
                           DeltaSink(spark, self.s.dead_letter, f"{app}-dead-letters"))
        return self._sinks

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        """One micro-batch; with ``persist_input`` the batch frame is persisted first and released
        at the end (a Kinesis frame is read again from the stream by every action otherwise).
        """
        if not self.persist_input:
            self._process(batch_df, batch_id)
            return
        batch_df = batch_df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            self._process(batch_df, batch_id)
        finally:
            batch_df.unpersist()

    def _process(self, batch_df: DataFrame, batch_id: int) -> None:
        started = time.time()
        report = BatchReport(batch_id)
        score = self.scorer_factory()
        sink, _ = self.sinks(batch_df.sparkSession)
        batch = self.engine.prepare(batch_df, batch_id, report, sink)
        mark = time.time()
        if batch.pandas is not None and isinstance(score, FrameScorer):
            # the micro-batch is on the driver already: score it there, append it from an Arrow table
            scored_local = score.pandas(batch.pandas())
            scored_local["hour"] = scored_local["event_time"].dt.hour.astype("int32")
            scored_local["batch_id"] = np.int64(batch_id)
            report.scored = len(scored_local)
            mark = report.phase("score", mark)
            commit = sink.write_arrow(arrow_table(scored_local), batch_id, extra=batch.commit, key=self.event_key)
            self._finish(batch_id, report, batch, batch.stats, commit, mark, started,
                         anomalies=lambda cols: local_anomalies(scored_local, cols))
            return
        scored = score(batch.features())
        if "date" not in scored.columns:
            scored = scored.withColumn("date", F.to_date("event_time"))
        scored = with_batch_id(scored.withColumn("hour", F.hour("event_time")), batch_id)
        if batch.stats is None or self.alerter is not None:   # read more than once: keep it
            scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        # count, arrival-time quantiles (for the latency) and newest event time; the incremental
        # engine knows them already, the other takes one pass over the scored rows
        stats = batch.stats
        if stats is None:
            row = scored.agg(
                F.count(F.lit(1)).alias("n"),
                F.percentile_approx(F.unix_micros("arrival_time"), [0.5, 0.05, 0.0], 10000).alias("q"),
                F.max("event_time").alias("newest"),
            ).first()
            stats = BatchStats(row["n"], row["q"], row["newest"])
        report.scored = stats.n
        mark = report.phase("score", mark)

        commit = sink.write(scored, batch_id, extra=batch.commit, key=self.event_key)

        def anomalies(cols):
            wanted = [c for c in cols if c in scored.columns]
            return [row.asDict(recursive=True) for row in scored.where(F.col("is_anomaly")).select(*wanted).collect()]

        self._finish(batch_id, report, batch, stats, commit, mark, started, anomalies=anomalies, scored=scored)

    def _fault(self, point: str, batch_id: int) -> None:
        assert point in FAULT_POINTS, point
        if self.fault is not None:
            self.fault(point, batch_id)

    def _finish(self, batch_id: int, report: BatchReport, batch: PreparedBatch, stats: BatchStats, commit: dict,
                mark: float, started: float, *, anomalies, scored=None) -> None:
        """After the sink write: latency, dead letters, state, alerts, the report."""
        s = self.s
        report.sink_skipped = commit["skipped"]
        report.sink_topped_up = commit.get("topped_up", 0)
        committed_at = commit["committed_at"]
        if stats.n and stats.q is not None and committed_at is not None:
            q50, q05, q0 = (v / 1e6 if v is not None else None for v in stats.q)
            if q50 is not None:
                report.latency_p50_s = committed_at - q50
                report.latency_p95_s = committed_at - q05
                report.latency_max_s = committed_at - q0
        mark = report.phase("sink", mark)
        self._fault("after-sink", batch_id)

        parts = [] if batch.decoded is None else [batch.decoded.dead_letters]
        if batch.rejected is not None:
            parts.append(rejected_as_dead_letters(batch.rejected))
        dead = None
        if parts:
            dead = parts[0]
            for more in parts[1:]:
                dead = dead.unionByName(more)
            dead = dead.withColumn("dataset", F.lit(s.dataset)).withColumn("dead_at", F.current_timestamp())
        if batch.dead_reasons is not None:    # counted already: no pass when there are none
            report.dead_reasons = dict(batch.dead_reasons)
        elif dead is not None:
            dead = dead.persist(StorageLevel.MEMORY_AND_DISK)
            reasons = dead.groupBy(F.regexp_replace("reason", REASON_DETAIL, "").alias("r")).count().collect()
            report.dead_reasons = {r["r"]: r["count"] for r in reasons}
        report.dead_letters = sum(report.dead_reasons.values())
        if report.dead_letters and dead is not None:
            written = self.sinks(dead.sparkSession)[1].write(with_batch_id(dead, batch_id), batch_id,
                                                             key=DEAD_LETTER_KEY)
            report.dead_letters_topped_up = written["topped_up"]
        mark = report.phase("dead letters", mark)

        batch.save_state(stats.newest)
        mark = report.phase("state", mark)

        if self.alerter is not None:
            # a re-run batch alerts on what the sink holds for it: the first attempt's rows (the
            # ledger skips those sent already) and the rows topped up now
            flagged = (self._committed_anomalies(batch_id, commit) if commit["skipped"]
                       else anomalies(list(self.alert_columns)))
            # every batch publishes, with or without new alerts: it retries what earlier batches kept
            published = self.alerter.publish(flagged, scope=str(batch_id))
            report.alerts_sent, report.alerts_skipped = published.sent, published.skipped
            report.alerts_failed, report.alerts_retried = published.failed, published.retried
            report.alerts_pending, report.alerts_dead = published.pending, published.dead
            report.phase("alerts", mark)
        self._fault("after-alerts", batch_id)

        report.records = report.scored + report.dead_letters
        for df in (scored, dead):
            if df is not None:
                df.unpersist()   # a no-op for frames that were not persisted
        batch.cleanup()
        report.seconds = time.time() - started
        self.reports.append(report)
        if self.on_batch:
            self.on_batch(report)
        self._fault("before-commit", batch_id)

    def _committed_anomalies(self, batch_id: int, commit: dict) -> list[dict]:
        """The flagged rows the sink holds for batch ``batch_id`` (its ``alert_columns``)."""
        sink = self._sinks[0]
        rows = sink.batch_rows(batch_id, commit.get("partition_values"))
        if rows is None:
            return []
        wanted = [c for c in self.alert_columns if c in rows.columns]
        return [row.asDict(recursive=True) for row in rows.where(F.col("is_anomaly")).select(*wanted).collect()]
