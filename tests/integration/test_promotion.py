"""Promotion gates end to end: a good logistic model, then a deliberately worse one (its training
labels permuted), on a small transactions lake; the worse one is a challenger until promoted by hand.
"""
import json

import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F

from jobs import build_features, generate
from jobs import models as models_job
from jobs import train
from lakes import small_lake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("promotion")
    made = small_lake(root, (generate, build_features), train_extra=(
        '  threshold: {rule: "fbeta"}\n'
        "  gates: {min_positives: 1, min_average_precision: 0.0, min_recall: 0.0}\n"))
    return {"root": root, "args": made["args"], "features": root / "lake" / "features" / "transactions",
            "registry": root / "lake" / "models" / "transactions" / "logistic"}


def _permute_training_labels(spark, source, target, before):
    """The feature table with the labels of the dates before ``before`` shuffled across those rows."""
    df = spark.read.format("delta").load(str(source))
    early, late = df.where(F.col("date") < F.lit(before).cast("date")), df.where(F.col("date") >= F.lit(before).cast("date"))
    rows = early.drop("label").withColumn("_i", F.row_number().over(Window.orderBy(F.monotonically_increasing_id())))
    labels = early.select("label").withColumn("_i", F.row_number().over(Window.orderBy(F.rand(7))))
    shuffled = rows.join(labels, "_i").drop("_i").select(*df.columns)
    shuffled.unionByName(late).write.format("delta").partitionBy("date").save(str(target))


def _pointer(lake):
    return json.loads((lake["registry"] / "champion.json").read_text())


def test_a_worse_model_is_a_challenger_until_promoted_by_hand(spark, lake, tmp_path, capsys):
    assert train.main([*lake["args"], "--model", "logistic"]) == 0
    assert _pointer(lake)["version"] == "v0001"
    first = json.loads((lake["registry"] / "v0001" / "version.json").read_text())
    assert first["decision"] == "promoted" and first["reasons"] == []

    test_from = first["data_window"]["test_from"]
    worse_input = tmp_path / "features_permuted"
    _permute_training_labels(spark, lake["features"], worse_input, test_from)
    capsys.readouterr()
    assert train.main([*lake["args"], "--model", "logistic", "--input", str(worse_input)]) == 0
    out = capsys.readouterr().out
    second = json.loads((lake["registry"] / "v0002" / "version.json").read_text())
    assert second["decision"] == "challenger"
    assert any("worse than champion v0001" in reason for reason in second["reasons"]), second["reasons"]
    assert second["metrics"]["average_precision"] < first["metrics"]["average_precision"] - 0.01
    assert _pointer(lake)["version"] == "v0001"
    assert "logistic v0002: CHALLENGER, champion stays v0001" in out

    assert models_job.main([*lake["args"], "--json"]) == 0
    listing = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {(r["kind"], r["version"]): r for r in listing["versions"]}
    assert rows["logistic", "v0001"]["champion"] and not rows["logistic", "v0002"]["champion"]
    assert rows["logistic", "v0002"]["reasons"] == second["reasons"]

    assert train.main([*lake["args"], "--promote", "v0002", "--model", "logistic", "--reason", "test"]) == 0
    pointer = _pointer(lake)
    assert (pointer["version"], pointer["previous"], pointer["promoted_by"], pointer["reason"]) == \
        ("v0002", "v0001", "manual", "test")
    assert train.main([*lake["args"], "--promote", "v0009", "--model", "logistic"]) == 2
    assert "no version v0009" in capsys.readouterr().err
    assert _pointer(lake)["version"] == "v0002"
