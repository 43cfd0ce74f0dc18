"""train -> evaluate -> score on a small transactions lake, run in-process on the test session."""
import json

import pytest
from pyspark.sql import functions as F

from jobs import build_features, evaluate, generate, score, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    conf = root / "conf.yaml"
    conf.write_text(f"""
spark: {{master: "local[2]", shuffle_partitions: 4, extra_jars: ""}}
storage: {{lake: "{root / 'lake'}"}}
generate: {{transactions: {{customers: 120, terminals: 240, days: 30}}}}
train:
  test_days: 4
  rcf: {{num_trees: 50, num_samples_per_tree: 64}}
  logistic: {{reg_params: [0.001], validation_days: 4}}
""")
    args = ["--conf", str(conf), "--dataset", "transactions"]
    assert generate.main(args) == 0
    assert build_features.main(args) == 0
    assert train.main(args) == 0
    return {"root": root, "args": args, "scores": root / "lake" / "scores" / "transactions"}


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

    from models import scoring

    @F.udf("double")
    def explode_midway(risk, tx_id):
        if int(tx_id) % 7 == 3:
            raise RuntimeError("simulated crash while writing")
        return risk

    def crashing(real):
        def scorer(*args, **kw):
            return real(*args, **kw).withColumn("risk", explode_midway("risk", "transaction_id"))
        return scorer

    for name in ("score_events", "score_parquet_files"):  # whichever reader the job uses
        monkeypatch.setattr(scoring, name, crashing(getattr(scoring, name)))
    with pytest.raises(Exception, match="simulated crash"):
        score.main(lake["args"] + ["--date", day])
    after = scores_of(spark, lake["scores"], day).toPandas().sort_values("transaction_id").reset_index(drop=True)
    assert sorted(p.name for p in (lake["scores"] / f"date={day}").iterdir()) == files_before
    assert before.drop(columns=["reasons"]).equals(after.drop(columns=["reasons"]))


def test_both_readers_write_the_same_scores(spark, lake, tmp_path):
    day = "2018-04-28"
    tables = {}
    for reader in ("arrow", "spark"):
        out = tmp_path / reader
        assert score.main(lake["args"] + ["--date", day, "--output", str(out), "--set", f"scoring.reader={reader}"]) == 0
        tables[reader] = scores_of(spark, out, day).toPandas().sort_values("transaction_id").reset_index(drop=True)
    arrow, spark_read = tables["arrow"], tables["spark"]
    assert list(arrow.columns) == list(spark_read.columns) and len(arrow) == len(spark_read) > 0
    assert "amount" in arrow.columns and "customer_nb_tx_1d" not in arrow.columns  # no features
    for col in ("transaction_id", "customer_id", "terminal_id", "event_time", "label", "rcf_score", "is_anomaly",
                "rcf_version", "logistic_version"):
        assert arrow[col].equals(spark_read[col]), col
    for col in ("logistic_score", "risk"):
        assert (arrow[col] - spark_read[col]).abs().max() < 1e-12, col
    assert [list(r) for r in arrow["reasons"]] == [list(r) for r in spark_read["reasons"]]


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
