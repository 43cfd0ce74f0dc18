"""Reproducible training on a small transactions lake: every model version records the feature
table's Delta version, `train --as-of` that version trains the same model again after the table
has grown, and `maintain` (OPTIMIZE + VACUUM) keeps that snapshot readable.
"""
import json
import os
import time

import numpy as np
import pytest
from pyspark.sql import functions as F

from jobs import build_features, evaluate, generate, maintain, train
from jobs import models as models_job
from lakes import small_lake
from models.logistic import LogisticDetector
from models.rcf import RandomCutForestModel
from models.snapshots import open_training_data
from runtime import delta, fs
from runtime.errors import InputError
from runtime.storage import write_table

pytestmark = pytest.mark.integration


def _run(job, args, capsys):
    capsys.readouterr()
    code = job.main([*args, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    return json.loads(out.out.strip().splitlines()[-1])


def _info(lake, kind, version):
    return json.loads((lake["registry"] / kind / version / "version.json").read_text())


def _logistic(lake, version):
    model = LogisticDetector.load(str(lake["registry"] / "logistic" / version / "model"))
    return model.coefficients(), model.intercept


def _forest(lake, version):
    model = RandomCutForestModel.load(str(lake["registry"] / "rcf" / version / "model"))
    return model.forest.to_arrays(), model.threshold


def _checksum(df):
    """A number that depends on every value of every row: reading it reads every file."""
    return df.select(F.sum(F.xxhash64(*df.columns)).alias("h"), F.count(F.lit(1)).alias("n")).first()


def _files(folder):
    return {os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".parquet")}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """generate -> features (feature table v0), then its first date rewritten as it was (v1: that
    date's v0 file is no longer in the table).
    """
    root = tmp_path_factory.mktemp("timetravel")
    made = small_lake(root, (generate, build_features))
    features = root / "lake" / "features" / "transactions"
    table = spark.read.format("delta").load(str(features))
    first = min(r["date"] for r in table.select("date").distinct().collect())
    first_folder = str(features / f"date={first}")
    v0_files = _files(first_folder)
    rows = table.where(F.col("date") == F.lit(first)).localCheckpoint()
    write_table(rows, str(features), "delta", partition_by=["date"])
    assert delta.current(spark, str(features)).version == 1
    return {"root": root, "args": made["args"], "features": features, "registry": root / "lake" / "models" / "transactions",
            "first": first, "first_folder": first_folder, "v0_files": v0_files}


def _append_a_day(spark, features):
    """The last date's rows again one day later (new ids), in 3 files: a new date in the feature
    table (the features job writes one file per date; these 3 give OPTIMIZE something to do).
    """
    table = spark.read.format("delta").load(str(features))
    last = max(r["date"] for r in table.select("date").distinct().collect())
    day = table.where(F.col("date") == F.lit(last))
    ids = day.schema["transaction_id"].dataType.simpleString()
    new_id = (F.col("transaction_id") + F.lit(10**9)) if ids in ("int", "bigint", "long") else \
        F.concat(F.col("transaction_id").cast("string"), F.lit("-next"))
    shifted = (day.withColumn("transaction_id", new_id.cast(day.schema["transaction_id"].dataType))
               .withColumn("event_time", F.col("event_time") + F.expr("INTERVAL 1 DAY"))
               .withColumn("date", F.date_add(F.col("date"), 1))).repartition(3).localCheckpoint()
    write_table(shifted, str(features), "delta", partition_by=["date"], mode="append")


@pytest.fixture(scope="module")
def trained(spark, lake):
    """train (both detectors, on feature table v1), a day appended (v2), the logistic model
    retrained on it: the registry then names v1 (rcf and logistic v0001) and v2 (logistic v0002).
    """
    import contextlib
    import io

    summaries = []
    for extra in (["--model", "all"], None, ["--model", "logistic"]):
        if extra is None:
            _append_a_day(spark, lake["features"])
            continue
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = train.main([*lake["args"], *extra, "--json"])
        assert code == 0, out.getvalue()[-3000:]
        summaries.append(json.loads(out.getvalue().strip().splitlines()[-1]))
    return summaries


def test_each_version_records_the_feature_table_version_it_read_and_models_lists_it(spark, lake, trained, capsys):
    features = str(lake["features"])
    assert [s["extra"]["features_version"] for s in trained] == [1, 2]
    rcf1, log1 = _info(lake, "rcf", "v0001"), _info(lake, "logistic", "v0001")
    snap = log1["snapshots"]["features"]
    assert snap["version"] == 1 and snap["path"] == features and snap["location"].endswith(features)
    assert snap["table_id"] == delta.current(spark, features).table_id
    assert snap["timestamp"] == delta.resolve(spark, features, 1).timestamp
    assert rcf1["snapshots"]["features"] == snap and "labels" not in snap   # no labels table in this lake
    log2 = _info(lake, "logistic", "v0002")
    assert log2["snapshots"]["features"]["version"] == 2
    assert log2["data_window"]["test_to"] > log1["data_window"]["test_to"]
    assert _logistic(lake, "v0002") != _logistic(lake, "v0001")   # the new day changed the model

    capsys.readouterr()
    assert models_job.main(lake["args"]) == 0
    listing = capsys.readouterr().out
    assert f"trained on features v1 ({snap['timestamp']})" in listing and "trained on features v2 (" in listing


def test_after_maintain_train_as_of_the_first_version_trains_the_same_models_again(spark, lake, trained, capsys):
    args, features = lake["args"], str(lake["features"])
    kept = [delta.resolve(spark, features, version) for version in (1, 2)]
    kept_files = {fs.local_path(uri) for snap in kept for uri in delta.read(spark, snap).inputFiles()}
    before = [_checksum(delta.read(spark, snap)) for snap in kept]
    assert lake["v0_files"] and not lake["v0_files"] & kept_files
    # what a writer killed two days ago left behind: a data file no version names
    orphan = os.path.join(lake["first_folder"], "part-00009-orphan.c000.snappy.parquet")
    with open(orphan, "wb") as out:
        out.write(b"PAR1")
    two_days_ago = time.time() - 48 * 3600
    os.utime(orphan, (two_days_ago, two_days_ago))

    # no minimum retention and no margin: the retention is the age of v1, the oldest snapshot a
    # registry version names, rounded up to the hour (Delta's unit)
    capsys.readouterr()
    code = maintain.main([*args, "--set", "maintain.retention_hours=0", "--set", "maintain.margin_hours=0"])
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(text for text in out.splitlines() if text.startswith("[maintain] features "))
    assert "optimize 3 files -> 1; vacuum retention 1 h: 1 files deleted; " \
           "keeps v1 (logistic v0001, rcf v0001, stacker v0001), v2 (logistic v0002)" in line, line
    assert out.strip().splitlines()[-1].startswith("[maintain] status done; dataset transactions; tables ")
    assert not os.path.exists(orphan)
    assert lake["v0_files"] <= _files(lake["first_folder"])          # removed by v1 less than an hour ago
    assert all(os.path.exists(path) for path in kept_files)             # v2's day is compacted, its 3 files stay
    assert [_checksum(delta.read(spark, snap)) for snap in kept] == before

    again = _run(train, [*args, "--model", "all", "--as-of", "1"], capsys)
    assert again["extra"]["features_version"] == 1
    log1, log3 = _info(lake, "logistic", "v0001"), _info(lake, "logistic", "v0003")
    assert log3["snapshots"]["features"]["version"] == 1 and log3["snapshots"]["as_of"] == "1"
    assert log3["data_window"] == log1["data_window"]
    assert _logistic(lake, "v0003") == _logistic(lake, "v0001")   # weights and intercept, to the last bit
    (trees1, thr1), (trees2, thr2) = _forest(lake, "v0001"), _forest(lake, "v0002")
    assert thr2 == thr1 and trees2.keys() == trees1.keys()
    for name in trees1:
        assert np.array_equal(trees2[name], trees1[name]), name

    # evaluate on the champions' own snapshot: v1 again, and the test metrics training registered
    evaluated = _run(evaluate, [*args, "--as-of", "champion"], capsys)
    assert evaluated["snapshots"]["features"]["version"] == 1 and evaluated["extra"]["features_version"] == 1
    assert evaluated["versions"] == {"rcf": "v0002", "logistic": "v0003"}
    assert evaluated["detectors"]["logistic_score"]["average_precision"] == \
        pytest.approx(log3["metrics"]["average_precision"], abs=1e-12)

    # What maintain kept: a VACUUM with no retention deletes v2's 3 files of the appended day
    # (compacted away by OPTIMIZE), and v2 no longer reads.
    delta.vacuum(spark, features, 0)
    with pytest.raises(Exception, match="(?i)file.*(not exist|not found)|FileNotFound|FILE_NOT_EXIST"):
        _checksum(delta.read(spark, kept[1]))


def test_as_of_names_a_version_a_time_or_a_model_version_and_refuses_what_does_not_exist(spark, lake, tmp_path):
    features = str(lake["features"])
    commits = delta.history(spark, features)
    v1 = next(c for c in commits if c.version == 1)

    def version(as_of):
        return open_training_data(spark, features=features, fmt="delta", as_of=as_of,
                                  registry_root=str(lake["registry"])).snapshots["features"]["version"]

    assert version(None) == commits[-1].version
    assert version("1") == 1
    assert version(v1.time.isoformat()) == 1                      # the exact commit time
    assert version(v1.time.strftime("%Y-%m-%dT%H:%M:%S.%f")) == 1  # naive: UTC
    with pytest.raises(InputError, match=r"has no version 99 \(it has v0\.\.v"):
        version("99")
    with pytest.raises(InputError, match="has no version committed at or before 2001-01-01"):
        version("2001-01-01")
    with pytest.raises(InputError, match="--as-of must be a table version"):
        version("last week")
    with pytest.raises(InputError, match="no version v0042"):
        version("logistic:v0042")

    parquet = tmp_path / "features_parquet"
    spark.read.format("delta").load(features).limit(10).write.parquet(str(parquet))
    with pytest.raises(InputError, match="is not a Delta table"):
        open_training_data(spark, features=str(parquet), fmt="parquet", as_of="0")
    plain = open_training_data(spark, features=str(parquet), fmt="parquet")
    assert plain.snapshots == {"features": {"path": str(parquet), "format": "parquet", "version": None}}
