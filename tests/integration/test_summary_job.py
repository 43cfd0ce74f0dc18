"""The summary job end to end on a small synthetic scores table written to a temp folder: Delta
tables (the default storage.format) for the job, Parquet for the stage run with storage_format
parquet.
"""
import csv
import datetime as dt
import json
import os
import random
from pathlib import Path

import pytest
from pyspark.sql import types as T

from jobs import summary as summary_job

DAYS = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(4)]
LAST = DAYS[-1]

SCORES_SCHEMA = T.StructType([
    T.StructField("event_id", T.StringType()),
    T.StructField("device_id", T.StringType()),
    T.StructField("site_id", T.StringType()),
    T.StructField("event_time", T.TimestampType()),
    T.StructField("date", T.DateType()),
    T.StructField("label", T.IntegerType()),
    T.StructField("rcf_score", T.DoubleType()),
    T.StructField("logistic_score", T.DoubleType()),
    T.StructField("risk", T.DoubleType()),
    T.StructField("is_anomaly", T.BooleanType()),
    T.StructField("rcf_version", T.StringType()),
    T.StructField("logistic_version", T.StringType()),
    T.StructField("reasons", T.ArrayType(T.StringType())),
    T.StructField("bytes_down", T.DoubleType()),
    T.StructField("duration_s", T.DoubleType()),
])


def synthetic_scores(rows_per_day=240, seed=3):
    """Telemetry-like scores for DAYS: 12 devices on 3 sites; bytes_down shifts upward on the last
    day (drift), duration_s does not; every 20th event is a labeled anomaly with a high risk."""
    rng = random.Random(seed)
    rows = []
    for day in DAYS:
        shift = 3.0 if day == LAST else 0.0
        for i in range(rows_per_day):
            device = f"d{i % 12:02d}"
            anomalous = i % 20 == 0
            risk = 0.9 if anomalous else rng.uniform(0.0, 0.4)
            reasons = ["rcf:bytes_down", "logistic:duration_s"] if anomalous else ["rcf:duration_s"]
            rows.append((f"{day}-{i}", device, f"s{i % 3}",
                         dt.datetime.combine(day, dt.time(hour=i % 24, minute=i % 60)), day,
                         1 if anomalous else 0, rng.gauss(1.0, 0.2) + (2.0 if anomalous else 0.0),
                         rng.uniform(0, 1), risk, risk >= 0.5, "rcf-v1", "logistic-v1", reasons,
                         rng.gauss(10.0 + shift, 1.0), rng.gauss(60.0, 5.0)))
    return rows


def write_delta(df, path):
    df.write.format("delta").partitionBy("date").save(str(path))


def read_delta(spark, path):
    return spark.read.format("delta").load(str(path))


@pytest.fixture(scope="module")
def scores_path(spark, tmp_path_factory):
    path = tmp_path_factory.mktemp("scores") / "telemetry"
    write_delta(spark.createDataFrame(synthetic_scores(), SCORES_SCHEMA), path)
    return path


def run_job(tmp, scores, *extra):
    out = tmp / "summary"
    report = tmp / "report.html"
    code = summary_job.main([
        "--conf", str(Path(__file__).resolve().parents[2] / "conf" / "local.yaml"),
        "--set", "spark.master=local[2]", "--set", "spark.driver_memory=2g", "--set", "spark.extra_jars=",
        "--set", "spark.shuffle_partitions=4", "--set", f"storage.lake={tmp / 'lake'}",
        "--dataset", "telemetry", "--input", str(scores), "--output", str(out), "--report", str(report),
        "--reference-days", "3", "--top", "5", *extra])
    return code, out, report


