"""generate -> features as a user runs them (python -m jobs ...), on small sizes; the tables are
Delta (the default storage.format) and are read through Delta, as its log says."""
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def run_job(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "jobs", *args], cwd=cwd, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    return proc


def write_conf(tmp_path, extra=""):
    conf = tmp_path / "test.yaml"
    conf.write_text(f"""
spark:
  master: "local[2]"
  shuffle_partitions: 4
  driver_memory: "1g"
  extra_jars: ""
storage:
  lake: "{tmp_path / 'lake'}"
{extra}""")
    return conf


def delta(spark, path):
    """The Delta table at ``path`` as pandas (only the files its log lists)."""
    assert (path / "_delta_log").is_dir(), f"{path} is not a Delta table"
    return spark.read.format("delta").load(str(path)).toPandas()


def commits(path):
    """Each commit of the Delta table at ``path``: its actions, read from the log's JSON files."""
    return [[json.loads(line) for line in f.read_text().splitlines()]
            for f in sorted((path / "_delta_log").glob("*.json"))]


def test_csv_with_every_kind_of_bad_row_is_fully_accounted_for(spark, tmp_path):
    header = ["TX_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]
    good = [[str(i), f"2018-04-0{1 + i % 3} {10 + i % 10}:00:00", f"c{i % 4}", f"t{i % 5}", f"{5 + i}.25", str(i % 2)]
            for i in range(1, 21)]
    bad = [
        ["100", "not-a-time", "c1", "t1", "1.0", "0"],
        ["101", "", "c1", "t1", "1.0", "0"],
        ["", "2018-04-01 10:00:00", "c1", "t1", "1.0", "0"],
        ["102", "2018-04-01 10:00:00", "", "t1", "1.0", "0"],
        ["103", "2018-04-01 10:00:00", "c1", "t1", "abc", "0"],
        ["104", "2018-04-01 10:00:00", "c1", "t1", "-5", "0"],
        ["105", "2018-04-01 10:00:00", "c1", "t1", "NaN", "0"],
        ["106", "2018-04-01 10:00:00", "c1", "t1", "Infinity", "0"],
        ["1", "2018-04-03 23:00:00", "c9", "t9", "1.0", "0"],  # duplicate of a good id, later
    ]
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(good + bad)
    conf = write_conf(tmp_path, """
schema:
  transactions:
    format: csv
    columns: {transaction_id: TX_ID, event_time: TX_DATETIME, customer_id: CUSTOMER_ID,
              terminal_id: TERMINAL_ID, amount: TX_AMOUNT, label: TX_FRAUD}
""")
    quarantine = tmp_path / "quarantine"
    proc = run_job("features", "--conf", str(conf), "--dataset", "transactions", "--input", str(source),
                   "--output", str(tmp_path / "features"), "--quarantine", str(quarantine), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = re.search(r"rows in ([\d,]+) = valid ([\d,]+) \+ quarantined ([\d,]+)", proc.stdout)
    assert counts, proc.stdout
    rows_in, valid, quarantined = (int(x.replace(",", "")) for x in counts.groups())
    assert (rows_in, valid, quarantined) == (29, 20, 9)

    reasons = sorted([
        "unparseable event_time", "missing event_time", "missing transaction_id", "missing customer_id",
        "non-numeric amount", "negative amount", "NaN amount", "infinite amount", "duplicate transaction_id"])
    q = delta(spark, quarantine)
    assert sorted(q["reason"]) == reasons
    assert set(q["input_path"]) == {str(source)}
    features = delta(spark, tmp_path / "features")
    assert sorted(features["transaction_id"].astype(int)) == list(range(1, 21))

    # the same input again: its rejects replace the previous run's, they are not added twice
    proc = run_job("features", "--conf", str(conf), "--dataset", "transactions", "--input", str(source),
                   "--output", str(tmp_path / "features"), "--quarantine", str(quarantine), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(delta(spark, quarantine)["reason"]) == reasons
    assert len(commits(quarantine)) == 2


def test_unreadable_input_fails_naming_the_file(tmp_path):
    conf = write_conf(tmp_path)
    missing = tmp_path / "nowhere.parquet"
    proc = run_job("features", "--conf", str(conf), "--input", str(missing), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"cannot read parquet input {missing}" in proc.stderr


def test_generate_then_features_on_small_telemetry(spark, tmp_path):
    conf = write_conf(tmp_path, """
generate:
  telemetry: {devices: 30, sites: 4, days: 3}
""")
    proc = run_job("generate", "--conf", str(conf), "--dataset", "telemetry", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    generated = int(re.search(r"\] ([\d,]+) rows", proc.stdout).group(1).replace(",", ""))
    assert generated > 0
    proc = run_job("features", "--conf", str(conf), "--dataset", "telemetry", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"rows in {generated:,} = valid {generated:,} + quarantined 0" in proc.stdout

    features = delta(spark, tmp_path / "lake" / "features" / "telemetry")
    assert len(features) == generated
    assert features["date"].nunique() == 3
    from features.telemetry import telemetry_feature_columns  # noqa: PLC0415
    from runtime.config import load_config  # noqa: PLC0415

    config = load_config(conf)
    cols = telemetry_feature_columns(config["schema"]["telemetry"]["measures"],
                                     config["features"]["telemetry"]["windows"],
                                     config["features"]["telemetry"]["shingle_size"])
    assert not features[cols].isna().any().any()


def test_rebuilding_one_date_is_one_delta_commit_that_replaces_that_date_only(spark, tmp_path):
    conf = write_conf(tmp_path, """
generate:
  transactions: {customers: 60, terminals: 120, days: 20}
""")
    assert run_job("generate", "--conf", str(conf), "--dataset", "transactions", cwd=tmp_path).returncode == 0
    full = run_job("features", "--conf", str(conf), "--dataset", "transactions", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    table = tmp_path / "lake" / "features" / "transactions"
    before = delta(spark, table)
    day = str(sorted(before["date"].unique())[-1])[:10]
    assert len(commits(table)) == 1 and before["date"].nunique() == 20
    inc = run_job("features", "--conf", str(conf), "--dataset", "transactions", "--from-date", day, cwd=tmp_path)
    assert inc.returncode == 0, inc.stderr[-3000:]
    log = commits(table)
    assert len(log) == 2   # the rebuild is one commit ...
    added = {a["add"]["partitionValues"]["date"] for a in log[1] if "add" in a}
    removed = {a["remove"]["partitionValues"]["date"] for a in log[1] if "remove" in a}
    assert added == removed == {day}   # ... that swaps the files of that date only
    after = delta(spark, table)
    key = ["transaction_id"]
    pd.testing.assert_frame_equal(before.sort_values(key).reset_index(drop=True),
                                  after.sort_values(key).reset_index(drop=True), check_like=True)
