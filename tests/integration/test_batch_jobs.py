"""train -> evaluate -> score on a small transactions lake, run in-process on the test session;
score killed mid-write and two score runs at once, in subprocesses."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs import evaluate, score

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

# the `lake` fixture (generate -> features -> train on small transactions) is in conftest.py


def scores_of(spark, path, day, fmt="delta"):
    return spark.read.format(fmt).load(str(path)).where(F.col("date") == F.lit(day).cast("date"))


def sorted_scores(spark, path, day):
    return scores_of(spark, path, day).toPandas().sort_values("transaction_id").reset_index(drop=True)


def versions_of(spark, path):
    """(version, operation) of each commit of the Delta table at ``path``, oldest first."""
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "operation").collect()
    return sorted((r.version, r.operation) for r in history)


def committed_files(spark, path):
    return {urlparse(uri).path for uri in spark.read.format("delta").load(str(path)).inputFiles()}


def feature_ids(spark, lake, day):
    features = spark.read.format("delta").load(str(lake["root"] / "lake" / "features" / "transactions"))
    return sorted(r.transaction_id for r in features.where(F.col("date") == F.lit(day).cast("date"))
                  .select("transaction_id").collect())


@pytest.mark.parametrize("writer", ["auto", "spark"], ids=["python-writers", "spark-writer"])
def test_scoring_a_date_twice_leaves_identical_rows_and_two_delta_versions(spark, lake, tmp_path, writer):
    day, out = "2018-04-30", tmp_path / "scores"
    args = lake["args"] + ["--date", day, "--output", str(out), "--set", f"scoring.writer={writer}"]
    assert score.main(args) == 0
    first = sorted_scores(spark, out, day)
    assert score.main(args) == 0
    second = sorted_scores(spark, out, day)
    assert (out / "_delta_log").is_dir()
    assert versions_of(spark, out) == [(0, "CREATE TABLE" if writer == "auto" else "WRITE"), (1, "WRITE")]
    assert len(first) > 0 and second["transaction_id"].is_unique
    assert list(second["transaction_id"]) == feature_ids(spark, lake, day)
    assert first.drop(columns=["reasons"]).equals(second.drop(columns=["reasons"]))
    assert [list(r) for r in first["reasons"]] == [list(r) for r in second["reasons"]]
    assert set(first.columns) >= {"transaction_id", "customer_id", "terminal_id", "event_time", "label", "rcf_score",
                                  "logistic_score", "risk", "is_anomaly", "rcf_version", "logistic_version", "reasons"}
    assert first["risk"].between(0, 1).all()
    assert (first["rcf_version"] == "v0001").all() and (first["logistic_version"] == "v0001").all()
    # the first version is still there, as it was (time travel)
    again = spark.read.format("delta").option("versionAsOf", 0).load(str(out)).toPandas()
    assert again.sort_values("transaction_id").reset_index(drop=True).drop(columns=["reasons"]).equals(
        first.drop(columns=["reasons"]))


def test_a_crash_mid_write_leaves_the_previous_version(spark, lake, tmp_path, monkeypatch):
    day, out = "2018-04-29", tmp_path / "scores"
    args = lake["args"] + ["--date", day, "--output", str(out)]
    assert score.main(args) == 0
    before, history = sorted_scores(spark, out, day), versions_of(spark, out)

    from scoring import files, spark as spark_frames

    @F.udf("double")
    def explode_midway(risk, tx_id):
        if int(tx_id) % 7 == 3:
            raise RuntimeError("simulated crash while writing")
        return risk

    def crashing(real):
        def scorer(*args, **kw):
            return real(*args, **kw).withColumn("risk", explode_midway("risk", "transaction_id"))
        return scorer

    # whichever reader the job uses
    for module, name in ((spark_frames, "score_events"), (files, "score_parquet_files")):
        monkeypatch.setattr(module, name, crashing(getattr(module, name)))
    with pytest.raises(Exception, match="simulated crash"):
        score.main(args + ["--set", "scoring.writer=spark"])
    assert versions_of(spark, out) == history
    after = sorted_scores(spark, out, day)
    assert before.drop(columns=["reasons"]).equals(after.drop(columns=["reasons"]))


def test_a_crash_in_the_python_writers_leaves_the_previous_version_and_no_file(spark, lake, tmp_path):
    import json

    import pyarrow as pa
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction

    day = "2018-04-27"
    features = tmp_path / "features"
    shutil.copytree(lake["root"] / "lake" / "features" / "transactions", features)
    scores = tmp_path / "scores"
    args = lake["args"] + ["--date", day, "--input", str(features), "--output", str(scores)]
    assert score.main(args) == 0  # the Python workers write (scoring.writer auto)
    before, history = sorted_scores(spark, scores, day), versions_of(spark, scores)
    files_before = sorted(scores.rglob("*.parquet"))
    # a file whose feature column is text, committed to the features: its worker fails while
    # others have written theirs
    table = DeltaTable(str(features))
    good = next(p for p in table.file_uris() if f"date={day}" in p)
    bad = pq.read_table(good)
    column = bad.schema.get_field_index("customer_nb_tx_1d")
    bad = bad.set_column(column, "customer_nb_tx_1d", pa.array(["not a number"] * bad.num_rows))
    pq.write_table(bad, features / f"date={day}" / "part-99999-bad.parquet")
    size = (features / f"date={day}" / "part-99999-bad.parquet").stat().st_size
    table.create_write_transaction([AddAction(f"date={day}/part-99999-bad.parquet", size, {"date": day}, 0, True,
                                              json.dumps({"numRecords": bad.num_rows}))],
                                   mode="append", schema=table.schema(), partition_by=["date"])
    with pytest.raises(Exception, match="not a number"):
        score.main(args)
    assert versions_of(spark, scores) == history
    assert before.drop(columns=["reasons"]).equals(sorted_scores(spark, scores, day).drop(columns=["reasons"]))
    assert sorted(scores.rglob("*.parquet")) == files_before  # the files the failed run wrote are gone


def run_with_fault(lake, mode, *options):
    """score_with_fault.py MODE in a new process group; its exit code, output and group id."""
    cmd = [sys.executable, str(Path(__file__).parent / "score_with_fault.py"), mode, *lake["args"], *options,
           "--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc, timeout=400):
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the job left of its group (JVM, Python workers)
    return proc.returncode, out


@pytest.mark.timeout(900)
@pytest.mark.parametrize("writer, mode", [("auto", "kill-before-commit"), ("spark", "stall-while-writing")],
                         ids=["python-writers", "spark-writer"])
def test_a_score_process_killed_mid_write_leaves_the_previous_version(spark, lake, tmp_path, writer, mode):
    # two dates: two tasks (one feature file each), so one can be held up while the other writes
    days, out = ["2018-04-25", "2018-04-26"], tmp_path / "scores"
    window = ["--from", days[0], "--to", days[1], "--output", str(out)]
    assert score.main(lake["args"] + window) == 0
    before = {day: sorted_scores(spark, out, day) for day in days}
    history, committed = versions_of(spark, out), committed_files(spark, out)

    def new_files():
        return {str(p) for p in out.rglob("*.parquet") if "_delta_log" not in str(p)} - committed

    proc = run_with_fault(lake, mode, *window, "--set", f"scoring.writer={writer}")
    if mode == "stall-while-writing":  # killed by us once a file is written and the commit waits
        deadline = time.time() + 140
        while time.time() < deadline and proc.poll() is None and not new_files():
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    code, output = finish(proc)
    assert code == -signal.SIGKILL, output[-3000:]
    written = new_files()
    assert written, "the process was not killed while writing: no new file"  # it did die mid-write
    assert versions_of(spark, out) == history
    for day in days:
        after = sorted_scores(spark, out, day)
        assert before[day].drop(columns=["reasons"]).equals(after.drop(columns=["reasons"]))
    assert committed_files(spark, out) == committed
    # the next run replaces the dates as usual; the dead run's files stay unreferenced (VACUUM's)
    assert score.main(lake["args"] + window) == 0
    for day in days:
        assert list(sorted_scores(spark, out, day)["transaction_id"]) == feature_ids(spark, lake, day)
    assert not written & committed_files(spark, out)


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("writer", ["auto", "spark"], ids=["python-writers", "spark-writer"])
def test_two_concurrent_score_processes_lose_nothing(spark, lake, tmp_path, writer):
    out, days = tmp_path / "scores", ["2018-04-24", "2018-04-25", "2018-04-26"]
    # the same date, then two different dates: two processes each, commits at the same moment
    for windows in ((days[1], days[1]), (days[0], days[2])):
        barrier = tmp_path / f"barrier-{windows[0]}-{windows[1]}"  # both commit once both have scored
        procs = [run_with_fault(lake, f"commit-barrier:{barrier}:2", "--date", day, "--output", str(out),
                                "--set", f"scoring.writer={writer}") for day in windows]
        results = [finish(proc) for proc in procs]
        for code, output in results:
            assert code == 0, output[-3000:]
    for day in days:
        assert list(sorted_scores(spark, out, day)["transaction_id"]) == feature_ids(spark, lake, day), day
    assert [v for v, _ in versions_of(spark, out)] == [0, 1, 2, 3]  # four runs, four commits


def written_by(spark, path, fmt):
    """The writer (parquet-cpp: pyarrow, parquet-mr: Spark) of one of the table's current files."""
    reader = spark.read.format(fmt).load(str(path))
    return pq.ParquetFile(urlparse(reader.inputFiles()[0]).path).metadata.created_by


