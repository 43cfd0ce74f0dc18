"""Unit tests of the summary transforms (reporting/summary.py) and the QuickSight/Athena writers
(reporting/quicksight.py) on small hand-written frames."""
import datetime as dt
import json
import math
import os

import pytest
from pyspark.sql import types as T

from reporting import summary as S
from reporting import quicksight as Q
from runtime import fs

DAY = dt.date(2026, 1, 7)

SCHEMA = T.StructType([
    T.StructField("device_id", T.StringType()),
    T.StructField("site_id", T.StringType()),
    T.StructField("event_time", T.TimestampType()),
    T.StructField("date", T.DateType()),
    T.StructField("label", T.IntegerType()),
    T.StructField("risk", T.DoubleType()),
    T.StructField("is_anomaly", T.BooleanType()),
    T.StructField("reasons", T.ArrayType(T.StringType())),
    T.StructField("bytes_down", T.DoubleType()),
])


def event(device, site, hour, risk, label=0, day=DAY, reasons=("rcf:bytes_down",), bytes_down=1.0):
    return (device, site, dt.datetime.combine(day, dt.time(hour, 30)), day, label, risk, risk >= 0.5,
            list(reasons), bytes_down)


@pytest.fixture(scope="module")
def scores_df(spark):
    rows = [
        event("d1", "s1", 0, 0.9, 1, reasons=("rcf:bytes_down", "logistic:errors")),
        event("d1", "s1", 0, 0.7, 1, reasons=("logistic:errors",)),
        event("d1", "s2", 5, 0.1, reasons=("rcf:packets",)),
        event("d2", "s1", 5, 0.2),
        event("d2", "s1", 23, 0.6, 0, reasons=("rcf:duration_s",)),
        event("d3", "s2", 12, 0.05, None),
        event("d1", "s1", 3, 0.95, 1, day=DAY - dt.timedelta(days=1)),  # the day before
    ]
    return spark.createDataFrame(rows, SCHEMA)


def values_df(spark, values, name="x"):
    return spark.createDataFrame([(float(v),) for v in values], f"{name} double")


# ---------------------------------------------------------------- PSI

@pytest.fixture(scope="module")
def psi_rows(spark):
    """One PSI run over three columns: x identical, y shifted by half its range, z without
    reference values."""
    ref = spark.createDataFrame([(float(v), float(v), None) for v in range(100)], "x double, y double, z double")
    cur = spark.createDataFrame([(float(v), float(v + 50), 1.0) for v in range(100)], "x double, y double, z double")
    return {r["column"]: r for r in S.psi(ref, cur, ["x", "y", "z"]).collect()}


def test_psi_of_identical_distributions_is_zero(psi_rows):
    row = psi_rows["x"]
    assert row["psi"] == pytest.approx(0.0, abs=1e-12)
    assert row["reading"] == "stable" and row["bins"] == 10
    assert (row["reference_rows"], row["current_rows"]) == (100, 100)


def test_psi_of_a_shifted_distribution_is_significant_and_an_empty_bin_stays_finite(psi_rows):
    row = psi_rows["y"]
    assert row["psi"] > 0.25 and row["reading"] == "significant"
    assert math.isfinite(row["psi"])  # the lower bins are empty in the current: epsilon, not log(0)


def test_psi_of_a_column_without_reference_values_is_null(psi_rows):
    row = psi_rows["z"]
    assert row["psi"] is None and row["reading"] is None
    assert (row["reference_rows"], row["current_rows"]) == (0, 100)


def test_psi_matches_the_hand_computed_value(spark):
    # reference 1..10: median edge 5 -> bins (-inf, 5], (5, inf) with shares 0.5 / 0.5;
    # current: 8 values <= 5 and 2 above -> 0.8 / 0.2
    ref = values_df(spark, range(1, 11))
    cur = values_df(spark, [1, 2, 3, 4, 5, 1, 2, 3, 9, 10])
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    row = S.psi(ref, cur, ["x"], bins=2).first()
    assert row["psi"] == pytest.approx(expected, rel=1e-9)  # 0.416
    assert row["reading"] == "significant" and row["bins"] == 2


