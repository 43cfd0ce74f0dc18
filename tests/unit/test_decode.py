"""Stream decoding on static frames with the aws-kinesis connector's schema (and text frames)."""
import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from ingest.decode import KINESIS_SCHEMA, payloads_from_kinesis, rejected_as_dead_letters, split_late_and_duplicates
from runtime.config import load_config
from streaming.engines import decode_payloads

CONFIG = load_config()
TX_SCHEMA = CONFIG["schema"]["transactions"]
TM_SCHEMA = CONFIG["schema"]["telemetry"]
ARRIVED = dt.datetime(2026, 1, 1, 12, 0, 0)


def _tx(i, **changes):
    record = {"transaction_id": f"t{i}", "event_time": "2026-01-01T10:00:00.000000Z", "customer_id": "c1",
              "terminal_id": "k1", "amount": 12.5, "label": 0}
    record.update(changes)
    return record


def kinesis_frame(spark, payloads):
    rows = [(p if isinstance(p, bytes) else p.encode("utf-8"), "tx", f"pk{i}", f"{1000 + i}", ARRIVED)
            for i, p in enumerate(payloads)]
    return spark.createDataFrame(rows, KINESIS_SCHEMA)


def decode_kinesis(spark, payloads, dataset="transactions", max_record_bytes=2000):
    schema_conf = TX_SCHEMA if dataset == "transactions" else TM_SCHEMA
    return decode_payloads(payloads_from_kinesis(kinesis_frame(spark, payloads)), dataset=dataset,
                           schema_conf=schema_conf, max_record_bytes=max_record_bytes)


def dead_reasons(decoded):
    return {row["payload"]: row["reason"] for row in decoded.dead_letters.collect()}


def test_good_records_come_out_canonical_with_arrival_time(spark):
    decoded = decode_kinesis(spark, [json.dumps(_tx(1)), json.dumps(_tx(2, label=None))])
    rows = {r["transaction_id"]: r for r in decoded.valid.collect()}
    assert set(rows) == {"t1", "t2"}
    assert rows["t1"]["amount"] == 12.5 and rows["t1"]["label"] == 0 and rows["t2"]["label"] is None
    assert rows["t1"]["event_time"] == dt.datetime(2026, 1, 1, 10, 0, 0)
    assert rows["t1"]["arrival_time"] == ARRIVED
    assert rows["t1"]["record_source"] == "tx/pk0/1000"
    assert decoded.dead_letters.count() == 0


def test_bad_json_missing_fields_wrong_types_and_oversized_go_to_dead_letters(spark):
    big = json.dumps(_tx(9, customer_id="c" * 3000))
    payloads = {
        "not json at all": "bad JSON",
        '{"transaction_id": "t3", "amount": 1': "bad JSON",
        "[1, 2, 3]": "bad JSON",
        json.dumps({k: v for k, v in _tx(4).items() if k != "customer_id"}): "missing customer_id",
        json.dumps(_tx(5, amount="lots")): "wrong type amount (expected a number)",
        json.dumps(_tx(6, amount="12.5")): "wrong type amount (expected a number)",
        json.dumps(_tx(7, terminal_id={"id": 1})): "wrong type terminal_id (expected a scalar)",
        json.dumps(_tx(8, amount=-3.0)): "negative amount",
        json.dumps(_tx(10, event_time="yesterday")): "unparseable event_time",
        big: "oversized record",
        "": "empty record",
    }
    decoded = decode_kinesis(spark, list(payloads) + [json.dumps(_tx(1))])
    reasons = dead_reasons(decoded)
    assert set(reasons) == set(payloads), "every bad record is kept with its raw payload"
    for payload, expected in payloads.items():
        assert reasons[payload].startswith(expected), (payload[:60], reasons[payload])
    assert [r["transaction_id"] for r in decoded.valid.collect()] == ["t1"]


def test_duplicate_ids_in_one_batch_keep_the_first_and_dead_letter_the_rest(spark):
    decoded = decode_kinesis(spark, [json.dumps(_tx(1)), json.dumps(_tx(1, amount=99.0))])
    assert decoded.valid.count() == 1
    assert list(dead_reasons(decoded).values()) == ["duplicate transaction_id"]


