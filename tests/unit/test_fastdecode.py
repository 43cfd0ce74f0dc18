"""The stream's driver-side fast path agrees with the Spark decoder on every record it accepts."""
import json
import random

import numpy as np
import pandas as pd
import pytest

from ingest.fastdecode import decode_clean_transactions
from ingest.validation import REASON
from streaming.engines import decode_payloads

COLUMNS = {"transaction_id": "transaction_id", "event_time": "event_time", "customer_id": "customer_id",
           "terminal_id": "terminal_id", "amount": "amount", "label": "label"}
SCHEMA = {"format": "json", "timestamp_format": None, "columns": COLUMNS}


def clean(i, rng):
    frac = "" if i % 3 == 0 else "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6)))
    zone = rng.choice(["Z", "+02:00", "-05:30", "+00:00"])
    record = {"transaction_id": f"t{i}", "event_time": f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T"
              f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{frac}{zone}",
              "customer_id": f"c{rng.randint(1, 50)}", "terminal_id": f"k{rng.randint(1, 50)}",
              "amount": rng.choice([round(rng.uniform(0, 500), 2), rng.randint(0, 900), 0, 1e-7, 123456789.125]),
              "extra": [1, 2]}
    if i % 4:
        record["label"] = rng.choice([0, 1, None])
    return json.dumps(record)


HEAD = '"event_time": "2026-01-01T00:00:00Z", "customer_id": "c", "terminal_id": "k"'
TRICKY = [
    '{"transaction_id": " t1", ' + HEAD + ', "amount": 1}',
    '{"transaction_id": "t2", "event_time": "2026-01-01 00:00:00", "customer_id": "c", "terminal_id": "k", "amount": 1}',
    '{"transaction_id": "t3", ' + HEAD + ', "amount": "1"}',
    '{"transaction_id": "t4", ' + HEAD + ', "amount": -1}',
    '{"transaction_id": "t5", ' + HEAD + ', "amount": 1, "label": 1.0}',
    '{"transaction_id": "t6", ' + HEAD + ', "amount": 1, "label": true}',
    '{"transaction_id": 7, ' + HEAD + ', "amount": 1}',
    '{"transaction_id": "t8", "event_time": "2026-01-01T00:00:00.1234567Z", "customer_id": "c", "terminal_id": "k", "amount": 1}',
    '{"transaction_id": "t9", "event_time": "2026-01-01T00:00:00Z", "customer_id": "", "terminal_id": "k", "amount": 1}',
    '{"transaction_id": "t10", ' + HEAD + ', "amount": NaN}',
    '{"transaction_id": "t11", ' + HEAD + ', "amount": 1e400}',
    '{"transaction_id": "t12", ' + HEAD + '}',
    '{"transaction_id": "t13", ' + HEAD + ', "amount": 1}x',
    '[1, 2]', 'not json', '', None,
    '{"transaction_id": "t14", ' + HEAD + ', "amount": 1, "label": 2}',
    '{"transaction_id": "t15", "event_time": "2026-13-01T00:00:00Z", "customer_id": "c", "terminal_id": "k", "amount": 1}',
    '{"transaction_id": "t16", ' + HEAD + ', "amount": 100000000000000000000}',
    '{"transaction_id": "t17", ' + HEAD + ', "amount": 2, "pad": "'
    + "x" * 300 + '"}',
]


