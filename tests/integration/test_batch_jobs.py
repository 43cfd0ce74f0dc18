"""train -> evaluate -> score on a small transactions lake, run in-process on the test session."""
import json
import shutil

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs import evaluate, score

pytestmark = pytest.mark.integration

# the `lake` fixture (generate -> features -> train on small transactions) is in conftest.py


def scores_of(spark, path, day):
    return spark.read.parquet(str(path)).where(F.col("date") == F.lit(day).cast("date"))


def test_scoring_a_date_twice_leaves_identical_rows(spark, lake):
    day = "2018-04-30"
    assert score.main(lake["args"] + ["--date", day]) == 0
    first = scores_of(spark, lake["scores"], day).toPandas()
    assert score.main(lake["args"] + ["--date", day]) == 0
    second = scores_of(spark, lake["scores"], day).toPandas()
    assert len(first) > 0
    assert second["transaction_id"].is_unique
    key = ["transaction_id"]
    assert first.sort_values(key).drop(columns=["reasons"]).reset_index(drop=True).equals(
        second.sort_values(key).drop(columns=["reasons"]).reset_index(drop=True))
    assert set(first.columns) >= {"transaction_id", "customer_id", "terminal_id", "event_time", "label", "rcf_score",
                                  "logistic_score", "risk", "is_anomaly", "rcf_version", "logistic_version", "reasons"}
    assert first["risk"].between(0, 1).all()
    assert (first["rcf_version"] == "v0001").all() and (first["logistic_version"] == "v0001").all()


def test_a_crash_mid_write_leaves_the_previous_partition(spark, lake, monkeypatch):
    day = "2018-04-29"
    assert score.main(lake["args"] + ["--date", day]) == 0
    before = scores_of(spark, lake["scores"], day).toPandas().sort_values("transaction_id").reset_index(drop=True)
    files_before = sorted(p.name for p in (lake["scores"] / f"date={day}").iterdir())

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
        score.main(lake["args"] + ["--date", day, "--set", "scoring.writer=spark"])
    after = scores_of(spark, lake["scores"], day).toPandas().sort_values("transaction_id").reset_index(drop=True)
    assert sorted(p.name for p in (lake["scores"] / f"date={day}").iterdir()) == files_before
    assert before.drop(columns=["reasons"]).equals(after.drop(columns=["reasons"]))


def test_a_crash_in_the_python_writers_leaves_the_previous_partition(spark, lake, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    day = "2018-04-27"
    features = tmp_path / "features"
    shutil.copytree(lake["root"] / "lake" / "features" / "transactions", features)
    scores = tmp_path / "scores"
    args = lake["args"] + ["--date", day, "--input", str(features), "--output", str(scores)]
    assert score.main(args) == 0  # the Python workers write (scoring.writer auto)
    assert not list(scores.glob("_scoring-*"))
    before = scores_of(spark, scores, day).toPandas().sort_values("transaction_id").reset_index(drop=True)
    files_before = sorted(p.name for p in (scores / f"date={day}").iterdir())
    # a file whose feature column is text: its worker fails while others have written theirs
    good = sorted((features / f"date={day}").glob("*.parquet"))
    bad = pq.read_table(good[0])
    column = bad.schema.get_field_index("customer_nb_tx_1d")
    bad = bad.set_column(column, "customer_nb_tx_1d", pa.array(["not a number"] * bad.num_rows))
    pq.write_table(bad, features / f"date={day}" / "part-99999-bad.parquet")
    with pytest.raises(Exception, match="not a number"):
        score.main(args)
    after = scores_of(spark, scores, day).toPandas().sort_values("transaction_id").reset_index(drop=True)
    assert sorted(p.name for p in (scores / f"date={day}").iterdir()) == files_before
    assert before.drop(columns=["reasons"]).equals(after.drop(columns=["reasons"]))
    assert not list(scores.glob("_scoring-*"))  # the staged files are gone too


@pytest.mark.parametrize("reader, writer", [("arrow", "spark"), ("spark", "auto")])
def test_every_reader_and_writer_writes_the_same_scores(spark, lake, tmp_path, reader, writer):
    day = "2018-04-28"
    tables = {}
    for name, options in (("python", ["--set", "scoring.reader=arrow"]),
                          ("other", ["--set", f"scoring.reader={reader}", "--set", f"scoring.writer={writer}"])):
        out = tmp_path / name
        assert score.main(lake["args"] + ["--date", day, "--output", str(out), *options]) == 0
        tables[name] = scores_of(spark, out, day).toPandas().sort_values("transaction_id").reset_index(drop=True)
    python, other = tables["python"], tables["other"]
    # the first wrote its files with pyarrow, the second through Spark
    assert "parquet-cpp" in pq.ParquetFile(next((tmp_path / "python").glob("date=*/*.parquet"))).metadata.created_by
    assert "parquet-mr" in pq.ParquetFile(next((tmp_path / "other").glob("date=*/*.parquet"))).metadata.created_by
    assert list(python.columns) == list(other.columns) and len(python) == len(other) > 0
    assert "amount" in python.columns and "customer_nb_tx_1d" not in python.columns  # no features
    for col in ("transaction_id", "customer_id", "terminal_id", "event_time", "label", "rcf_score", "is_anomaly",
                "rcf_version", "logistic_version"):
        assert python[col].equals(other[col]), col
    for col in ("logistic_score", "risk"):
        assert (python[col] - other[col]).abs().max() < 1e-12, col
    assert [list(r) for r in python["reasons"]] == [list(r) for r in other["reasons"]]
    assert spark.read.parquet(str(tmp_path / "python")).schema == spark.read.parquet(str(tmp_path / "other")).schema


def test_evaluate_json_prints_one_object_with_the_documented_keys(lake, capsys):
    capsys.readouterr()
    assert evaluate.main(lake["args"] + ["--json"]) == 0
    out = capsys.readouterr().out.strip()
    result = json.loads(out)  # the whole of stdout is one JSON object
    for key in ("auc_roc", "average_precision", "precision_at_k", "card_precision_at_100"):
        assert 0.0 <= result[key] <= 1.0, key
    assert set(result["detectors"]) == {"rcf_score", "logistic_score"}
    assert (lake["root"] / "lake" / "reports" / "evaluation-transactions.html").stat().st_size > 10_000


def test_score_without_models_names_the_missing_registry(lake, tmp_path, capsys):
    code = score.main(lake["args"] + ["--models", str(tmp_path / "empty")])
    assert code == 2
    assert f"no champion model under {tmp_path / 'empty'}/transactions" in capsys.readouterr().err