@pytest.mark.parametrize("fmt, reader, writer", [("delta", "arrow", "spark"), ("delta", "spark", "auto"),
                                                 ("parquet", "arrow", "auto"), ("parquet", "spark", "spark")])
def test_every_reader_and_writer_writes_the_same_scores(spark, lake, tmp_path, fmt, reader, writer):
    day = "2018-04-28"
    features = lake["root"] / "lake" / "features" / "transactions"
    if fmt == "parquet":  # a Parquet copy of the feature table
        spark.read.format("delta").load(str(features)).write.partitionBy("date").parquet(str(tmp_path / "features"))
        features = tmp_path / "features"
    tables = {}
    for name, options in (("python", []),  # the defaults on the lake: Python workers read and write, Delta
                          ("other", ["--input", str(features), "--set", f"storage.format={fmt}",
                                     "--set", f"scoring.reader={reader}", "--set", f"scoring.writer={writer}"])):
        out = tmp_path / name
        assert score.main(lake["args"] + ["--date", day, "--output", str(out), *options]) == 0
        tables[name] = scores_of(spark, out, day, "delta" if name == "python" else fmt).toPandas() \
            .sort_values("transaction_id").reset_index(drop=True)
    python, other = tables["python"], tables["other"]
    assert "parquet-cpp" in written_by(spark, tmp_path / "python", "delta")
    assert "parquet-mr" in written_by(spark, tmp_path / "other", fmt)  # Spark wrote these
    # a Parquet table's partition column comes last, as Spark reads Hive-style folders
    order = list(python.columns) if fmt == "delta" else [c for c in python.columns if c != "date"] + ["date"]
    assert list(other.columns) == order and len(python) == len(other) > 0
    assert "amount" in python.columns and "customer_nb_tx_1d" not in python.columns  # no features
    for col in ("transaction_id", "customer_id", "terminal_id", "event_time", "label", "rcf_score", "is_anomaly",
                "rcf_version", "logistic_version"):
        assert python[col].equals(other[col]), col
    for col in ("logistic_score", "risk"):
        assert (python[col] - other[col]).abs().max() < 1e-12, col
    assert [list(r) for r in python["reasons"]] == [list(r) for r in other["reasons"]]
    fields = {f.name: f for f in spark.read.format("delta").load(str(tmp_path / "python")).schema}
    assert spark.read.format(fmt).load(str(tmp_path / "other")).schema.fields == [fields[c] for c in order]


def test_evaluate_json_prints_one_object_with_the_documented_keys(lake, capsys):
    capsys.readouterr()
    assert evaluate.main(lake["args"] + ["--json"]) == 0
    out = capsys.readouterr().out.strip()
    result = json.loads(out)  # the whole of stdout is one JSON object
    for key in ("auc_roc", "average_precision", "precision_at_k", "card_precision_at_100"):
        assert 0.0 <= result[key] <= 1.0, key
    assert set(result["detectors"]) == {"rcf_score", "logistic_score"}
    # the default combined risk is the stacker train fitted, and it ranks at least as well as the best detector
    assert result["risk_method"] == "stacked" and result["stacker"] == "v0001"
    assert result["average_precision"] >= max(m["average_precision"] for m in result["detectors"].values())
    assert (lake["root"] / "lake" / "reports" / "evaluation-transactions.html").stat().st_size > 10_000


def test_score_without_models_names_the_missing_registry(lake, tmp_path, capsys):
    code = score.main(lake["args"] + ["--models", str(tmp_path / "empty")])
    assert code == 2
    assert f"no champion model under {tmp_path / 'empty'}/transactions" in capsys.readouterr().err
