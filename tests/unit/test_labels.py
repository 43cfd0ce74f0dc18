"""Late labels: the label file's validation, the newest-notice rule and labels in the feature table."""
import datetime as dt

import pytest
from pyspark.sql import functions as F

from features.labels import classified, with_eventual_labels
from ingest.labels import ARRIVED, SOURCE, LabelFileError, validate_labels

STARTED = dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)


def label_file(spark, rows, columns=("transaction_id", "label", "known_at")):
    """A label file as read_raw reads a CSV (text columns) plus its file facts."""
    schema = ", ".join(f"{c} string" for c in columns)
    return (spark.createDataFrame(rows, schema)
            .withColumn(SOURCE, F.lit("file:/in/labels.csv"))
            .withColumn(ARRIVED, F.lit("2024-01-20 08:00:00").cast("timestamp")))


def outcome(checked):
    return sorted(((r["record"], r["reason"]) for r in checked.checked.collect()), key=lambda x: (x[0], x[1] or ""))


def test_every_kind_of_bad_label_row_is_rejected_with_its_reason(spark):
    checked = validate_labels(label_file(spark, [
        ("t1", "1", "2024-01-10 00:00:00"),
        ("t2", "0", "2024-01-10T12:00:00Z"),
        ("", "1", "2024-01-10 00:00:00"),
        ("t3", "", "2024-01-10 00:00:00"),
        ("t4", "2", "2024-01-10 00:00:00"),
        ("t5", "yes", "2024-01-10 00:00:00"),
        ("t6", "1", ""),
        ("t7", "1", "last tuesday"),
        ("t8", "1", "2030-01-01 00:00:00"),
        ("t9", "1", "2024-01-10 00:00:00"),
        ("t9", "0", "2024-01-10 00:00:00"),
        ("t10", "1", "2024-01-11 00:00:00"),
        ("t10", "1", "2024-01-11 00:00:00"),
        (None, None, None),
    ]), "transaction_id", F.lit(STARTED))
    by_record = {}
    for record, reason in outcome(checked):
        by_record.setdefault(record, []).append(reason)
    assert by_record == {
        "transaction_id=t1, label=1, known_at=2024-01-10 00:00:00": [None],
        "transaction_id=t2, label=0, known_at=2024-01-10T12:00:00Z": [None],
        "transaction_id=, label=1, known_at=2024-01-10 00:00:00": ["missing transaction_id"],
        "transaction_id=t3, label=, known_at=2024-01-10 00:00:00": ["missing label"],
        "transaction_id=t4, label=2, known_at=2024-01-10 00:00:00": ["invalid label"],
        "transaction_id=t5, label=yes, known_at=2024-01-10 00:00:00": ["invalid label"],
        "transaction_id=t6, label=1, known_at=": ["missing known_at"],
        "transaction_id=t7, label=1, known_at=last tuesday": ["unparseable known_at"],
        "transaction_id=t8, label=1, known_at=2030-01-01 00:00:00": ["known_at in the future"],
        "transaction_id=t9, label=1, known_at=2024-01-10 00:00:00": ["conflicting labels for one transaction_id in the file"],
        "transaction_id=t9, label=0, known_at=2024-01-10 00:00:00": ["conflicting labels for one transaction_id in the file"],
        "transaction_id=t10, label=1, known_at=2024-01-11 00:00:00": [None, "duplicate row"],
        "transaction_id=, label=, known_at=": ["missing transaction_id; missing label; missing known_at"],
    }
    valid = {r["transaction_id"]: (r["label"], r["known_at"]) for r in checked.valid.collect()}
    assert valid == {"t1": (1, dt.datetime(2024, 1, 10)), "t2": (0, dt.datetime(2024, 1, 10, 12)),
                     "t10": (1, dt.datetime(2024, 1, 11))}
    assert checked.valid.count() + checked.rejected.count() == 14


def test_without_known_at_the_file_arrival_time_is_used_and_other_columns_are_named(spark):
    checked = validate_labels(label_file(spark, [("e1", "1", "chargeback")], ("event_id", "label", "note")),
                              "event_id", F.lit(STARTED))
    assert [tuple(r) for r in checked.valid.select("event_id", "label", "known_at").collect()] == [
        ("e1", 1, dt.datetime(2024, 1, 20, 8))]
    assert checked.ignored_columns == ("note",)


def test_a_file_without_the_id_or_label_column_is_refused_naming_them(spark):
    with pytest.raises(LabelFileError, match=r"lacks column\(s\) transaction_id, label; it has: id, fraud"):
        validate_labels(label_file(spark, [("t1", "1")], ("id", "fraud")), "transaction_id", F.lit(STARTED))


def test_the_newest_notice_wins_whatever_the_order(spark):
    stored = spark.createDataFrame([("a", 1, "2024-01-10"), ("b", 0, "2024-01-10"), ("c", 1, "2024-01-10"),
                                    ("d", 0, "2024-01-10"), ("e", 1, "2024-01-10")], "id string, label int, k string")
    incoming = spark.createDataFrame([("a", 1, "2024-01-10"), ("b", 1, "2024-01-10"), ("c", 0, "2024-01-12"),
                                      ("d", 1, "2024-01-09"), ("e", 0, "2024-01-10"), ("f", 1, "2024-01-01")],
                                     "id string, label int, k string")

    def table(df):
        return df.select("id", "label", F.to_timestamp("k").alias("known_at"))

    status = {r["id"]: r["_status"] for r in classified(table(incoming), table(stored), "id").collect()}
    assert status == {"a": "unchanged", "b": "changed",     # same instant: the fraud wins
                      "c": "changed", "d": "superseded",    # later known wins, earlier is not applied
                      "e": "superseded", "f": "new"}
    assert {r["_status"] for r in classified(table(incoming), None, "id").collect()} == {"new"}


def test_the_feature_table_label_is_the_latest_known_label(spark):
    features = spark.createDataFrame([("a", 0, 1.5), ("b", None, 2.5), ("c", 1, 3.5)],
                                     "transaction_id string, label int, amount double")
    labels = spark.createDataFrame([("a", 1), ("b", 0), ("z", 1)], "transaction_id string, label int") \
        .withColumn("known_at", F.current_timestamp())
    out = with_eventual_labels(features, labels, "transaction_id")
    assert out.columns == features.columns
    assert sorted(tuple(r) for r in out.collect()) == [("a", 1, 1.5), ("b", 0, 2.5), ("c", 1, 3.5)]
    assert with_eventual_labels(features, None, "transaction_id") is features
