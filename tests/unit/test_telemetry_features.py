"""Telemetry feature transforms on hand-written frames, point in time and incremental."""

import datetime as dt
import math

import pytest

from frames import assert_same_rows
from pyspark.sql import functions as F

from synthetic.telemetry import generate_telemetry
from features.telemetry import (
    TelemetryFeatureError,
    build_telemetry_features,
    lookback_seconds,
    shingle_columns,
    telemetry_feature_columns,
    window_seconds,
    window_suffix,
    with_time_encodings,
)


SCHEMA = "event_id string, device_id string, site_id string, event_time timestamp, x double, label int, extra string"
MONDAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    return MONDAY + dt.timedelta(hours=hours)


@pytest.fixture(scope="module")
def hand_df(spark):
    rows = [
        ("e1", "d1", "s1", at(10.0), 2.0, 0, "a"),
        ("e2", "d1", "s1", at(10.5), 4.0, 0, "b"),
        ("e3", "d1", "s1", at(11.0), 9.0, 1, "c"),
        ("e4", "d1", None, at(12.5), 9.0, None, "d"),
        ("f1", "d2", "s1", at(11.0), 100.0, 0, "e"),
    ]
    return spark.createDataFrame(rows, SCHEMA)


@pytest.fixture(scope="module")
def hand_features(hand_df):
    out = build_telemetry_features(
        hand_df, measures=["x"], windows=["1 hour", "1 day"], shingle_size=3, shingle_measure="x"
    )
    return {row.event_id: row for row in out.collect()}


def test_window_parsing_and_lookback():
    assert window_seconds("1 hour") == 3600 and window_seconds("6 hours") == 21600
    assert window_seconds("1 day") == 86400 and window_seconds("30 minutes") == 1800
    assert [window_suffix(w) for w in ("1 hour", "6 hours", "1 day", "30 minutes")] == ["1h", "6h", "1d", "30m"]
    assert lookback_seconds(["1 hour", "6 hours"]) == 21600
    assert lookback_seconds(["1 hour"], site_window="2 hours") == 7200
    with pytest.raises(TelemetryFeatureError):
        window_seconds("fortnight")


def test_feature_columns_have_a_fixed_order():
    assert telemetry_feature_columns(["x", "y"], ["1 hour"], 3) == [
        "x",
        "y",
        "hour_sin",
        "hour_cos",
        "dow_sin",
        "dow_cos",
        "dev_cnt_1h",
        "x_mean_1h",
        "x_std_1h",
        "x_min_1h",
        "x_max_1h",
        "y_mean_1h",
        "y_std_1h",
        "y_min_1h",
        "y_max_1h",
        "x_z",
        "y_z",
        "x_delta",
        "y_delta",
        "secs_since_prev",
        "shingle_lag1",
        "shingle_lag2",
        "site_cnt_1h",
        "site_volume_1h",
        "dev_share_1h",
    ]
    assert shingle_columns(3, "x") == ["shingle_lag2", "shingle_lag1", "x"]


def test_output_keeps_input_columns_adds_date_and_has_no_nulls(hand_features):
    feature_cols = telemetry_feature_columns(["x"], ["1 hour", "1 day"], 3)
    row = hand_features["e3"]
    assert (
        list(row.asDict())
        == ["event_id", "device_id", "site_id", "event_time", "label", "extra", "date"] + feature_cols
    )
    assert [(r.event_id, c) for r in hand_features.values() for c in feature_cols if r[c] is None] == []
    assert (row.extra, row.label, row.date) == ("c", 1, dt.date(2026, 1, 5))


def test_time_encodings(spark):
    source_df = spark.createDataFrame([("e", at(10.0))], "event_id string, event_time timestamp")
    row = with_time_encodings(source_df).first()
    assert row.date == dt.date(2026, 1, 5)
    assert row.hour_sin == pytest.approx(math.sin(2 * math.pi * 10 / 24))
    assert row.hour_cos == pytest.approx(math.cos(2 * math.pi * 10 / 24))
    week = 10 / 24  # Monday 10:00 in days since Monday 00:00
    assert row.dow_sin == pytest.approx(math.sin(2 * math.pi * week / 7))
    assert row.dow_cos == pytest.approx(math.cos(2 * math.pi * week / 7))


