"""A re-run micro-batch that holds MORE records than the attempt that committed it.

The Kinesis connectors decide what a micro-batch holds while they read it, so after a crash between
the sink's Delta commit and Spark's own commit the re-run of batch N can read records that arrived
meanwhile. The sinks top the batch up with exactly those rows (streaming/sink.py), once; the
alerts of the extra rows go out once; the feature state counts them once. Shown here on the sink
alone (delta-rs and Spark's writer, scored rows and dead letters) and on the whole micro-batch
processor (both feature engines), compared with a run that never crashed.
"""
import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from test_stream import BAD_RECORDS, MemoryStore, _same, deterministic_scorer, make_transactions, sink_commits

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def scored_rows(ids, days):
    """An Arrow table of sink rows: ``ids`` on the given days of March 2026 (the partition column)."""
    from streaming.engines import arrow_table

    events = pd.DataFrame({"transaction_id": ids,
                           "event_time": pd.to_datetime([f"2026-03-{d:02d} 10:00:00" for d in days], utc=True),
                           "amount": [float(i) for i in range(len(ids))],
                           "reasons": [["r"]] * len(ids)})
    events["date"] = events["event_time"].dt.tz_convert(None).to_numpy().astype("datetime64[D]")
    events["hour"] = events["event_time"].dt.hour.astype("int32")
    events["batch_id"] = 0
    return arrow_table(events)


@pytest.mark.parametrize("writer", ["delta-rs", "spark"])
def test_a_rerun_batch_with_more_rows_is_topped_up_once(tmp_path, spark, monkeypatch, writer):
    from streaming import sink as sink_module
    from streaming.sink import DeltaSink

    if writer == "spark":        # as for an s3a:// table: write_arrow goes through Spark's Delta writer
        monkeypatch.setattr(sink_module.fs, "local_path", lambda path: None)
    path = str(tmp_path / "sink")
    first = ["a1", "a2", "a3"]                      # days 1, 1, 2
    more = ["b1", "b2"]                              # day 2 (a partition batch 0 holds already) and day 3 (a new one)
    sink = DeltaSink(spark, path, "app-1", partition_by=("date", "hour"))
    done = sink.write_arrow(scored_rows(first, [1, 1, 2]), 0, extra={"max_seen_us": 1}, key=("transaction_id",))
    assert (done["skipped"], done["topped_up"]) == (False, 0)

    rerun = DeltaSink(spark, path, "app-1", partition_by=("date", "hour"))     # after a restart
    again = rerun.write_arrow(scored_rows(first + more, [1, 1, 2, 2, 3]), 0, extra={"max_seen_us": 2},
                              key=("transaction_id",))
    assert (again["skipped"], again["topped_up"]) == (True, 2)
    ids = sorted(r["transaction_id"] for r in rerun.rows().collect())
    assert ids == ["a1", "a2", "a3", "b1", "b2"], "the extra rows once, the first attempt's not repeated"
    assert sink_commits(path) == [(0, 3), (0, 2)], "the top-up is one commit of the missing rows"

    third = DeltaSink(spark, path, "app-1", partition_by=("date", "hour"))
    same = third.write_arrow(scored_rows(first + more, [1, 1, 2, 2, 3]), 0, extra={"max_seen_us": 2},
                             key=("transaction_id",))
    assert (same["skipped"], same["topped_up"]) == (True, 0)
    assert sink_commits(path) == [(0, 3), (0, 2)], "a re-run that finds every row in writes nothing"
    assert third.commit_before(1)["max_seen_us"] == 2, "the top-up's metadata is the batch's newest"
    assert third.last_batch() == 0
    # without a key a skipped batch is skipped whole (the behaviour before top-ups)
    assert third.write_arrow(scored_rows(["c1"], [4]), 0)["topped_up"] == 0
    assert third.rows().count() == 5
    # the next batch is an ordinary idempotent write again
    assert third.write_arrow(scored_rows(["c1"], [4]), 1, key=("transaction_id",))["skipped"] is False
    assert sink_commits(path)[-1] == (1, 1)