def test_telemetry_records_without_event_id_get_the_batch_derived_id(spark):
    record = {"event_id": None, "device_id": "d1", "site_id": "s1", "event_time": "2026-01-01T00:00:01Z",
              "duration_s": 1.0, "bytes_up": 2.0, "bytes_down": 3.0, "packets": 4, "errors": 0}
    decoded = decode_kinesis(spark, [json.dumps(record)], dataset="telemetry")
    # event_id is mapped and null here: the validator rejects it, as it does in batch.
    assert list(dead_reasons(decoded).values()) == ["missing event_id"]
    record["event_id"] = "e1"
    decoded = decode_kinesis(spark, [json.dumps(record)], dataset="telemetry")
    row = decoded.valid.first()
    assert (row["event_id"], row["packets"], row["site_id"]) == ("e1", 4.0, "s1")


def test_late_and_already_processed_events_are_rejected_with_reasons(spark):
    decoded = decode_kinesis(spark, [json.dumps(_tx(1)), json.dumps(_tx(2, event_time="2026-01-01T08:00:00Z")),
                                     json.dumps(_tx(3, event_time="2026-01-01T11:00:00Z"))])
    history = decoded.valid.where(F.col("transaction_id") == "t3").drop("arrival_time", "payload", "record_source")
    accepted, rejected = split_late_and_duplicates(decoded.valid, history, id_column="transaction_id",
                                                   watermark=dt.datetime(2026, 1, 1, 9, 0, 0))
    assert [r["transaction_id"] for r in accepted.collect()] == ["t1"]
    reasons = {r["transaction_id"]: r["reason"] for r in rejected.collect()}
    assert reasons["t2"].startswith("late")
    assert reasons["t3"].startswith("duplicate transaction_id")
    dead = rejected_as_dead_letters(rejected).collect()
    assert all(json.loads(r["payload"])["transaction_id"] in ("t2", "t3") for r in dead)


def test_events_dated_after_their_arrival_are_future_and_do_not_count(spark):
    """Arrival is 12:00 (UTC); 300 s of clock skew is allowed, not more, and a far-future event is
    rejected before the watermark check could use it."""
    decoded = decode_kinesis(spark, [json.dumps(_tx(1, event_time="2026-01-01T12:04:59Z")),
                                     json.dumps(_tx(2, event_time="2026-01-01T12:05:01Z")),
                                     json.dumps(_tx(3, event_time="2999-12-31T00:00:00Z")),
                                     json.dumps(_tx(4, event_time="2026-01-01T08:00:00Z"))])
    accepted, rejected = split_late_and_duplicates(decoded.valid, None, id_column="transaction_id",
                                                   watermark=dt.datetime(2026, 1, 1, 9, 0, 0), max_skew_seconds=300)
    assert sorted(r["transaction_id"] for r in accepted.collect()) == ["t1"]
    reasons = {r["transaction_id"]: r["reason"] for r in rejected.collect()}
    assert reasons["t2"] == reasons["t3"] == "future (event_time more than 300 s after its arrival_time)"
    assert reasons["t4"].startswith("late")


def test_decoding_works_on_a_streaming_frame(spark, tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(_tx(1)) + "\nnot json\n")
    from ingest.decode import payloads_from_text

    stream_df = spark.readStream.format("text").load(str(folder))
    decoded = decode_payloads(payloads_from_text(stream_df), dataset="transactions", schema_conf=TX_SCHEMA,
                              max_record_bytes=1000)
    assert decoded.dead_letters.isStreaming
    static = decode_payloads(payloads_from_text(spark.read.text(str(folder)).select("value", "_metadata")),
                             dataset="transactions", schema_conf=TX_SCHEMA, max_record_bytes=1000)
    assert static.valid.count() == 1
    dead = static.dead_letters.first()
    assert dead["reason"] == "bad JSON" and dead["record_source"].endswith("a.json")


@pytest.mark.parametrize("payload", [b"\xff\xfe\x00garbage"])
def test_undecodable_bytes_are_dead_letters_not_errors(spark, payload):
    decoded = decode_kinesis(spark, [payload])
    assert decoded.valid.count() == 0
    assert decoded.dead_letters.first()["reason"] == "bad JSON"