def test_first_event_gets_neutral_history(hand_features):
    r = hand_features["e1"]
    assert (r.dev_cnt_1h, r.x_mean_1h, r.x_std_1h, r.x_min_1h, r.x_max_1h) == (0, 2.0, 0.0, 2.0, 2.0)
    assert (r.dev_cnt_1d, r.x_mean_1d, r.x_std_1d) == (0, 2.0, 0.0)
    assert (r.x_z, r.x_delta, r.secs_since_prev) == (0.0, 0.0, 86400.0)
    assert (r.shingle_lag1, r.shingle_lag2) == (2.0, 2.0)


def test_rolling_stats_exclude_the_current_row(hand_features):
    r2, r3 = hand_features["e2"], hand_features["e3"]
    assert (r2.dev_cnt_1h, r2.x_mean_1h, r2.x_std_1h, r2.x_min_1h, r2.x_max_1h) == (1, 2.0, 0.0, 2.0, 2.0)
    assert r2.x_z == 0.0  # fewer than two past events
    # e3 at 11:00: the 1 hour history [10:00, 11:00) holds e1 (exactly 1 h before) and e2
    assert (r3.dev_cnt_1h, r3.x_mean_1h, r3.x_min_1h, r3.x_max_1h) == (2, 3.0, 2.0, 4.0)
    assert r3.x_std_1h == pytest.approx(math.sqrt(2.0))
    assert r3.x_z == pytest.approx((9.0 - 3.0) / math.sqrt(2.0))


def test_short_window_empties_while_long_window_remembers(hand_features):
    r4 = hand_features["e4"]  # 12:30, nothing since 11:30
    assert (r4.dev_cnt_1h, r4.x_mean_1h, r4.x_std_1h) == (0, 9.0, 0.0)
    assert (r4.dev_cnt_1d, r4.x_mean_1d, r4.x_min_1d, r4.x_max_1d) == (3, 5.0, 2.0, 9.0)
    assert r4.x_std_1d == pytest.approx(math.sqrt(13.0))
    assert r4.x_z == pytest.approx(4.0 / math.sqrt(13.0))


def test_deltas_and_shingles_use_previous_events(hand_features):
    r2, r3, r4 = hand_features["e2"], hand_features["e3"], hand_features["e4"]
    assert (r2.x_delta, r2.secs_since_prev, r2.shingle_lag1, r2.shingle_lag2) == (2.0, 1800.0, 2.0, 2.0)
    assert (r3.x_delta, r3.secs_since_prev, r3.shingle_lag1, r3.shingle_lag2) == (5.0, 1800.0, 4.0, 2.0)
    assert (r4.x_delta, r4.secs_since_prev, r4.shingle_lag1, r4.shingle_lag2) == (0.0, 5400.0, 9.0, 4.0)


def test_site_activity_and_device_share(hand_features):
    r1, r2, r3, f1, r4 = (hand_features[k] for k in ("e1", "e2", "e3", "f1", "e4"))
    assert (r1.site_cnt_1h, r1.site_volume_1h, r1.dev_share_1h) == (1, 2.0, 1.0)
    assert (r2.site_cnt_1h, r2.site_volume_1h, r2.dev_share_1h) == (2, 6.0, 1.0)
    # 11:00: e1..e3 and f1 (same instant, other device) are in [10:00, 11:00]
    assert (r3.site_cnt_1h, r3.site_volume_1h) == (4, 115.0)
    assert r3.dev_share_1h == pytest.approx(15.0 / 115.0)
    assert (f1.site_cnt_1h, f1.site_volume_1h) == (4, 115.0)
    assert f1.dev_share_1h == pytest.approx(100.0 / 115.0)
    assert (r4.site_cnt_1h, r4.site_volume_1h, r4.dev_share_1h) == (0, 0.0, 0.0)  # no site