@pytest.fixture(scope="module")
def job_output(spark, scores_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summary_run")
    code, out, report = run_job(tmp, scores_path)
    assert code == 0
    return out, report


def test_summary_tables_are_delta_tables_partitioned_by_date(spark, job_output):
    out, _ = job_output
    for table in ("daily", "hourly", "entities", "locations", "histogram", "top_entities", "drift", "compare",
                  "expected"):
        assert (out / table / "_delta_log" / "00000000000000000000.json").is_file(), table
        assert (out / table / f"date={LAST}").is_dir(), table
    hourly = read_delta(spark, out / "hourly").where(f"date = '{LAST}'")
    assert hourly.count() == 24
    assert hourly.agg({"events": "sum"}).first()[0] == 240
    assert hourly.agg({"anomalies": "sum"}).first()[0] == 12
    daily = read_delta(spark, out / "daily").orderBy("date").collect()
    assert [r["date"] for r in daily] == DAYS
    assert all(r["anomalies"] == 12 and r["positives"] == 12 and r["true_positives"] == 12 for r in daily)


def test_top_entities_carry_their_most_frequent_reasons(spark, job_output):
    out, _ = job_output
    top = read_delta(spark, out / "top_entities").orderBy("rank").collect()
    assert [r["rank"] for r in top] == [1, 2, 3, 4, 5]
    # anomalies are events 0, 20, 40, ... -> devices d00, d08, d04 (i % 12): they lead with risk 0.9
    assert {r["device_id"] for r in top[:3]} == {"d00", "d04", "d08"}
    assert top[0]["top_reasons"][:2] == ["logistic:duration_s", "rcf:bytes_down"] or \
        top[0]["top_reasons"][:2] == ["rcf:bytes_down", "logistic:duration_s"]


def test_drift_flags_the_shifted_feature_only(spark, job_output):
    out, _ = job_output
    drift = {r["column"]: r for r in read_delta(spark, out / "drift").collect()}
    assert set(drift) == {"bytes_down", "duration_s", "risk", "rcf_score", "logistic_score"}
    assert drift["bytes_down"]["reading"] == "significant" and drift["bytes_down"]["kind"] == "feature"
    assert drift["duration_s"]["psi"] < 0.25
    assert drift["risk"]["kind"] == "score"
    assert drift["bytes_down"]["reference_rows"] == 3 * 240


def test_each_export_has_a_manifest_naming_existing_files_whose_header_matches_the_table(spark, job_output):
    out, _ = job_output
    manifests = out / "quicksight" / "manifests"
    for table in ("daily", "hourly", "entities", "locations", "histogram", "top_entities", "drift"):
        for name in (f"{table}_{LAST}.json", f"{table}.json"):
            content = json.loads((manifests / name).read_text())
            assert set(content) == {"fileLocations", "globalUploadSettings"}
            assert content["globalUploadSettings"] == {"format": "CSV", "delimiter": ",", "textqualifier": '"',
                                                      "containsHeader": "true"}
            uris = content["fileLocations"][0]["URIs"]
            assert uris and all(os.path.isabs(u) and os.path.isfile(u) and u.endswith(".csv") for u in uris)
        day_file = json.loads((manifests / f"{table}_{LAST}.json").read_text())["fileLocations"][0]["URIs"][0]
        with open(day_file, newline="") as f:
            header, *rows = list(csv.reader(f))
        table_df = read_delta(spark, out / table)
        assert sorted(header) == sorted(table_df.columns), table
        assert len(rows) == table_df.where(f"date = '{LAST}'").count(), table


def test_athena_ddl_for_scores_and_summary_tables_is_the_delta_form(job_output):
    out, _ = job_output
    for table, location in (("telemetry_scores", None), ("telemetry_summary_drift", out / "drift")):
        ddl = (out / "athena" / f"{table}.sql").read_text()
        assert f"CREATE EXTERNAL TABLE IF NOT EXISTS `zen_anomaly`.`{table}`\n" in ddl
        assert ddl.rstrip().endswith("TBLPROPERTIES ('table_type' = 'DELTA');")
        assert "PARTITIONED BY" not in ddl and "projection" not in ddl and "`reasons`" not in ddl
        if location:
            assert f"LOCATION '{location}/'" in ddl


def test_report_is_self_contained_html_with_charts(job_output):
    _, report = job_output
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,") >= 3
    assert "bytes_down" in page and "significant" in page
    assert "http://" not in page and "https://" not in page


def test_a_date_without_scores_is_nothing_to_do(scores_path, tmp_path, capsys):
    code, out, _ = run_job(tmp_path, scores_path, "--date", "2025-06-01")
    assert code == 3
    assert "no scores on 2025-06-01" in capsys.readouterr().err
    assert not out.exists()


def test_json_export_without_reference_days_skips_drift(scores_path, tmp_path):
    code, out, report = run_job(tmp_path, scores_path, "--export-format", "json", "--reference-days", "0",
                                "--date", str(DAYS[1]))
    assert code == 0
    assert not (out / "drift").exists()
    content = json.loads((out / "quicksight" / "manifests" / f"hourly_{DAYS[1]}.json").read_text())
    assert content["globalUploadSettings"] == {"format": "JSON"}
    [uri] = content["fileLocations"][0]["URIs"]
    with open(uri) as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == 24 and {line["date"] for line in lines} == {str(DAYS[1])}
    assert "No PSI" in report.read_text()


def test_feature_drift_comes_from_the_feature_table_when_the_scores_carry_no_features(spark, tmp_path):
    # what the score job writes now: scores without features; the features stay in their table
    both = spark.createDataFrame(synthetic_scores(), SCORES_SCHEMA)
    scores = tmp_path / "scores"
    features = tmp_path / "features"
    write_delta(both.drop("bytes_down", "duration_s"), scores)
    write_delta(both.select("event_id", "device_id", "event_time", "date", "label", "bytes_down", "duration_s"),
                features)
    code, out, _ = run_job(tmp_path, scores, "--features", str(features))
    assert code == 0
    drift = {r["column"]: r for r in read_delta(spark, out / "drift").collect()}
    assert set(drift) == {"bytes_down", "duration_s", "risk", "rcf_score", "logistic_score"}
    assert drift["bytes_down"]["reading"] == "significant" and drift["bytes_down"]["kind"] == "feature"
    assert drift["duration_s"]["psi"] < 0.25 and drift["duration_s"]["kind"] == "feature"
    assert drift["bytes_down"]["reference_rows"] == 3 * 240 and drift["bytes_down"]["current_rows"] == 240
    assert drift["risk"]["kind"] == "score"


# ---------------------------------------------------------------- day over day, expected alerts

def test_the_date_is_compared_with_the_day_before_without_a_jump(spark, job_output, capsys):
    out, report = job_output
    assert (out / "compare" / f"date={LAST}").is_dir()
    rows = {r["measure"]: r for r in read_delta(spark, out / "compare").collect()}
    assert set(rows) == {"events", "alerts", "anomaly_rate", "risk", "rcf_score", "logistic_score"}
    assert {r["compared_with"] for r in rows.values()} == {DAYS[-2]}
    assert (rows["alerts"]["value"], rows["alerts"]["previous"], rows["alerts"]["ratio"]) == (12, 12, 1.0)
    assert (rows["events"]["value"], rows["events"]["previous"]) == (240, 240)
    assert not any(r["jump"] for r in rows.values())  # same counts; the scores are drawn alike every day
    page = report.read_text()
    assert f"Compared with {DAYS[-2]}" in page and "no jump" in page and "JUMP" not in page
    assert (out / "quicksight" / "manifests" / f"compare_{LAST}.json").is_file()
    assert (out / "athena" / "telemetry_summary_compare.sql").is_file()


def test_expected_alerts_of_the_next_day_are_the_median_of_the_last_days(spark, job_output):
    out, report = job_output
    [row] = read_delta(spark, out / "expected").collect()
    # 12 alerts on each of the 4 dates (the window of 7 days holds all of them)
    assert (row["for_date"], row["days"], row["first_date"], row["last_date"]) == \
        (LAST + dt.timedelta(days=1), 4, DAYS[0], LAST)
    assert (row["median_alerts"], row["min_alerts"], row["max_alerts"]) == (12, 12, 12)
    page = report.read_text()
    assert f"Expected alerts on {LAST + dt.timedelta(days=1)}: 12.0" in page
    assert "median of the daily alert counts on the 4 date(s) with scores" in page


def jump_scores():
    """DAYS without DAYS[2] (a gap); on the last day every 4th event is an anomaly (60 instead of
    12: x5) and the normal events' risk is drawn from [0.3, 0.45) instead of [0, 0.4)."""
    rows = []
    for row in synthetic_scores():
        day, i = row[4], int(row[0].rsplit("-", 1)[1])
        if day == DAYS[2]:
            continue
        if day == LAST:
            anomalous = i % 4 == 0
            risk = 0.9 if anomalous else 0.3 + 0.15 * (i % 17) / 17
            row = (*row[:5], int(anomalous), row[6], row[7], risk, anomalous, *row[10:])
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def jump_run(spark, tmp_path_factory):
    """The summary stage on a lake whose last day jumps; its RunSummary, output and printed lines."""
    import contextlib
    import io

    from features.datasets import dataset
    from reporting.daily import run_summary
    from runtime.config import load_config

    tmp = tmp_path_factory.mktemp("summary_jump")
    scores = tmp / "scores"
    spark.createDataFrame(jump_scores(), SCORES_SCHEMA).write.partitionBy("date").parquet(str(scores))
    config = load_config(str(Path(__file__).resolve().parents[2] / "conf" / "local.yaml"),
                         [f"storage.lake={tmp / 'lake'}", "summary.reference_days=0"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = run_summary(spark, config.summary, dataset=dataset("telemetry"), day=None, scores=str(scores),
                             output=str(tmp / "summary"), features=str(tmp / "no-features"),
                             drift_from=str(tmp / "no-features"), report=str(tmp / "report.html"),
                             reports=str(tmp / "reports"), storage_format="parquet")
    return result, tmp, printed.getvalue()


def test_a_fivefold_jump_in_alerts_is_flagged_in_table_output_and_report(spark, jump_run):
    result, tmp, printed = jump_run
    rows = {r["measure"]: r for r in spark.read.parquet(str(tmp / "summary" / "compare")).collect()}
    assert {r["compared_with"] for r in rows.values()} == {DAYS[1]}  # DAYS[2] has no scores
    assert (rows["alerts"]["value"], rows["alerts"]["previous"], rows["alerts"]["ratio"]) == (60, 12, 5.0)
    assert rows["alerts"]["jump"] and rows["anomaly_rate"]["jump"] and rows["risk"]["jump"]
    assert not rows["events"]["jump"]  # 240 both days
    # rcf_score and logistic_score are drawn alike on both days (rcf_score's anomalies +2: 60 vs 12 of
    # 240 moves its upper deciles, so only its reading is not asserted)
    assert not rows["logistic_score"]["jump"]
    assert f"compared with {DAYS[1]} (the latest earlier date with scores, 240 rows)" in printed
    assert f"[summary] JUMP: alerts 60 vs 12 on {DAYS[1]} (x5.0)" in printed
    assert f"[summary] JUMP: anomaly_rate 25.00% vs 5.00% on {DAYS[1]} (x5.0)" in printed
    assert "[summary] JUMP: risk PSI " in printed
    page = (tmp / "report.html").read_text()
    assert f"Compared with {DAYS[1]}" in page and "the latest earlier date with scores" in page
    assert page.count("<b>JUMP</b>") == len(result.extra["jumps"])


def test_the_stage_returns_the_days_rows_alerts_versions_and_jumps(jump_run):
    result, _, _ = jump_run
    assert (result.job, result.dataset, result.dates, result.rows_in, result.alerts) == \
        ("summary", "telemetry", [str(LAST)], 240, 60)
    assert result.versions == {"rcf": "rcf-v1", "logistic": "logistic-v1"}
    assert {"alerts", "anomaly_rate", "risk"} <= set(result.extra["jumps"]) and "events" not in result.extra["jumps"]
    assert result.extra["compared_with"] == str(DAYS[1])
    # 7-day window up to LAST: 12, 12, 60 alerts on the 3 dates with scores -> median 12
    assert result.extra["expected_alerts"] == 12


def test_parquet_storage_writes_parquet_tables_and_the_column_list_ddl(jump_run):
    _, tmp, _ = jump_run
    out = tmp / "summary"
    assert (out / "compare" / f"date={LAST}").is_dir() and not (out / "compare" / "_delta_log").exists()
    ddl = (out / "athena" / "telemetry_summary_compare.sql").read_text()
    assert "`measure`" in ddl and "PARTITIONED BY (`date` string)" in ddl and "STORED AS PARQUET" in ddl
    assert "'projection.date.type' = 'date'" in ddl and "table_type" not in ddl