def test_dead_letters_of_a_rerun_batch_are_topped_up_by_record(tmp_path, spark):
    """Dead letters are told apart by where the record came from (a Kinesis stream/partition
    key/sequence number) and its raw text; an empty record's null payload matches itself."""
    from streaming.processor import DEAD_LETTER_KEY
    from streaming.sink import DeltaSink, with_batch_id

    def dead(rows):
        frame = spark.createDataFrame(rows, "payload string, reason string, arrival_time timestamp, "
                                            "record_source string")
        return with_batch_id(frame, 0)

    at = dt.datetime(2026, 3, 1)
    first = [("not json", "bad JSON", at, "tx/k1/101"), (None, "empty record", at, "tx/k1/102")]
    more = [("not json", "bad JSON", at, "tx/k2/205"),          # the same text, another record
            (None, "empty record", at, "tx/k2/206")]
    path = str(tmp_path / "dead")
    assert DeltaSink(spark, path, "app-dl").write(dead(first), 0, key=DEAD_LETTER_KEY)["topped_up"] == 0
    again = DeltaSink(spark, path, "app-dl").write(dead(first + more), 0, key=DEAD_LETTER_KEY)
    assert (again["skipped"], again["topped_up"]) == (True, 2)
    assert DeltaSink(spark, path, "app-dl").write(dead(first + more), 0, key=DEAD_LETTER_KEY)["topped_up"] == 0
    table = DeltaSink(spark, path, "app-dl").rows()
    assert sorted(r["record_source"] for r in table.collect()) == ["tx/k1/101", "tx/k1/102", "tx/k2/205", "tx/k2/206"]
    assert sink_commits(path) == [(0, 2), (0, 2)]


# --------------------------------------------------------------------------- the whole processor


class Crash(Exception):
    """Stands for a kill -9 at a fault point (the processor object is dropped after it)."""


class FakeSns:
    """publish_batch that accepts everything and keeps the event ids sent."""

    def __init__(self):
        self.sent = []

    def publish_batch(self, TopicArn, PublishBatchRequestEntries):
        self.sent.extend(e["MessageAttributes"]["event_id"]["StringValue"] for e in PublishBatchRequestEntries)
        return {"Successful": [{"Id": e["Id"]} for e in PublishBatchRequestEntries], "Failed": []}


def payload_frame(spark, lines):
    """A payload frame like ``payloads_from_kinesis`` gives: (text, sequence number) per record."""
    at = dt.datetime(2026, 4, 1)
    rows = [(text, len(text.encode()), at + dt.timedelta(seconds=seq), f"tx/key/{seq:06d}") for text, seq in lines]
    return spark.createDataFrame(rows, "payload string, payload_bytes int, arrival_time timestamp, record_source string")


