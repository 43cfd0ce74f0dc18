import pytest
from pyspark.sql import types as T

from ingest.validation import SchemaError, count_outcome, validate_telemetry, validate_transactions

TX_COLUMNS = {"transaction_id": "TX_ID", "event_time": "TX_DATETIME", "customer_id": "CUSTOMER_ID",
              "terminal_id": "TERMINAL_ID", "amount": "TX_AMOUNT", "label": "TX_FRAUD"}
TX_SCHEMA = T.StructType([T.StructField(c, T.StringType()) for c in
                          ("TX_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD", "note")])


def tx_frame(spark, rows):
    return spark.createDataFrame(rows, TX_SCHEMA)


def reasons_by_id(validated, id_col):
    return {r[id_col]: r["reason"] for r in validated.quarantine.collect()}


def test_every_kind_of_bad_transaction_is_quarantined_with_its_reason(spark):
    rows = [
        ("1", "2018-04-01 10:00:00", "c1", "t1", "10.5", "0", "good"),
        ("2", "yesterday", "c1", "t1", "10.5", "0", "bad time"),
        ("3", "2018-04-01 10:00:00", None, "t1", "10.5", "0", "no customer"),
        ("4", "2018-04-01 10:00:00", "c1", "t1", "ten", "0", "non-numeric"),
        ("5", "2018-04-01 10:00:00", "c1", "t1", "-3", "0", "negative"),
        ("6", "2018-04-01 10:00:00", "c1", "t1", "NaN", "0", "nan"),
        ("7", "2018-04-01 10:00:00", "c1", "t1", "Infinity", "0", "inf"),
        ("1", "2018-04-01 11:00:00", "c2", "t2", "1.0", "1", "duplicate id, later"),
        (None, "2018-04-01 10:00:00", "c1", "t1", "1.0", "0", "no id"),
        ("8", "2018-04-01 12:00:00", "c1", "t1", "1.0", "7", "bad label"),
        ("9", "2018-04-01 12:00:00", "c3", " ", "", "0", "two problems"),
        ("10", "2018-04-02 00:00:01", "c3", "t3", "0", None, "good, unlabeled"),
    ]
    validated = validate_transactions(tx_frame(spark, rows), columns=TX_COLUMNS)
    counts = count_outcome(validated)
    assert counts == {"rows_in": 12, "valid": 2, "quarantined": 10}
    assert counts["valid"] + counts["quarantined"] == counts["rows_in"]
    by_note = {r["note"]: r["reason"] for r in validated.quarantine.collect()}
    assert by_note == {
        "bad time": "unparseable event_time",
        "no customer": "missing customer_id",
        "non-numeric": "non-numeric amount",
        "negative": "negative amount",
        "nan": "NaN amount",
        "inf": "infinite amount",
        "duplicate id, later": "duplicate transaction_id",
        "no id": "missing transaction_id",
        "bad label": "invalid label",
        "two problems": "missing terminal_id; missing amount",
    }
    valid = {r["transaction_id"]: r for r in validated.valid.collect()}
    assert set(valid) == {"1", "10"}
    assert valid["1"]["customer_id"] == "c1" and valid["1"]["amount"] == 10.5  # the earlier copy of id 1 won
    assert valid["10"]["label"] is None
    assert dict(validated.valid.dtypes)["event_time"] == "timestamp"
    assert "note" in validated.valid.columns  # columns the mapping does not name pass through


def test_quarantine_keeps_source_values_as_text(spark):
    validated = validate_transactions(
        tx_frame(spark, [("2", "not a time", "c1", "t1", "10.5", "0", "x")]), columns=TX_COLUMNS)
    row = validated.quarantine.collect()[0]
    assert (row["TX_ID"], row["TX_DATETIME"], row["TX_AMOUNT"]) == ("2", "not a time", "10.5")
    assert row["quarantined_at"] is not None


def test_bad_copy_does_not_push_out_the_good_record(spark):
    rows = [("1", "garbage", "c1", "t1", "1", "0", "bad first"),
            ("1", "2018-04-01 10:00:00", "c1", "t1", "1", "0", "good")]
    validated = validate_transactions(tx_frame(spark, rows), columns=TX_COLUMNS)
    assert [r["note"] for r in validated.valid.collect()] == ["good"]


def test_missing_column_names_it_and_what_the_input_has(spark):
    df = spark.createDataFrame([("1", "2018-04-01")], "id string, ts string")
    with pytest.raises(SchemaError, match=r"missing column\(s\) .*TX_DATETIME \(for event_time\).*it has: id, ts"):
        validate_transactions(df, columns=TX_COLUMNS)


def test_telemetry_with_custom_names_format_and_derived_ids(spark):
    df = spark.createDataFrame(
        [("d1", "01/02/2026 10:00", "5", "1.5"),
         ("d1", "01/02/2026 10:00", "6", "2.5"),     # same device and instant: a duplicate event
         ("d2", "01/02/2026 10:05", "x", "1"),
         ("d3", "01/02/2026 10:07", "7", "-Infinity")],
        "dev string, ts string, bytes string, dur string")
    validated = validate_telemetry(
        df, columns={"device_id": "dev", "event_time": "ts", "event_id": "", "site_id": "", "label": ""},
        measures=["bytes", "dur"], timestamp_format="dd/MM/yyyy HH:mm")
    quarantine = {(r["dev"], r["bytes"]): r["reason"] for r in validated.quarantine.collect()}
    assert quarantine == {("d1", "6"): "duplicate event_id", ("d2", "x"): "non-numeric bytes",
                          ("d3", "7"): "infinite dur"}
    valid = validated.valid.collect()
    assert len(valid) == 1 and valid[0]["bytes"] == 5.0 and valid[0]["site_id"] is None
    assert str(valid[0]["event_time"]) == "2026-02-01 10:00:00"
    assert len(valid[0]["event_id"]) == 64


def test_telemetry_typed_parquet_style_input(spark):
    df = spark.createDataFrame(
        [("e1", "d1", "s1", "2026-01-01 00:00:00", 10, float("nan"), 0),
         ("e2", "d1", "s1", "2026-01-01 00:01:00", 11, 3.0, 1)],
        "event_id string, device_id string, site_id string, event_time string, packets long, "
        "bytes_up double, label int").withColumn("event_time", __import__("pyspark.sql.functions").sql.functions
                                                 .to_timestamp("event_time"))
    validated = validate_telemetry(df, columns={"event_id": "event_id", "device_id": "device_id",
                                                "site_id": "site_id", "event_time": "event_time", "label": "label"},
                                   measures=["packets", "bytes_up"])
    assert [(r["event_id"], r["reason"]) for r in validated.quarantine.collect()] == [("e1", "NaN bytes_up")]
    assert [(r["event_id"], r["packets"], r["label"]) for r in validated.valid.collect()] == [("e2", 11.0, 1)]