def test_clean_records_decode_as_spark_decodes_them(spark):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    rng = random.Random(5)
    payloads = [clean(i, rng) for i in range(400)] + TRICKY
    rng.shuffle(payloads)
    frame, ok = decode_clean_transactions(payloads, schema_conf=SCHEMA, max_record_bytes=256)
    # a JSON integer too large for int64 is a float to orjson (and a double to Spark): it may pass,
    # and is then checked against Spark's value like every accepted record below
    huge = TRICKY[19]
    accepted = {p for p, k in zip(payloads, ok, strict=True) if k}
    assert ok.sum() == len(frame) == 400 + (huge in accepted)
    assert not accepted & (set(TRICKY) - {huge}), "every other tricky record is left over to Spark"

    schema = T.StructType([T.StructField("payload", T.StringType()), T.StructField("payload_bytes", T.IntegerType()),
                           T.StructField("arrival_time", T.TimestampType()),
                           T.StructField("record_source", T.StringType())])
    rows = [(p, len(p.encode()) if p is not None else 0, None, "test") for p in payloads]
    decoded = decode_payloads(spark.createDataFrame(rows, schema), dataset="transactions", schema_conf=SCHEMA,
                              max_record_bytes=256, dedupe=False)
    ref = decoded.records.select("payload", "transaction_id", F.unix_micros("event_time").alias("ts"), "customer_id",
                                 "terminal_id", "amount", F.col("label").cast("double").alias("label"),
                                 REASON).toPandas()
    by_payload = {r.payload: r for r in ref.itertuples(index=False)}
    for payload, row in zip([p for p, k in zip(payloads, ok, strict=True) if k], frame.itertuples(index=False), strict=True):
        spark_row = by_payload[payload]
        assert pd.isna(getattr(spark_row, REASON)), (payload, getattr(spark_row, REASON))
        for col in ("transaction_id", "ts", "customer_id", "terminal_id", "amount"):
            assert getattr(row, col) == getattr(spark_row, col), (payload, col)
        assert (np.isnan(row.label) and pd.isna(spark_row.label)) or row.label == spark_row.label, payload
    # without the impossible dates, the UTC times take numpy's parser: the same values
    clean_only = [p for p, k in zip(payloads, ok, strict=True) if k]
    again, ok2 = decode_clean_transactions(clean_only, schema_conf=SCHEMA, max_record_bytes=256)
    assert ok2.all()
    pd.testing.assert_frame_equal(again, frame)
    with_bad = clean_only + ['{"transaction_id": "t", "event_time": "2026-02-30T00:00:00Z", "customer_id": "c", '
                             '"terminal_id": "k", "amount": 1}']
    third, ok3 = decode_clean_transactions(with_bad, schema_conf=SCHEMA, max_record_bytes=256)
    assert not ok3[-1] and ok3[:-1].all()
    pd.testing.assert_frame_equal(third, frame)
    rejected = set(ref.loc[ref[REASON].notna(), "payload"].dropna())
    assert {TRICKY[3], TRICKY[8], TRICKY[14], TRICKY[20]} <= rejected      # Spark gives the reasons
    assert TRICKY[0] not in rejected    # and accepts some left-over ones (a padded id, trimmed)


def test_a_custom_time_format_or_a_missing_column_leaves_everything_to_spark():
    payloads = ['{"transaction_id": "t", "event_time": "2026-01-01T00:00:00Z", "customer_id": "c", '
                '"terminal_id": "k", "amount": 1}']
    frame, ok = decode_clean_transactions(payloads, schema_conf={**SCHEMA, "timestamp_format": "yyyy"},
                                          max_record_bytes=1000)
    assert not ok.any() and frame.empty
    frame, ok = decode_clean_transactions(payloads, schema_conf={**SCHEMA, "columns": {**COLUMNS, "amount": ""}},
                                          max_record_bytes=1000)
    assert not ok.any()
    frame, ok = decode_clean_transactions(payloads, schema_conf=SCHEMA, max_record_bytes=1000)
    assert ok.all() and frame["ts"].tolist() == [1767225600000000]


@pytest.mark.parametrize("renamed", [{"amount": "amt", "label": ""}])
def test_source_column_names_follow_the_schema(renamed):
    conf = {**SCHEMA, "columns": {**COLUMNS, **renamed}}
    payloads = ['{"transaction_id": "t", "event_time": "2026-01-01T00:00:00Z", "customer_id": "c", '
                '"terminal_id": "k", "amt": 2.5, "label": "anything: not read"}']
    frame, ok = decode_clean_transactions(payloads, schema_conf=conf, max_record_bytes=1000)
    assert ok.all() and frame["amount"].tolist() == [2.5] and np.isnan(frame["label"][0])


def _tx(tid='"t"', when='"2026-01-01T00:00:00Z"', amount="1", extra=""):
    return (f'{{"transaction_id": {tid}, "event_time": {when}, "customer_id": "c", "terminal_id": "k", '
            f'"amount": {amount}{extra}}}')