def test_psi_reading_uses_the_usual_thresholds(spark):
    df = spark.createDataFrame([(0.0,), (0.099,), (0.1,), (0.2499,), (0.25,), (3.0,), (None,)], "p double")
    assert [r[0] for r in df.select(S.psi_reading("p")).collect()] == \
        ["stable", "stable", "moderate", "moderate", "significant", "significant", None]


def test_psi_rejects_too_few_bins_and_names_missing_columns(spark):
    df = values_df(spark, [1, 2])
    with pytest.raises(ValueError, match="at least 2 bins"):
        S.psi(df, df, ["x"], bins=1)
    with pytest.raises(S.SummaryInputError, match="column\\(s\\) nope"):
        S.psi(df, df, ["nope"])


# ---------------------------------------------------------------- day over day

PREV = DAY - dt.timedelta(days=1)
LIMITS = S.JumpLimits(alert_ratio=2.0, min_alerts=20, events_ratio=2.0, psi=0.25)


def day_rows(day, events, alerts, scores=None):
    """``events`` rows of ``day``, the first ``alerts`` of them anomalies; rcf_score/risk from
    ``scores`` (a list of (risk, rcf_score) per row) or 0.9 / 0.1 by anomaly."""
    return [(day, 0, *(scores[i] if scores else ((0.9, 3.0) if i < alerts else (0.1, 1.0))), i < alerts)
            for i in range(events)]


def comparison(spark, rows, limits=LIMITS):
    df = spark.createDataFrame(rows, "date date, label int, risk double, rcf_score double, is_anomaly boolean")
    return {r["measure"]: r for r in S.day_comparison(df, DAY, PREV, limits).collect()}


def test_alerts_five_times_yesterdays_are_a_jump_the_events_moving_by_a_fifth_are_not(spark):
    # yesterday 50 events, 10 alerts; today 60 events, 50 alerts
    rows = comparison(spark, day_rows(PREV, 50, 10) + day_rows(DAY, 60, 50))
    alerts, rate, events = rows["alerts"], rows["anomaly_rate"], rows["events"]
    assert (alerts["value"], alerts["previous"], alerts["ratio"], alerts["jump"]) == (50, 10, 5.0, True)
    assert (rate["value"], rate["previous"]) == (pytest.approx(50 / 60), pytest.approx(0.2))
    assert rate["ratio"] == pytest.approx((50 / 60) / 0.2) and rate["jump"]  # x4.17
    assert (events["value"], events["previous"], events["jump"]) == (60, 50, False)
    assert events["ratio"] == pytest.approx(1.2)
    assert {r["date"] for r in rows.values()} == {DAY} and {r["compared_with"] for r in rows.values()} == {PREV}
    assert set(rows) == {"events", "alerts", "anomaly_rate", "risk", "rcf_score"}


def test_alerts_moving_by_a_fifth_are_no_jump(spark):
    rows = comparison(spark, day_rows(PREV, 50, 25) + day_rows(DAY, 50, 30))
    assert rows["alerts"]["ratio"] == pytest.approx(1.2) and not rows["alerts"]["jump"]
    assert rows["anomaly_rate"]["ratio"] == pytest.approx(1.2) and not rows["anomaly_rate"]["jump"]


def test_a_ratio_of_exactly_the_limit_is_no_jump_and_a_drop_counts_either_way(spark):
    # 40 -> 20 alerts is x0.5: exactly the limit 2 inverted, no jump; 100 -> 40 events is x0.4: a jump
    rows = comparison(spark, day_rows(PREV, 100, 40) + day_rows(DAY, 40, 20))
    assert rows["alerts"]["ratio"] == pytest.approx(0.5) and not rows["alerts"]["jump"]
    assert rows["events"]["ratio"] == pytest.approx(0.4) and rows["events"]["jump"]


def test_few_alerts_are_no_jump_whatever_the_ratio_until_the_minimum_count(spark):
    few = day_rows(PREV, 50, 1) + day_rows(DAY, 50, 3)      # 1 -> 3: x3 but under 20 alerts
    rows = comparison(spark, few)
    assert rows["alerts"]["ratio"] == pytest.approx(3.0) and not rows["alerts"]["jump"]
    assert not rows["anomaly_rate"]["jump"]
    rows = comparison(spark, few, S.JumpLimits(alert_ratio=2.0, min_alerts=3))
    assert rows["alerts"]["jump"] and rows["anomaly_rate"]["jump"]
    # from none to 25: no ratio, but a jump (25 >= 20)
    rows = comparison(spark, day_rows(PREV, 50, 0) + day_rows(DAY, 50, 25))
    assert (rows["alerts"]["previous"], rows["alerts"]["ratio"], rows["alerts"]["jump"]) == (0, None, True)


