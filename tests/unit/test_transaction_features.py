"""Transaction features: hand-computed values, window boundaries, the label delay, point in time
and incremental == full."""
import math

import pytest
from pyspark.sql import functions as F

from features.transactions import (
    MAX_SECONDS_SINCE_PREV_TX,
    TransactionSchemaError,
    build_transaction_features,
    lookback_days,
    transaction_feature_columns,
)

SCHEMA = "transaction_id string, ts string, customer_id string, terminal_id string, amount double, label int"


def canonical(spark, rows):
    """A canonical frame from (id, 'yyyy-MM-dd HH:mm:ss' UTC, customer, terminal, amount, label)."""
    return (spark.createDataFrame(rows, SCHEMA)
            .withColumn("event_time", F.to_timestamp("ts")).drop("ts")
            .select("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "label"))


def rows_of(df):
    return sorted(tuple(row) for row in df.collect())


def assert_same_rows(actual_df, expected_df):
    """Order-insensitive frame equality showing the differing rows.

    (pyspark.testing cannot be imported next to pandas 3: pyspark.pandas fails to import.)
    """
    assert actual_df.columns == expected_df.columns
    actual, expected = rows_of(actual_df), rows_of(expected_df)
    missing = [row for row in expected if row not in actual]
    extra = [row for row in actual if row not in expected]
    assert not missing and not extra, f"rows only expected: {missing[:5]}; rows only actual: {extra[:5]}"
    return actual


def by_id(df, *columns):
    return {row["transaction_id"]: tuple(row[c] for c in columns) for row in df.collect()}


def test_feature_columns_are_fixed_and_ordered():
    assert transaction_feature_columns((1, 7)) == [
        "amount", "is_weekend", "is_night",
        "customer_nb_tx_1d", "customer_avg_amount_1d", "customer_nb_tx_7d", "customer_avg_amount_7d",
        "terminal_nb_tx_1d", "terminal_risk_1d", "terminal_nb_tx_7d", "terminal_risk_7d",
        "amount_vs_customer_avg_30d", "seconds_since_prev_tx",
        "log_amount", "customer_log_avg_amount_1d", "customer_log_avg_amount_7d",
    ]


def test_lookback_covers_delay_plus_longest_window():
    assert lookback_days((1, 7, 30), 7) == 37
    assert lookback_days((1, 7), 7) == 30   # the 30-day amount history and seconds cap still apply
    assert lookback_days((1, 60), 10) == 70


def test_bad_parameters_and_schema_are_rejected(spark):
    df = canonical(spark, [("t1", "2024-01-01 00:00:00", "c", "x", 1.0, 0)])
    with pytest.raises(ValueError, match="delay_days"):
        build_transaction_features(df, delay_days=0)
    with pytest.raises(ValueError, match="windows_days"):
        build_transaction_features(df, windows_days=(0, 7))
    with pytest.raises(TransactionSchemaError, match="'amount' is string"):
        build_transaction_features(df.withColumn("amount", F.col("amount").cast("string")))
    with pytest.raises(TransactionSchemaError, match="missing column 'terminal_id'"):
        build_transaction_features(df.drop("terminal_id"))


def test_calendar_features_are_utc_weekend_and_hours_zero_to_six_are_night(spark):
    """is_night is the Handbook's TX_DURING_NIGHT: UTC hour <= 6 (00:00:00..06:59:59)."""
    df = canonical(spark, [
        ("sat_night", "2024-01-06 05:59:59", "c", "x", 1.0, 0),   # Saturday
        ("sun_late", "2024-01-07 23:00:00", "c", "x", 1.0, 0),    # Sunday
        ("mon_six", "2024-01-08 06:00:00", "c", "x", 1.0, 0),     # Monday, hour 6 is night
        ("mon_last", "2024-01-08 06:59:59", "c", "x", 1.0, 0),    # last second of the night
        ("mon_seven", "2024-01-08 07:00:00", "c", "x", 1.0, 0),   # 7 o'clock is day
        ("fri_mid", "2024-01-05 00:00:00", "c", "x", 1.0, 0),     # Friday midnight
    ])
    out = by_id(build_transaction_features(df).withColumn("date", F.col("date").cast("string")),
                "is_weekend", "is_night", "date")
    assert out == {
        "sat_night": (1, 1, "2024-01-06"),
        "sun_late": (1, 0, "2024-01-07"),
        "mon_six": (0, 1, "2024-01-08"),
        "mon_last": (0, 1, "2024-01-08"),
        "mon_seven": (0, 0, "2024-01-08"),
        "fri_mid": (0, 1, "2024-01-05"),
    }


def test_customer_windows_include_now_and_exclude_exactly_w_days_ago(spark):
    df = canonical(spark, [
        ("t0", "2024-01-01 00:00:00", "c1", "x", 10.0, 0),
        ("t1", "2024-01-01 12:00:00", "c1", "y", 20.0, 0),
        ("t2", "2024-01-02 00:00:00", "c1", "x", 30.0, 0),   # exactly 1 day after t0
        ("t3", "2024-01-08 00:00:00", "c1", "y", 40.0, 0),   # exactly 7 days after t0
        ("other", "2024-01-01 12:00:00", "c2", "x", 1000.0, 1),
    ])
    columns = ["customer_nb_tx_1d", "customer_avg_amount_1d", "customer_nb_tx_7d",
               "customer_avg_amount_7d", "customer_nb_tx_30d", "customer_avg_amount_30d",
               "amount_vs_customer_avg_30d", "seconds_since_prev_tx"]
    out = by_id(build_transaction_features(df), *columns)
    cap = float(MAX_SECONDS_SINCE_PREV_TX)
    assert out["t0"] == (1, 10.0, 1, 10.0, 1, 10.0, 1.0, cap)
    assert out["t1"] == (2, 15.0, 2, 15.0, 2, 15.0, 2.0, 43200.0)
    assert out["t2"] == (2, 25.0, 3, 20.0, 3, 20.0, 2.0, 43200.0)       # t0 left the 1-day window
    assert out["t3"] == (1, 40.0, 3, 30.0, 4, 25.0, 2.0, 518400.0)      # t0 left the 7-day window
    assert out["other"] == (1, 1000.0, 1, 1000.0, 1, 1000.0, 1.0, cap)


def test_log_amount_features_are_log1p_of_the_amount_and_the_customer_averages(spark):
    """ln(1 + x): finite at a zero amount, and the averages are the customer windows' (current row included)."""
    df = canonical(spark, [
        ("t0", "2024-01-01 00:00:00", "c1", "x", 0.0, 0),
        ("t1", "2024-01-01 12:00:00", "c1", "y", 20.0, 0),
        ("t2", "2024-01-05 00:00:00", "c1", "x", 40.0, 0),
    ])
    columns = ["log_amount", "customer_log_avg_amount_1d", "customer_log_avg_amount_7d",
               "customer_log_avg_amount_30d"]
    out = by_id(build_transaction_features(df), *columns)
    expected = {"t0": (0.0, 0.0, 0.0, 0.0),
                "t1": (math.log(21.0), math.log(11.0), math.log(11.0), math.log(11.0)),
                "t2": (math.log(41.0), math.log(41.0), math.log(21.0), math.log(21.0))}
    for tid, values in expected.items():
        assert out[tid] == pytest.approx(values, rel=1e-15, abs=0.0), tid


def test_same_instant_transactions_are_peers_not_previous(spark):
    df = canonical(spark, [
        ("a", "2024-01-01 10:00:00", "c1", "x", 10.0, 0),
        ("b", "2024-01-01 11:00:00", "c1", "x", 30.0, 0),
        ("c", "2024-01-01 11:00:00", "c1", "x", 50.0, 0),
    ])
    out = by_id(build_transaction_features(df), "customer_nb_tx_1d", "amount_vs_customer_avg_30d",
                "seconds_since_prev_tx")
    assert out["b"] == (3, 30.0 / 30.0, 3600.0)     # others: a (10) and c (50), mean 30
    assert out["c"] == (3, 50.0 / 20.0, 3600.0)     # others: a and b, mean 20


def test_terminal_risk_uses_the_delayed_window_and_known_labels(spark):
    df = canonical(spark, [
        ("a", "2024-01-01 00:00:00", "c1", "T1", 10.0, 1),
        ("b", "2024-01-02 00:00:00", "c2", "T1", 10.0, 0),
        ("c", "2024-01-08 00:00:00", "c3", "T1", 10.0, 1),
        ("d", "2024-01-09 00:00:00", "c4", "T1", 10.0, None),  # not labelled (yet)
        ("e", "2024-01-16 00:00:00", "c5", "T1", 10.0, 1),
        ("z", "2024-01-08 00:00:00", "c6", "T2", 10.0, 0),     # another terminal
    ])
    out = by_id(build_transaction_features(df, windows_days=(1, 7), delay_days=7),
                "terminal_nb_tx_1d", "terminal_risk_1d", "terminal_nb_tx_7d", "terminal_risk_7d")
    assert out["a"] == (0, 0.0, 0, 0.0)
    assert out["b"] == (0, 0.0, 0, 0.0)
    # c: (Dec 31, Jan 1] holds a, which is exactly t - 7 days: the window end is included
    assert out["c"] == (1, 1.0, 1, 1.0)
    # d: (Jan 1, Jan 2] drops a (the start is excluded); 7-day window (Dec 26, Jan 2] holds a and b
    assert out["d"] == (1, 0.0, 2, 0.5)
    # e: (Jan 8, Jan 9] holds only the unlabelled d; (Jan 2, Jan 9] holds c and d, one labelled
    assert out["e"] == (1, 0.0, 2, 1.0)
    assert out["z"] == (0, 0.0, 0, 0.0)


def synthetic(spark, days=50):
    """A deterministic canonical frame: 24 customers, 6 terminals, ~60 transactions a day."""
    n = days * 60
    u = lambda tag: (F.abs(F.xxhash64(F.lit(tag), "id")) % 1_000_000) / 1_000_000.0  # noqa: E731
    return (spark.range(n, numPartitions=3).select(
        F.concat(F.lit("tx"), F.col("id").cast("string")).alias("transaction_id"),
        F.timestamp_seconds(F.lit(1704067200) + (u("t") * days * 86400).cast("long")).alias("event_time"),
        F.concat(F.lit("c"), (u("c") * 24).cast("int").cast("string")).alias("customer_id"),
        F.concat(F.lit("T"), (u("m") * 6).cast("int").cast("string")).alias("terminal_id"),
        F.round(u("a") * 200, 2).alias("amount"),
        F.when(u("l") < 0.2, 1).when(u("l") < 0.9, 0).cast("int").alias("label"),  # 10 % unlabelled
        F.lit("passed through").alias("note"),
    ))


def test_output_keeps_input_columns_and_has_no_null_features(spark):
    out = build_transaction_features(synthetic(spark, days=10))
    assert "note" in out.columns and "date" in out.columns
    features = transaction_feature_columns()
    nulls = out.select([F.sum(F.col(c).isNull().cast("int")).alias(c) for c in features]).first()
    assert all(nulls[c] == 0 for c in features)


def test_features_are_point_in_time(spark):
    """Future rows and labels not yet known at t (inside the delay) do not change row t."""
    df = synthetic(spark)
    day = "2024-02-10"
    start = F.to_timestamp(F.lit(day))
    end = start + F.expr("INTERVAL 1 DAY")
    full = build_transaction_features(df).where(F.col("date") == day)
    # Labels of every row less than 7 days before the end of the day flipped (1 <-> 0, unknown
    # becomes 1), and everything after the day removed.
    tampered = (df.where(F.col("event_time") < end)
                .withColumn("label", F.when(F.col("event_time") >= end - F.expr("INTERVAL 7 DAYS"),
                                            F.coalesce(1 - F.col("label"), F.lit(1)))
                            .otherwise(F.col("label"))))
    again = build_transaction_features(tampered).where(F.col("date") == day)
    columns = ["transaction_id"] + transaction_feature_columns()
    assert len(assert_same_rows(again.select(columns), full.select(columns))) > 40
    # and the tampering is not vacuous: with no delay gap the labels would have leaked
    changed = tampered.where(F.col("event_time") >= end - F.expr("INTERVAL 7 DAYS")).count()
    assert changed > 100


def test_incremental_run_equals_full_run(spark):
    df = synthetic(spark)
    day = "2024-02-14"
    full = build_transaction_features(df).where(F.col("date") == day)

    def incremental(history_days):
        first = F.date_sub(F.to_date(F.lit(day)), history_days)
        window = df.where((F.to_date("event_time") >= first)
                          & (F.to_date("event_time") <= F.to_date(F.lit(day))))
        return build_transaction_features(window).where(F.col("date") == day)

    expected = assert_same_rows(incremental(lookback_days()), full)
    assert len(expected) > 40
    # a shorter history does change some rows, so the test above can fail
    assert rows_of(incremental(lookback_days() - 5)) != expected


def late_labels(spark, rows):
    """A labels table from (transaction id, label, 'yyyy-MM-dd HH:mm:ss' UTC known_at)."""
    return (spark.createDataFrame(rows, "transaction_id string, label int, known string")
            .select("transaction_id", "label", F.to_timestamp("known").alias("known_at")))


def test_late_labels_count_only_from_when_they_became_known(spark):
    df = canonical(spark, [
        ("a", "2024-01-01 00:00:00", "c1", "T1", 10.0, 0),
        ("b", "2024-01-02 00:00:00", "c2", "T1", 10.0, None),
        ("c", "2024-01-09 00:00:00", "c3", "T1", 10.0, None),
        ("d", "2024-01-09 12:00:00", "c4", "T1", 10.0, None),
        ("f", "2024-01-01 12:00:00", "c5", "T3", 10.0, 1),
        ("g", "2024-01-09 00:00:00", "c6", "T3", 10.0, None),
        ("h", "2024-01-09 12:00:00", "c7", "T3", 10.0, None),
        ("z", "2024-01-09 12:00:00", "c8", "T2", 10.0, None),
    ])
    labels = late_labels(spark, [
        ("a", 1, "2024-01-09 06:00:00"),    # a 0 turned out a fraud, known between c and d
        ("b", 1, "2024-01-05 00:00:00"),    # b had no label; a fraud known before c
        ("f", 0, "2024-01-09 06:00:00"),    # f's fraud reversed, known between g and h
        ("x", 1, "2024-01-01 00:00:00"),    # no such transaction: changes nothing
    ])
    columns = ("terminal_risk_1d", "terminal_risk_7d", "terminal_nb_tx_7d")
    without = by_id(build_transaction_features(df, windows_days=(1, 7), delay_days=7), *columns)
    out = by_id(build_transaction_features(df, windows_days=(1, 7), delay_days=7, labels_df=labels), *columns)
    # c: (Jan 1, Jan 2] holds b; (Dec 26, Jan 2] holds a and b. b's fraud is known, a's not yet.
    assert without["c"] == (0.0, 0.0, 2) and out["c"] == (1.0, 0.5, 2)
    # d, 12 hours later: a's fraud is known too
    assert without["d"] == (0.0, 0.0, 2) and out["d"] == (1.0, 1.0, 2)
    # g (f in both windows) sees f's raw fraud; h (f in the 7-day window only) sees its reversal
    assert without["g"] == (1.0, 1.0, 1) and out["g"] == (1.0, 1.0, 1)
    assert without["h"] == (0.0, 1.0, 1) and out["h"] == (0.0, 0.0, 1)
    assert out["z"] == without["z"] == (0.0, 0.0, 0)
    # rows whose windows no late label reaches are as without labels
    assert {k: out[k] for k in "abf"} == {k: without[k] for k in "abf"}


def test_no_late_labels_or_labels_equal_to_the_raw_ones_change_nothing(spark):
    df = synthetic(spark, days=20)
    columns = ["transaction_id", *transaction_feature_columns()]
    expected = build_transaction_features(df).select(columns)
    empty = late_labels(spark, []).where(F.lit(False))
    same = df.where(F.col("label").isNotNull()).select(
        "transaction_id", "label", (F.col("event_time") + F.expr("INTERVAL 1 DAY")).alias("known_at"))
    rows = assert_same_rows(build_transaction_features(df, labels_df=empty).select(columns), expected)
    assert len(rows) > 1000
    assert_same_rows(build_transaction_features(df, labels_df=same).select(columns), expected)


def terminal_oracle(rows, late, windows, delay):
    """Terminal features of each row in plain Python: rows (id, epoch seconds, terminal, raw label),
    late {id: (label, known epoch seconds)}; a window transaction's label as seen from t is its late
    label when known by t, else its raw label."""
    day = 86400
    out = {}
    for tid, t, terminal, _ in rows:
        values = []
        for w in windows:
            inside = [(sid, raw) for sid, s, term, raw in rows
                      if term == terminal and t - (delay + w) * day < s <= t - delay * day]
            seen = [late[sid][0] if sid in late and late[sid][1] <= t else raw for sid, raw in inside]
            known = [v for v in seen if v is not None]
            values += [len(inside), sum(known) / len(known) if known else 0.0]
        out[tid] = tuple(values)
    return out


def test_terminal_features_with_late_labels_match_a_plain_python_oracle(spark):
    df = synthetic(spark, days=20)
    u = lambda tag: (F.abs(F.xxhash64(F.lit(tag), "transaction_id")) % 1_000_000) / 1_000_000.0  # noqa: E731
    labels = (df.where(u("pick") < 0.25).select(
        "transaction_id", (u("value") < 0.5).cast("int").alias("label"),
        (F.col("event_time") + F.make_dt_interval(F.lit(0), F.lit(0), F.lit(0), 1 + u("lag") * 20 * 86400))
        .alias("known_at")))
    windows, delay = (1, 7), 3
    actual = by_id(build_transaction_features(df, windows_days=windows, delay_days=delay, labels_df=labels),
                   "terminal_nb_tx_1d", "terminal_risk_1d", "terminal_nb_tx_7d", "terminal_risk_7d")
    rows = [(r["transaction_id"], r["event_time"].timestamp(), r["terminal_id"], r["label"]) for r in df.collect()]
    late = {r["transaction_id"]: (r["label"], r["known_at"].timestamp()) for r in labels.collect()}
    expected = terminal_oracle(rows, late, windows, delay)
    assert len(late) > 200
    wrong = [(k, actual[k], expected[k]) for k in expected
             if actual[k][0::2] != expected[k][0::2] or any(abs(a - e) > 1e-12 for a, e in
                                                           zip(actual[k][1::2], expected[k][1::2], strict=True))]
    assert not wrong, wrong[:5]
    # and the late labels matter: the raw labels alone give other risks for many rows
    raw_only = terminal_oracle(rows, {}, windows, delay)
    assert sum(raw_only[k] != expected[k] for k in expected) > 100