def test_zscore_with_a_flat_history_is_capped(spark):
    rows = [(f"e{i}", "d", "s", at(i), v, 0, "") for i, v in enumerate([5.0, 5.0, 5.0, 7.0, 5.0])]
    out = build_telemetry_features(
        spark.createDataFrame(rows, SCHEMA),
        measures=["x"],
        windows=["1 day"],
        shingle_size=1,
        shingle_measure="x",
        zscore_cap=50.0,
    )
    z = {r.event_id: r.x_z for r in out.collect()}
    assert (z["e2"], z["e3"]) == (0.0, 50.0)
    assert -50.0 < z["e4"] < 0.0


def test_shingle_values_older_than_the_largest_window_are_not_used(spark):
    rows = [
        ("e0", "d", "s", at(0), 1.0, 0, ""),
        ("e1", "d", "s", at(30), 2.0, 0, ""),
        ("e2", "d", "s", at(31), 3.0, 0, ""),
    ]
    out = build_telemetry_features(
        spark.createDataFrame(rows, SCHEMA), measures=["x"], windows=["1 day"], shingle_size=3, shingle_measure="x"
    )
    r = {row.event_id: row for row in out.collect()}["e2"]
    assert (r.shingle_lag1, r.shingle_lag2) == (2.0, 2.0)  # e0 is 31 h old: repeat the newer value
    assert r.secs_since_prev == 3600.0


def test_missing_or_wrong_columns_raise_a_named_error(spark, hand_df):
    with pytest.raises(TelemetryFeatureError, match="event_time"):
        build_telemetry_features(
            hand_df.drop("event_time"), measures=["x"], windows=["1 hour"], shingle_size=2, shingle_measure="x"
        )
    with pytest.raises(TelemetryFeatureError, match="x"):
        build_telemetry_features(
            hand_df.withColumn("x", F.lit("a")), measures=["x"], windows=["1 hour"], shingle_size=2, shingle_measure="x"
        )
    with pytest.raises(TelemetryFeatureError, match="shingle_measure"):
        build_telemetry_features(hand_df, measures=["x"], windows=["1 hour"], shingle_size=2, shingle_measure="y")


# ---- point in time and incremental, on generated data ----
MEASURES = ["bytes_down", "errors"]  # two measures keep the plans (and the test) small
WINDOWS = ["1 hour", "6 hours", "1 day"]


def _features(df):
    return build_telemetry_features(
        df, measures=MEASURES, windows=WINDOWS, shingle_size=4, shingle_measure="bytes_down"
    )


@pytest.fixture(scope="module")
def generated_df(spark):
    df = generate_telemetry(
        spark,
        devices=40,
        sites=4,
        days=4,
        start_date="2026-01-05",
        sessions_per_hour=2.0,
        anomaly_fraction=0.01,
        seed=3,
        partitions=2,
    )
    return df.localCheckpoint()


def test_future_rows_do_not_change_past_features(generated_df):
    cutoff = F.lit(at(24 * 2 + 13.5))
    past_df = generated_df.where(F.col("event_time") < cutoff)
    with_future = _features(generated_df).where(F.col("event_time") < cutoff)
    assert_same_rows(_features(past_df), with_future)


def test_incremental_day_equals_full_computation(generated_df):
    day = dt.date(2026, 1, 7)
    start = dt.datetime.combine(day, dt.time(), dt.UTC) - dt.timedelta(seconds=lookback_seconds(WINDOWS))
    end = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(days=1)
    window_df = generated_df.where((F.col("event_time") >= F.lit(start)) & (F.col("event_time") < F.lit(end)))
    incremental = _features(window_df).where(F.col("date") == F.lit(day))
    full = _features(generated_df).where(F.col("date") == F.lit(day))
    assert incremental.count() > 500
    assert_same_rows(incremental, full)
