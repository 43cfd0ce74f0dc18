"""The stream's two feature engines, each turning a payload micro-batch into a :class:`PreparedBatch`.

* :class:`HistoryEngine` (any data set): decodes the batch with Spark, reads the *history*
  snapshot of the latest batch before ``N`` (``<checkpoint>/history``: the accepted events of the
  last ``history_seconds`` behind the max event time seen), rejects events older than the
  watermark (``late``) or already in the history (``duplicate``), and runs the batch feature
  function on history + batch, keeping the batch's rows (so a record gets exactly the features -
  and the score - the batch job gives it). After the sink commit it writes the next snapshot.
* :class:`IncrementalEngine` (data sets with an incremental twin: transactions): one Arrow
  transfer brings the raw payloads to the driver, clean records are decoded there
  (ingest/fastdecode.py; the others go through the Spark decoder, which gives the reasons),
  in-batch duplicates, late and already-processed events are marked there, and the features come
  from the in-memory state (features/incremental.py). The batch stays on the driver, so a scorer
  with a pandas twin scores it there and the sink appends it from an Arrow table typed as Spark
  types the same columns; the pandas conversion and Arrow typing for that are below. Every one
  of these is tested equal to the history engine.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.datasets import dataset as dataset_named
from ingest.decode import (CARRIED_COLUMNS, Decoded, RecordSchema, decode_records, future_reason,
                           split_late_and_duplicates)
from ingest.validation import REASON
from runtime import fs
from runtime.storage import StorageError, read_table
from runtime.sources import StreamConfigError
from streaming.batch import BatchReport, BatchStats, PreparedBatch, StreamSettings
from streaming.sink import DeltaSink

REASON_DETAIL = r" \(.*"     # "late (event_time before ...)" counts as "late"
_EPOCH = dt.datetime(1970, 1, 1)


def warm_rows(spark: SparkSession, s: StreamSettings, *, start_us: int, end_us: int) -> DataFrame | None:
    """The batch feature table's events with ``start_us <= event time < end_us`` (epoch
    microseconds), or None when warm start is off or the table is not there (a cold start).

    A new stream seeds its history with them, so its first events get the features the batch
    job gives them (the feature table holds each event's canonical columns) instead of features
    over an empty history - the burst of alerts a cold stream starts with.
    """
    if not s.warm_from:
        return None
    try:
        table = read_table(spark, s.warm_from, s.warm_format)
    except StorageError:
        return None
    if "date" in table.columns:      # partition pruning
        first, last = (_EPOCH + dt.timedelta(microseconds=v) for v in (start_us, end_us))
        table = table.where(F.col("date").between(F.lit(first.date()), F.lit(last.date())))
    us = F.unix_micros("event_time")
    return table.where((us >= F.lit(start_us)) & (us < F.lit(end_us)))


def decode_payloads(payload_df: DataFrame, *, dataset: str, schema_conf: Mapping, max_record_bytes: int,
                    dedupe: bool = True) -> Decoded:
    """:func:`ingest.decode.decode_records` with the record fields and the validator of ``dataset``."""
    described = dataset_named(dataset)
    fields, numeric = described.record_fields(schema_conf)
    return decode_records(payload_df, schema=RecordSchema(fields, numeric, described.event_id),
                          validate=lambda records: described.validate(records, schema_conf, dedupe=dedupe),
                          max_record_bytes=max_record_bytes)


def _batch_ids(names: Sequence[str]) -> list[int]:
    ids = []
    for name in names:
        match = re.fullmatch(r"batch_id=(\d+)", name)
        if match:
            ids.append(int(match.group(1)))
    return sorted(ids)


# --------------------------------------------------------------------------- the history engine


class HistoryEngine:
    """The batch feature function ``transform`` over a history snapshot + the batch (Spark jobs)."""

    def __init__(self, settings: StreamSettings, transform: Callable[[DataFrame], DataFrame]):
        self.s = settings
        self.transform = transform

    @property
    def history_root(self) -> str:
        return f"{self.s.checkpoint.rstrip('/')}/history"

    def _history_before(self, spark: SparkSession, batch_id: int):
        """(the latest complete history snapshot before ``batch_id``, max event time seen) or (None, None)."""
        ids = [i for i in _batch_ids(fs.list_dirs(self.history_root)) if i < batch_id
               and fs.exists(f"{self.history_root}/batch_id={i}/_max_event_time")]
        if not ids:
            return None, None
        snapshot = f"{self.history_root}/batch_id={ids[-1]}"
        text = fs.read_text(f"{snapshot}/_max_event_time").strip()
        return spark.read.parquet(snapshot), (dt.datetime.fromisoformat(text) if text else None)

    def _prune_history(self, batch_id: int) -> None:
        # Keep the snapshot before this batch: a re-run of this batch (crash before Spark's own
        # commit) reads it again.
        ids = [i for i in _batch_ids(fs.list_dirs(self.history_root)) if i < batch_id]
        for old in ids[:-1]:
            fs.delete(f"{self.history_root}/batch_id={old}")

    def prepare(self, batch_df: DataFrame, batch_id: int, report: BatchReport, _sink: DeltaSink
                ) -> PreparedBatch:
        s = self.s
        spark = batch_df.sparkSession
        mark = time.time()
        # read several times below: decoded once
        decoded = decode_payloads(batch_df, dataset=s.dataset, schema_conf=s.schema_conf,
                                  max_record_bytes=s.max_record_bytes).persist(StorageLevel.MEMORY_AND_DISK)
        canonical = list(decoded.canonical)
        id_col = decoded.id_column
        history, max_seen = self._history_before(spark, batch_id)
        watermark = None
        if max_seen is not None:
            watermark = max_seen - dt.timedelta(seconds=s.allowed_lateness_seconds)
        accepted, rejected = split_late_and_duplicates(decoded.valid, history, id_column=id_col, watermark=watermark,
                                                       max_skew_seconds=s.max_event_skew_seconds)
        accepted = accepted.persist(StorageLevel.MEMORY_AND_DISK)
        if history is None and s.warm_from:     # a new stream: its history starts with the batch table's
            first_us = accepted.agg(F.min(F.unix_micros("event_time"))).first()[0]
            if first_us is not None:
                seeded = warm_rows(spark, s, start_us=first_us - s.history_seconds * 1_000_000, end_us=first_us)
                history = None if seeded is None else seeded.select(*canonical)
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
            fs.write_text(f"{snapshot}/_max_event_time", newest.isoformat() if newest else "")
            self._prune_history(batch_id)

        def cleanup() -> None:
            accepted.unpersist()
            decoded.records.unpersist()

        return PreparedBatch(features=lambda: features, save_state=save_state, cleanup=cleanup,
                             decoded=decoded, rejected=rejected)


# --------------------------------------------------------------------------- the incremental engine


class IncrementalEngine:
    """Features from per-entity state in driver memory (``incremental``: a features/incremental.py twin)."""

    def __init__(self, settings: StreamSettings, incremental):
        self.s = settings
        self.incremental = incremental
        self._state = None
        self._state_batch: int | None = None
        self._fresh = False                     # no earlier commit: the history may be seeded (warm start)
        self._warm_until_us: int | None = None  # the seeded history's end (kept in every commit, for a rebuild)

    def prepare(self, batch_df: DataFrame, batch_id: int, report: BatchReport, sink: DeltaSink
                ) -> PreparedBatch:
        """Features from the in-memory state (rebuilt from the sink's rows when needed)."""
        s = self.s
        inc = self.incremental
        spark = batch_df.sparkSession
        mark = time.time()
        state = self._state_before(batch_id, sink)
        mark = report.phase("state", mark)
        id_col = inc.id_column
        events, raw, decoded_left, spark_reasons = self._decode_on_driver(spark, batch_df)
        mark = report.phase("decode", mark)
        reason = pd.Series(None, index=events.index, dtype=object)
        # the earliest good record of an id in the batch keeps it (first in the input on equal times)
        order = np.lexsort((events["_order"].to_numpy(), events["ts"].to_numpy()))
        repeated = np.zeros(len(events), bool)
        repeated[order] = events[id_col].iloc[order].duplicated().to_numpy()
        reason[repeated] = f"duplicate {id_col}"
        if s.max_event_skew_seconds is not None:     # dated after its arrival: never moves the watermark
            arrival_us = raw["_arrival_us"].to_numpy(np.float64)[events["_order"].to_numpy()]
            future = events["ts"].to_numpy() > arrival_us + s.max_event_skew_seconds * 1_000_000
            reason[future & reason.isna().to_numpy()] = future_reason(s.max_event_skew_seconds)
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
        if self._fresh and len(accepted):
            self._seed(spark, state, int(accepted["ts"].min()))
        feats = state.features(accepted)
        frame = pd.concat([accepted, feats.reset_index(drop=True)], axis=1)
        report.phase("features", mark)

        rows = accepted[list(inc.state_columns)]
        newest = int(rows["ts"].max()) if len(rows) else None
        max_seen = max([v for v in (state.max_seen_us, newest) if v is not None], default=None)

        def save_state(_batch_newest) -> None:
            state.add(rows)
            self._state, self._state_batch = state, batch_id

        dead_reasons = pd.concat([spark_reasons, reason[bad]]).astype(str) \
            .str.replace(REASON_DETAIL, "", regex=True).value_counts()
        quantiles, newest_time = None, None
        if len(accepted):
            arrival = accepted["_arrival_us"].dropna().to_numpy(np.float64)
            quantiles = [float(np.quantile(arrival, q)) for q in (0.5, 0.05, 0.0)] if len(arrival) else None
            newest_time = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=newest)
        return PreparedBatch(
            features=lambda: inc.to_spark(spark, frame),     # for a Spark scorer only
            pandas=lambda: local_feature_frame(frame, inc),
            save_state=save_state, cleanup=lambda: None, decoded=decoded_left, rejected=rejected,
            stats=BatchStats(len(accepted), quantiles, newest_time),
            commit={"max_seen_us": max_seen, "warm_until_us": self._warm_until_us},
            dead_reasons={str(k): int(v) for k, v in dead_reasons.items()})

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
            decoded_left = decode_payloads(left_df, dataset=s.dataset, schema_conf=s.schema_conf,
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

    def _state_before(self, batch_id: int, sink: DeltaSink):
        """The incremental state as of the end of batch ``batch_id - 1``.

        Kept in memory between micro-batches. After a restart it is rebuilt from the sink: the
        rows of the batches before this one within the history window (the sink holds every
        accepted event; a re-run batch's own rows are left out by their ``batch_id``) and the
        max event time seen, from the newest earlier commit's metadata (see streaming/sink.py).
        """
        if self._state is not None and self._state_batch == batch_id - 1:
            return self._state
        inc = self.incremental
        state = inc.new_state()
        earlier = sink.commit_before(batch_id)
        self._fresh = earlier is None
        if earlier is not None:
            state.max_seen_us = earlier.get("max_seen_us")
            self._warm_until_us = earlier.get("warm_until_us")
            rows = self._sink_rows(sink, batch_id)
            if rows is not None:
                if state.max_seen_us is None:     # committed by the history engine: no watermark kept
                    newest = rows.agg(F.max(F.unix_micros("event_time"))).first()[0]
                    state.max_seen_us = None if newest is None else int(newest)
                cutoff = state.cutoff_us()
                if cutoff is not None:
                    cutoff_time = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=cutoff)
                    rows = rows.where((F.col("date") >= F.lit(cutoff_time.date()))
                                      & (F.unix_micros("event_time") >= F.lit(cutoff)))
                    state.frame = rows.select(*inc.to_state_columns()).toPandas()[list(inc.state_columns)]
                    if self._warm_until_us is not None and cutoff < self._warm_until_us:
                        seeded = warm_rows(rows.sparkSession, self.s, start_us=cutoff, end_us=self._warm_until_us)
                        if seeded is not None:
                            state.frame = pd.concat([seeded.select(*inc.to_state_columns()).toPandas()[
                                list(inc.state_columns)], state.frame], ignore_index=True)
                    state.prune()
        self._state, self._state_batch = state, batch_id - 1
        return state

    def _seed(self, spark: SparkSession, state, first_us: int) -> None:
        """A new stream's history: the batch table's events before its first event, within the window."""
        self._fresh = False
        seeded = warm_rows(spark, self.s, start_us=first_us - state.keep_seconds * 1_000_000, end_us=first_us)
        if seeded is None:
            return
        inc = self.incremental
        state.frame = seeded.select(*inc.to_state_columns()).toPandas()[list(inc.state_columns)]
        self._warm_until_us = first_us

    def _sink_rows(self, sink: DeltaSink, batch_id: int):
        """The sink's rows of batches before ``batch_id`` (None when the table does not exist yet)."""
        rows = sink.rows()
        if rows is None:
            return None
        missing = [c for c in ("batch_id", "date", *self.incremental.source_columns) if c not in rows.columns]
        if missing:
            raise StreamConfigError(f"the sink {sink.path} lacks column(s) {', '.join(missing)}: the incremental "
                                    "engine rebuilds its history from the sink, so the scorer must keep them")
        return rows.where(F.col("batch_id") < F.lit(batch_id))


# --------------------------------------------------------------------------- driver-local frames


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
