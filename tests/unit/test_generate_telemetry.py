"""The synthetic telemetry generator: schema, determinism, row model and labeled anomalies."""

import pandas as pd
import pytest

from frames import assert_same_rows
from pyspark.sql import functions as F

from synthetic.telemetry import (
    ANOMALY_TYPES,
    OUTPUT_COLUMNS,
    devices_for_rows,
    generate_telemetry,
    rows_for,
)


ARGS = {
    "devices": 300,
    "sites": 20,
    "days": 7,
    "start_date": "2026-01-05",
    "sessions_per_hour": 1.0,
    "anomaly_fraction": 0.01,
    "seed": 11,
    "partitions": 3,
}


@pytest.fixture(scope="module")
def telemetry_df(spark):
    return generate_telemetry(spark, **ARGS)


@pytest.fixture(scope="module")
def telemetry_pd(telemetry_df):
    return telemetry_df.toPandas()


def test_generator_has_the_agreed_columns_and_types(telemetry_df):
    types = dict(telemetry_df.dtypes)
    assert tuple(telemetry_df.columns) == OUTPUT_COLUMNS
    assert types["event_id"] == types["device_id"] == types["site_id"] == types["anomaly_type"] == "string"
    assert types["event_time"] == "timestamp"
    assert types["label"] == "int"
    assert types["duration_s"] == "double"
    assert {types[c] for c in ("bytes_up", "bytes_down", "packets", "errors")} == {"bigint"}


def test_generator_is_deterministic_whatever_the_partitioning(spark, telemetry_df):
    again_df = generate_telemetry(spark, **{**ARGS, "partitions": 5})
    assert_same_rows(again_df, telemetry_df)


def test_other_seed_gives_other_rows(spark, telemetry_pd):
    other = generate_telemetry(spark, **{**ARGS, "seed": 12, "devices": 20}).toPandas()
    mine = telemetry_pd[telemetry_pd.device_id.isin(other.device_id.unique())]
    assert len(set(other.event_id) ^ set(mine.event_id)) > 0


def test_event_ids_are_unique_and_measures_valid(telemetry_pd):
    assert telemetry_pd.event_id.is_unique
    assert telemetry_pd[["event_id", "device_id", "site_id", "event_time"]].notna().all().all()
    for column in ("duration_s", "bytes_up", "bytes_down", "packets", "errors"):
        assert (telemetry_pd[column] >= 0).all(), column
    start = pd.Timestamp("2026-01-05")
    assert telemetry_pd.event_time.min() >= start
    assert telemetry_pd.event_time.max() < start + pd.Timedelta(days=7)


def test_row_count_follows_the_row_model(telemetry_pd):
    normal = (telemetry_pd.label == 0).sum()
    expected = rows_for(ARGS["devices"], ARGS["days"], ARGS["sessions_per_hour"])
    assert abs(normal - expected) / expected < 0.1
    assert devices_for_rows(rows_for(5000, 14, 2.0), 14, 2.0) == 5000


def test_every_anomaly_kind_is_labeled_and_the_fraction_is_small(telemetry_pd):
    labeled = telemetry_pd[telemetry_pd.label == 1]
    assert set(labeled.anomaly_type) == set(ANOMALY_TYPES)
    assert telemetry_pd[telemetry_pd.label == 0].anomaly_type.isna().all()
    assert 0.005 <= telemetry_pd.label.mean() <= 0.02


def test_seasonality_business_hours_busier_than_night(telemetry_pd):
    normal = telemetry_pd[telemetry_pd.label == 0]
    hour = normal.event_time.dt.hour
    weekday = normal.event_time.dt.dayofweek < 5
    assert (weekday & hour.between(9, 17)).sum() / 9 > 3 * (weekday & hour.between(1, 4)).sum() / 4
    per_day = normal.groupby(normal.event_time.dt.dayofweek).size()
    assert per_day.loc[[5, 6]].mean() < per_day.loc[[0, 1, 2, 3, 4]].mean()


def test_packets_follow_bytes(telemetry_pd):
    normal = telemetry_pd[telemetry_pd.label == 0]
    total = normal.bytes_up + normal.bytes_down
    assert total.corr(normal.packets, method="spearman") > 0.8


def test_new_site_bursts_come_from_sites_the_device_never_used(telemetry_pd):
    normal = telemetry_pd[telemetry_pd.label == 0]
    usual = normal.groupby("device_id").site_id.agg(set)
    bursts = telemetry_pd[telemetry_pd.anomaly_type == "new_site_burst"]
    for (device, site), rows in bursts.groupby(["device_id", "site_id"]):
        assert site not in usual.get(device, set())
        assert len(rows) >= 10  # many sessions in a short time


def test_unusual_hours_are_at_night(telemetry_pd):
    night = telemetry_pd[telemetry_pd.anomaly_type == "unusual_hours"]
    assert night.event_time.dt.hour.between(1, 5).all()


def test_flatlined_sensors_repeat_one_reading(telemetry_pd):
    flat = telemetry_pd[telemetry_pd.anomaly_type == "flatline"]
    per_device = flat.groupby("device_id")[["duration_s", "bytes_up", "bytes_down", "packets", "errors"]].nunique()
    assert (per_device == 1).all().all()


def test_spikes_and_collective_windows_are_much_louder(telemetry_pd):
    typical = telemetry_pd[telemetry_pd.label == 0].groupby("device_id").bytes_down.median()
    for kind, at_least in (("volume_spike", 4.0), ("collective", 2.0)):
        rows = telemetry_pd[telemetry_pd.anomaly_type == kind]
        ratio = (rows.bytes_down / rows.device_id.map(typical)).median()
        assert ratio > at_least, kind
    collective = telemetry_pd[telemetry_pd.anomaly_type == "collective"]
    assert collective.device_id.nunique() >= 5


def test_slow_drift_ramps_up(telemetry_pd):
    drift = telemetry_pd[telemetry_pd.anomaly_type == "slow_drift"].sort_values("event_time")
    device = drift.device_id.value_counts().index[0]
    rows = drift[drift.device_id == device]
    half = len(rows) // 2
    assert rows.bytes_down.iloc[half:].median() > rows.bytes_down.iloc[:half].median()


def test_generator_rejects_bad_arguments(spark):
    with pytest.raises(ValueError, match="anomaly_fraction"):
        generate_telemetry(spark, **{**ARGS, "anomaly_fraction": 0.9})
    with pytest.raises(ValueError):
        generate_telemetry(spark, **{**ARGS, "devices": 0})


def test_generator_runs_without_collecting(spark, telemetry_df):
    # rows are built from spark.range: the plan has no local relation of event rows
    plan = telemetry_df._jdf.queryExecution().optimizedPlan().toString()
    assert "Range" in plan
    assert telemetry_df.where(F.col("label") == 1).count() > 0