# hostile records a review found the two decoders split on, with Spark's verdict (the reference)
HOSTILE = {
    _tx('"o1"', '"2026-01-01T00:00:00+19:00"'): "unparseable event_time",      # offsets stop at 18:00
    _tx('"o2"', '"2026-01-01T00:00:00-18:30"'): "unparseable event_time",
    _tx('"o3"', '"2026-01-01T00:00:00+18:00"'): None,
    _tx('"a1"', amount="1" + "0" * 1000): "bad JSON",                          # a 1001-digit number
    _tx('"a2"', amount="0." + "1" * 1000): None,
    _tx('"n1"', extra=', "x": ' + "[" * 1001 + "]" * 1001): "bad JSON",        # nesting deeper than 1000
    _tx('"n2"', extra=', "x": ' + "[" * 600 + "]" * 600): None,
    _tx('"[t1]"'): None,                                                       # a string that looks like an array
    _tx('"{t2}"'): None,
    _tx('["t1"]'): "wrong type transaction_id (expected a scalar)",            # an array is not an id
    _tx('{"a": 1}'): "wrong type transaction_id (expected a scalar)",
}


def _mutate(text: str, rng: random.Random) -> str:
    tokens = ['[', '{', ']', '"', '\\u0000', '9' * rng.choice([299, 300, 1001]), '+19:00', '-18:00', ' ', ',',
              '"[x]"', '\\ud800', 'e400', '.', '-', 'Z', '"transaction_id": "d", ', '0' * 20]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        i = rng.randrange(len(text) + 1)
        op = rng.random()
        if op < 0.4:
            text = text[:i] + rng.choice(tokens) + text[i:]
        elif op < 0.7:
            text = text[:i] + text[i + 1:]
        else:
            text = text[:i] + rng.choice("0123456789:+-.TZ\"[]{}") + text[i + 1:]
    return text


def test_the_decoders_agree_on_hostile_and_fuzzed_records(spark):
    """The stream's verdict must not depend on which decoder saw a record: whatever the fast path
    accepts, Spark accepts with the same values (and what it leaves over, Spark judges)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    rng = random.Random(11)
    fuzzed = [_mutate(clean(i, rng), rng) for i in range(1500)] + [clean(i, rng) for i in range(1500, 1800)]
    payloads = list(HOSTILE) + fuzzed
    frame, ok = decode_clean_transactions(payloads, schema_conf=SCHEMA, max_record_bytes=65536)
    schema = T.StructType([T.StructField("payload", T.StringType()), T.StructField("payload_bytes", T.IntegerType()),
                           T.StructField("arrival_time", T.TimestampType()),
                           T.StructField("record_source", T.StringType())])
    rows = [(p, len(p.encode("utf-8", "surrogatepass")), None, f"r{i}") for i, p in enumerate(payloads)]
    decoded = decode_payloads(spark.createDataFrame(rows, schema), dataset="transactions", schema_conf=SCHEMA,
                              max_record_bytes=65536, dedupe=False)
    ref = decoded.records.select("record_source", "transaction_id", F.unix_micros("event_time").alias("ts"),
                                 "customer_id", "terminal_id", "amount", F.col("label").cast("double").alias("label"),
                                 REASON).toPandas().set_index("record_source")
    assert len(ref) == len(payloads)
    for i, (payload, expected) in enumerate(HOSTILE.items()):
        reason = ref.loc[f"r{i}", REASON]
        assert (None if pd.isna(reason) else reason) == expected, payload[:80]
    assert ref.loc["r7", "transaction_id"] == "[t1]"
    accepted = [i for i, k in enumerate(ok) if k]
    assert len(accepted) == len(frame) and 400 < len(accepted) < 1700, len(accepted)   # the fuzz mixes both
    for i, row in zip(accepted, frame.itertuples(index=False), strict=True):
        spark_row = ref.loc[f"r{i}"]
        assert pd.isna(spark_row[REASON]), (payloads[i], spark_row[REASON])
        for col in ("transaction_id", "ts", "customer_id", "terminal_id", "amount"):
            assert getattr(row, col) == spark_row[col], (payloads[i], col)
        assert (np.isnan(row.label) and pd.isna(spark_row["label"])) or row.label == spark_row["label"], payloads[i]