def test_score_psi_is_zero_on_identical_days_and_flags_a_shifted_score(spark):
    # risk the same 100 values both days; rcf_score shifted by half its range (as psi_rows' y)
    before = [(v / 100, float(v)) for v in range(100)]
    after = [(v / 100, float(v + 50)) for v in range(100)]
    rows = comparison(spark, day_rows(PREV, 100, 30, before) + day_rows(DAY, 100, 30, after))
    risk, rcf = rows["risk"], rows["rcf_score"]
    assert risk["psi"] == pytest.approx(0.0, abs=1e-12) and not risk["jump"]
    assert rcf["psi"] > 0.25 and rcf["jump"]
    assert (risk["value"], risk["previous"]) == (pytest.approx(0.495), pytest.approx(0.495))
    assert (rcf["value"], rcf["previous"]) == (pytest.approx(99.5), pytest.approx(49.5))
    # percentile_approx returns a value of the data: the smallest with >= q of the rows at or below it
    assert (risk["p50"], risk["p90"], risk["p99"]) == (0.49, 0.89, 0.98)
    assert (rcf["p50"], rcf["previous_p50"]) == (99.0, 49.0)
    assert risk["kind"] == "score" and risk["ratio"] is None and risk["rule"] == "PSI > 0.25"
    assert not rows["alerts"]["jump"] and rows["alerts"]["psi"] is None


def test_the_comparison_needs_an_earlier_date(spark):
    df = spark.createDataFrame(day_rows(DAY, 2, 1), "date date, label int, risk double, rcf_score double, "
                                                    "is_anomaly boolean")
    with pytest.raises(ValueError, match="must be before 2026-01-07"):
        S.day_comparison(df, DAY, DAY, LIMITS)


def test_expected_alerts_are_the_median_and_range_of_the_dates_with_scores_in_the_window(spark):
    # 7-day window D-6 .. D with D-3 missing: alerts 4, 10, 6, 8, 12, 7; D-8 (50 alerts) is outside
    alerts = {-8: 50, -6: 4, -5: 10, -4: 6, -2: 8, -1: 12, 0: 7}
    rows = [r for back, n in alerts.items() for r in day_rows(DAY + dt.timedelta(days=back), 60, n)]
    df = spark.createDataFrame(rows, "date date, label int, risk double, rcf_score double, is_anomaly boolean")
    row = S.expected_alerts(df, DAY, 7).first()
    assert (row["date"], row["for_date"]) == (DAY, DAY + dt.timedelta(days=1))
    assert (row["days"], row["first_date"], row["last_date"]) == (6, DAY - dt.timedelta(days=6), DAY)
    assert row["median_alerts"] == pytest.approx(7.5)  # sorted 4 6 7 8 10 12: (7 + 8) / 2
    assert (row["min_alerts"], row["max_alerts"], row["median_events"]) == (4, 12, 60)
    assert row["median_rate"] == pytest.approx(7.5 / 60)


# ---------------------------------------------------------------- counts

def test_anomalies_per_hour_counts_events_and_anomalies_of_the_date_in_all_24_hours(scores_df):
    rows = {r["hour"]: r for r in S.anomalies_per_hour(scores_df, DAY).collect()}
    assert sorted(rows) == list(range(24))
    assert (rows[0]["events"], rows[0]["anomalies"]) == (2, 2)
    assert (rows[5]["events"], rows[5]["anomalies"]) == (2, 0)
    assert (rows[23]["events"], rows[23]["anomalies"]) == (1, 1)
    assert (rows[3]["events"], rows[3]["anomalies"], rows[3]["mean_risk"]) == (0, 0, None)  # the day before's event
    assert rows[12]["hour_start"] == dt.datetime(2026, 1, 7, 12, 0)
    assert {r["date"] for r in rows.values()} == {DAY}