@pytest.mark.parametrize("engine", ["incremental", "spark"])
def test_a_rerun_batch_with_more_records_ends_like_a_run_that_never_crashed(tmp_path, spark, engine):
    """Batch 0 crashes after its sink commit with records A, is re-run with A+B (crashes after its
    alerts) and with A+B+C (completes); batch 1 crashes before Spark's commit and is re-run. The
    sink, dead letters, alerts and batch 1's features (which rest on the state batch 0 left) equal
    those of one run with batch 0 = A+B+C and batch 1 = D."""
    from features.incremental import TransactionStreamFeatures
    from features.transactions import build_transaction_features, lookback_days
    from runtime.config import load_config
    from streaming.alerts import AlertFields, SentLedger, SnsAlerter
    from streaming.batch import StreamSettings
    from streaming.processor import MicroBatchProcessor

    config = load_config(ROOT / "conf" / "local.yaml", ["dataset=transactions"])
    feats = config["features"]["transactions"]
    records = make_transactions(110, seed=31)
    lines = [(json.dumps(r), i) for i, r in enumerate(records)]
    bad = [(text, 900 + i) for i, text in enumerate(BAD_RECORDS)]
    part_a, part_b, part_c = lines[:50] + bad[:1], lines[50:75] + bad[1:2], lines[75:85] + bad[2:]
    part_d = lines[85:]

    def transform(df):
        return build_transaction_features(df, windows_days=feats["windows_days"], delay_days=feats["delay_days"])

    def make(root, sns, store, fault=None):
        (root / "ckpt").mkdir(parents=True, exist_ok=True)
        (root / "ckpt" / "metadata").write_text(json.dumps({"id": "query-1"}))
        settings = StreamSettings(dataset="transactions", schema_conf=config["schema"]["transactions"],
                                  output=str(root / "sink"), checkpoint=str(root / "ckpt"),
                                  dead_letter=str(root / "dead"),
                                  history_seconds=lookback_days(feats["windows_days"], feats["delay_days"]) * 86400)
        alerter = SnsAlerter(sns, "arn:aws:sns:us-east-1:000000000000:alerts",
                             SentLedger(store, f"{root}/ckpt/alerts_sent"), dataset="transactions",
                             rate_per_second=1e6, sleep=lambda s: None)
        return MicroBatchProcessor(settings, transform=transform, scorer_factory=lambda: deterministic_scorer(config),
                                   alerter=alerter, alert_columns=AlertFields.for_dataset("transactions").columns(),
                                   incremental=TransactionStreamFeatures(**feats) if engine == "incremental" else None,
                                   fault=fault)

    def crash_at(point, batch_id):
        def fault(at, batch):
            if (at, batch) == (point, batch_id):
                raise Crash(point)
        return fault

    # the run that never crashed
    clean_root, clean_sns = tmp_path / "clean", FakeSns()
    clean = make(clean_root, clean_sns, MemoryStore())
    clean(payload_frame(spark, part_a + part_b + part_c), 0)
    clean(payload_frame(spark, part_d), 1)

    root, sns, store = tmp_path / "crashed", FakeSns(), MemoryStore()
    with pytest.raises(Crash):
        make(root, sns, store, crash_at("after-sink", 0))(payload_frame(spark, part_a), 0)
    assert sink_commits(root / "sink") == [(0, 50)] and not sns.sent
    with pytest.raises(Crash):
        make(root, sns, store, crash_at("after-alerts", 0))(payload_frame(spark, part_a + part_b), 0)
    assert sink_commits(root / "sink") == [(0, 50), (0, 25)], "batch 0 topped up with B's 25 events"
    alerted_before = list(sns.sent)
    assert alerted_before, "the first 75 events raise alerts"
    last = make(root, sns, store, crash_at("before-commit", 1))
    last(payload_frame(spark, part_a + part_b + part_c), 0)
    report = last.reports[-1]
    assert (report.sink_skipped, report.sink_topped_up, report.dead_letters_topped_up) == (True, 10, 1)
    assert report.records == 88 and "10 new events and 1 new dead letters topped up" in report.line()
    abc_ids = sorted(r["transaction_id"] for r in records[:85])
    if engine == "incremental":      # the state batch 1 starts from: the re-run's events once each
        assert sorted(last.engine._state.frame["transaction_id"]) == abc_ids
    with pytest.raises(Crash):
        last(payload_frame(spark, part_d), 1)
    again = make(root, sns, store)
    again(payload_frame(spark, part_d), 1)
    assert (again.reports[-1].sink_skipped, again.reports[-1].sink_topped_up) == (True, 0)
    assert sink_commits(root / "sink") == [(0, 50), (0, 25), (0, 10), (1, 25)]
    assert sink_commits(root / "dead") == [(0, 2), (0, 1)], "A's and B's dead letters, then C's topped up"
    if engine == "incremental":      # rebuilt from the sink after a restart: the topped-up rows once, C's watermark
        sink = make(root, sns, store).sinks(spark)[0]
        rebuilt = make(root, sns, store).engine._state_before(1, sink)
        assert sorted(rebuilt.frame["transaction_id"]) == abc_ids
        assert rebuilt.max_seen_us == int(rebuilt.frame["ts"].max()), "the top-up commit's max_seen_us"

    def table(path, key):
        return {r[key]: r.asDict() for r in spark.read.format("delta").load(str(path)).collect()}

    crashed_rows, clean_rows = table(root / "sink", "transaction_id"), table(clean_root / "sink", "transaction_id")
    assert crashed_rows.keys() == clean_rows.keys() == {r["transaction_id"] for r in records}
    differing = [(tid, col, crashed_rows[tid][col], clean_rows[tid][col]) for tid in clean_rows
                 for col in clean_rows[tid] if not _same(crashed_rows[tid][col], clean_rows[tid][col])]
    assert not differing, f"features and scores as in the run that never crashed: {differing[:10]}"
    crashed_dead = sorted((r["payload"], r["reason"]) for r in table(root / "dead", "record_source").values())
    assert crashed_dead == sorted((r["payload"], r["reason"]) for r in table(clean_root / "dead", "record_source").values())
    assert len(crashed_dead) == len(BAD_RECORDS)
    flagged = sorted(tid for tid, row in clean_rows.items() if row["is_anomaly"])
    assert sorted(sns.sent) == sorted(clean_sns.sent) == flagged, "every anomaly alerted once"