def test_daily_counts_per_date(scores_df):
    rows = {r["date"]: r for r in S.daily_counts(scores_df).collect()}
    today = rows[DAY]
    assert (today["events"], today["anomalies"], today["labeled"], today["positives"], today["true_positives"]) \
        == (6, 3, 5, 2, 2)
    assert today["anomaly_rate"] == pytest.approx(0.5)
    assert today["max_risk"] == 0.9
    assert rows[DAY - dt.timedelta(days=1)]["events"] == 1


def test_counts_by_location_with_distinct_entities(scores_df):
    rows = {r["site_id"]: r for r in S.counts_by(S.for_date(scores_df, DAY), "site_id",
                                                  distinct_col="device_id").collect()}
    assert (rows["s1"]["events"], rows["s1"]["anomalies"], rows["s1"]["max_risk"], rows["s1"]["distinct_device_id"]) \
        == (4, 3, 0.9, 2)
    assert (rows["s2"]["events"], rows["s2"]["anomalies"], rows["s2"]["distinct_device_id"]) == (2, 0, 2)


def test_top_entities_rank_by_max_risk_with_most_frequent_reasons_of_anomalies(scores_df):
    rows = S.top_entities(S.for_date(scores_df, DAY), "device_id", n=2, reasons=2, location_col="site_id").collect()
    rows = sorted(rows, key=lambda r: r["rank"])
    assert [(r["rank"], r["device_id"]) for r in rows] == [(1, "d1"), (2, "d2")]
    # d1's anomalies name logistic:errors twice, rcf:bytes_down once; rcf:packets is from a normal event
    assert rows[0]["top_reasons"] == ["logistic:errors", "rcf:bytes_down"]
    assert rows[0]["top_location"] == "s1" and rows[0]["distinct_site_id"] == 2
    assert rows[1]["top_reasons"] == ["rcf:duration_s", "rcf:bytes_down"]


def test_score_histogram_bins_risk_over_unit_interval_by_label(scores_df):
    rows = S.score_histogram(S.for_date(scores_df, DAY), ["risk"], bins=2).collect()
    got = {(r["label"], r["bin"]): r["count"] for r in rows}
    assert got == {(1, 1): 2, (0, 0): 2, (0, 1): 1, (None, 0): 1}
    assert {(r["bin"], r["bin_lo"], r["bin_hi"]) for r in rows} == {(0, 0.0, 0.5), (1, 0.5, 1.0)}


def test_feature_columns_are_the_numeric_columns_that_are_not_ids_labels_or_scores(spark):
    df = spark.createDataFrame([], "event_id string, device_id string, label int, risk double, rcf_score double, "
                                   "bytes_down double, packets bigint, date date, name string, is_anomaly boolean")
    assert S.feature_columns(df) == ["bytes_down", "packets"]
    assert S.score_columns(df) == ["risk", "rcf_score"]


# ---------------------------------------------------------------- QuickSight manifest and Athena DDL

def test_manifest_structure_for_csv_names_s3_uris():
    content = Q.manifest(uris=["s3a://bucket/summary/part-0.csv"])
    assert content == {
        "fileLocations": [{"URIs": ["s3://bucket/summary/part-0.csv"]}],
        "globalUploadSettings": {"format": "CSV", "delimiter": ",", "textqualifier": '"', "containsHeader": "true"},
    }
    json.dumps(content)  # serialisable as is


def test_manifest_for_json_gives_the_format_only_and_prefixes():
    content = Q.manifest(prefixes=["s3a://bucket/summary/"], fmt="json")
    assert content == {"fileLocations": [{"URIPrefixes": ["s3://bucket/summary/"]}],
                       "globalUploadSettings": {"format": "JSON"}}


def test_manifest_rejects_no_files_too_many_files_and_a_bad_name(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        Q.manifest()
    with pytest.raises(ValueError, match="at most 1000"):
        Q.manifest(uris=[f"s3://b/{i}.csv" for i in range(1001)])
    with pytest.raises(ValueError, match=r"end in \.json"):
        Q.write_manifest(str(tmp_path / "m.txt"), ["s3://b/x.csv"])


def test_quicksight_uri_maps_s3a_to_s3_and_local_paths_to_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Q.quicksight_uri("s3a://b/k/x.csv") == "s3://b/k/x.csv"
    assert Q.quicksight_uri("s3://b/k") == "s3://b/k"
    assert Q.quicksight_uri("lake/x.csv") == os.path.join(str(tmp_path), "lake", "x.csv")
    assert Q.quicksight_uri("file:/abs/x.csv") == "/abs/x.csv"
    with pytest.raises(ValueError, match="S3 only"):
        Q.quicksight_uri("hdfs://nn/x")


def test_athena_ddl_with_partition_projection_and_with_msck():
    schema = T.StructType([T.StructField("device_id", T.StringType()), T.StructField("risk", T.DoubleType()),
                           T.StructField("events", T.LongType()), T.StructField("reasons", T.ArrayType(T.StringType())),
                           T.StructField("date", T.DateType())])
    ddl = Q.create_table_ddl("telemetry_scores", schema, "s3a://lake/scores/telemetry", database="zen")
    assert ddl.startswith("CREATE EXTERNAL TABLE IF NOT EXISTS `zen`.`telemetry_scores` (")
    assert "`device_id` string" in ddl and "`events`    bigint" in ddl and "`reasons`   array<string>" in ddl
    assert "PARTITIONED BY (`date` string)" in ddl and "`date`  " not in ddl.split("PARTITIONED")[0]
    assert "LOCATION 's3://lake/scores/telemetry/'" in ddl
    assert "'storage.location.template' = 's3://lake/scores/telemetry/date=${date}/'" in ddl
    assert "MSCK" not in ddl.replace("no MSCK REPAIR TABLE needed", "")
    plain = Q.create_table_ddl("t", schema, "s3a://lake/t", projection=False)
    assert "projection" not in plain and "MSCK REPAIR TABLE `t`;" in plain
    local = Q.create_table_ddl("t", schema, "/data/t")
    assert "-- NOTE: /data/t/ is a local path" in local


def test_athena_ddl_for_a_delta_table_names_only_location_and_table_type():
    schema = T.StructType([T.StructField("risk", T.DoubleType()), T.StructField("date", T.DateType())])
    ddl = Q.create_table_ddl("telemetry_scores", schema, "s3a://lake/scores/telemetry", database="zen",
                             table_format="delta", comment="scores")
    # Athena's Delta form: columns and partitions come from the Delta log; any other property is refused
    assert ddl == ("-- scores\n"
                   "CREATE EXTERNAL TABLE IF NOT EXISTS `zen`.`telemetry_scores`\n"
                   "LOCATION 's3://lake/scores/telemetry/'\n"
                   "TBLPROPERTIES ('table_type' = 'DELTA');\n")
    with pytest.raises(ValueError, match="'orc'"):
        Q.create_table_ddl("t", schema, "s3a://lake/t", table_format="orc")


def test_text_round_trip_on_a_local_path(tmp_path):
    path = str(tmp_path / "a" / "b.sql")
    fs.write_text(path, "select 1;\n")
    assert fs.read_text(path) == "select 1;\n"


def test_jump_lines_name_the_measure_both_values_and_the_factor():
    from reporting.daily import jump_lines

    def row(measure, kind, value, previous, ratio, jump, compared_with=DAY - dt.timedelta(days=1), psi=None):
        return {"measure": measure, "kind": kind, "value": value, "previous": previous, "ratio": ratio,
                "jump": jump, "compared_with": compared_with, "psi": psi, "rule": "PSI > 0.25"}

    rows = [row("events", "count", 1200.0, 48000.0, 0.025, True), row("alerts", "count", 412.0, 95.0, 412 / 95, True),
            row("anomaly_rate", "rate", 0.0085, 0.002, 4.25, False),
            row("risk", "score", 0.31, 0.12, None, True, DAY - dt.timedelta(days=3), psi=0.4123),
            row("alerts", "count", 25.0, 0.0, None, True, DAY - dt.timedelta(days=2))]
    assert jump_lines(rows, DAY) == [
        "JUMP: events 1,200 vs 48,000 yesterday (x0.025)",
        "JUMP: alerts 412 vs 95 yesterday (x4.3)",
        "JUMP: risk PSI 0.41 against 2026-01-04 (PSI > 0.25; mean 0.31 vs 0.12)",
        "JUMP: alerts 25 vs 0 on 2026-01-05",
    ]
