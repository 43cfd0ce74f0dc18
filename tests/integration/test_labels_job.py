"""The labels job end to end (issue #16, late labels): merge a file of late labels, rebuild the
features, and a terminal-risk feature changes only for rows whose cut-off is after the label's
arrival; merging the file again changes nothing (no new table version anywhere).

The lake: two terminals with a transaction every 12 hours from 2024-01-01 to 2024-01-20 16:00
(i = 0..39), every raw label 0; features with 1- and 7-day windows and a 7-day delay. The late
label: T1-002 (2024-01-02 00:00) is a fraud, known 2024-01-12 00:00. It lies in the 7-day window
(t - 14 d, t - 7 d] of T1's rows at 2024-01-09 .. 2024-01-15 12:00 (i = 16..29); of those, the rows
from 2024-01-12 (i = 22..29) know it. No 1-day window (t - 8 d, t - 7 d] holding it (i = 16, 17)
knows it yet.
"""
import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from features.transactions import transaction_feature_columns
from jobs import build_features
from jobs import labels as labels_job
from runtime.delta import history

pytestmark = pytest.mark.integration

START = dt.datetime(2024, 1, 1)
CONF = """
spark: {{master: "local[2]", shuffle_partitions: 4, extra_jars: ""}}
storage: {{lake: "{lake}"}}
features: {{transactions: {{windows_days: [1, 7], delay_days: 7}}}}
"""


def tx_id(terminal, i):
    return f"{terminal}-{i:03d}"


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    conf = root / "conf.yaml"
    conf.write_text(CONF.format(lake=root / "lake"))
    rows = [(tx_id(term, i), START + dt.timedelta(hours=12 * i), f"c{i % 5}", term, 10.0 + i, 0)
            for term in ("T1", "T2") for i in range(40)]
    raw = root / "lake" / "raw" / "transactions"
    spark.createDataFrame(rows, "transaction_id string, event_time timestamp, customer_id string, "
                                "terminal_id string, amount double, label int").write.parquet(str(raw))
    args = ["--conf", str(conf), "--dataset", "transactions"]
    assert build_features.main(args) == 0
    return {"root": root, "args": args, "features": root / "lake" / "features" / "transactions",
            "labels": root / "lake" / "labels" / "transactions", "scores": root / "lake" / "scores" / "transactions"}


def read(spark, path):
    return spark.read.format("delta").load(str(path))


def by_id(df, columns):
    return {r["transaction_id"]: tuple(r[c] for c in columns) for r in df.collect()}


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def test_late_labels_change_features_only_after_they_arrive_and_merging_again_changes_nothing(
        spark, lake, tmp_path, capsys):
    columns = ["label", *transaction_feature_columns([1, 7])]
    before = by_id(read(spark, lake["features"]), columns)
    # a scores table as the nightly run leaves it: every event with its label when scored
    (read(spark, lake["features"]).select("transaction_id", "date", "label", F.lit(0.1).alias("risk"))
     .write.format("delta").partitionBy("date").save(str(lake["scores"])))
    scores_version = history(spark, str(lake["scores"]), 1)[-1].version

    labels_csv = tmp_path / "chargebacks.csv"
    labels_csv.write_text("transaction_id,label,known_at,case\n"
                          "T1-002,1,2024-01-12T00:00:00Z,cb-1\n"     # the late fraud
                          "T2-005,0,2024-01-05 00:00:00,cb-2\n"      # confirms the raw label: changes nothing
                          "T9-999,1,2024-01-15 00:00:00,cb-3\n")     # no such event (yet)
    capsys.readouterr()
    assert labels_job.main(lake["args"] + ["--input", str(labels_csv), "--json"]) == 0
    out = capsys.readouterr().out
    summary = last_json(out)
    assert (summary["rows_in"], summary["rows_out"]) == (3, 3)
    assert summary["dates"] == ["2024-01-02", "2024-01-03"]
    extra = summary["extra"]
    assert (extra["new"], extra["rejected"], extra["unknown_ids"], extra["unknown_examples"]) == (3, 0, 1, ["T9-999"])
    assert extra["scores_updated"] == 1
    assert "1 labels for events not in the feature table" in out and "T9-999" in out
    assert "columns not used: case" in out

    table = {r["transaction_id"]: (r["label"], r["known_at"]) for r in read(spark, lake["labels"]).collect()}
    assert table == {"T1-002": (1, dt.datetime(2024, 1, 12)), "T2-005": (0, dt.datetime(2024, 1, 5)),
                     "T9-999": (1, dt.datetime(2024, 1, 15))}   # the unknown id is stored too
    scores = by_id(read(spark, lake["scores"]), ["label"])
    assert scores["T1-002"] == (1,) and {v for k, v in scores.items() if k != "T1-002"} == {(0,)}
    assert history(spark, str(lake["scores"]), 1)[-1].version == scores_version + 1

    assert build_features.main(lake["args"] + ["--from-date", "2024-01-02", "--to-date", "2024-01-20"]) == 0
    after = by_id(read(spark, lake["features"]), columns)
    assert after.keys() == before.keys()
    changed = {k: [c for c, b, a in zip(columns, before[k], after[k], strict=True) if b != a]
               for k in before if before[k] != after[k]}
    expected = {tx_id("T1", i): ["terminal_risk_7d"] for i in range(22, 30)} | {"T1-002": ["label"]}
    assert changed == expected
    risk = columns.index("terminal_risk_7d")
    assert after[tx_id("T1", 29)][risk] == pytest.approx(1 / 14)   # 14 transactions in its window, one fraud
    # the rows whose window holds T1-002 but whose cut-off is before 2024-01-12 kept a risk of 0
    assert all(after[tx_id("T1", i)][risk] == 0.0 for i in range(16, 22))

    # merging the same file again: nothing written anywhere
    labels_version = history(spark, str(lake["labels"]), 1)[-1].version
    scores_version = history(spark, str(lake["scores"]), 1)[-1].version
    assert labels_job.main(lake["args"] + ["--input", str(labels_csv), "--json"]) == 0
    again = last_json(capsys.readouterr().out)
    assert (again["rows_out"], again["extra"]["unchanged"], again["extra"]["scores_updated"]) == (0, 3, 0)
    assert history(spark, str(lake["labels"]), 1)[-1].version == labels_version
    assert history(spark, str(lake["scores"]), 1)[-1].version == scores_version
    assert {r["transaction_id"]: (r["label"], r["known_at"]) for r in read(spark, lake["labels"]).collect()} == table


def test_a_file_with_bad_rows_is_not_merged_unless_asked_and_the_reasons_are_printed(spark, lake, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"transaction_id": "T2-010", "label": 1, "known_at": "2024-01-10 00:00:00"}\n'
                   '{"transaction_id": "T2-011", "label": 2, "known_at": "2024-01-10 00:00:00"}\n'
                   '{"transaction_id": "T2-030", "label": 1, "known_at": "2024-01-10 00:00:00"}\n'
                   'not json\n')
    before = history(spark, str(lake["labels"]), 1)[-1]
    capsys.readouterr()
    assert labels_job.main(lake["args"] + ["--input", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "3 of 4 rows rejected" in captured.err and "nothing merged" in captured.err
    for reason in ("1 invalid label", "1 unparseable record", "1 known_at before the event time"):
        assert reason in captured.err
    assert "e.g. not json" in captured.out
    assert history(spark, str(lake["labels"]), 1)[-1] == before

    assert labels_job.main(lake["args"] + ["--input", str(bad), "--skip-bad-rows", "--json"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert (summary["rows_in"], summary["rows_out"], summary["extra"]["rejected"]) == (4, 1, 3)
    assert read(spark, lake["labels"]).where("transaction_id = 'T2-010'").count() == 1
    assert read(spark, lake["labels"]).where("transaction_id IN ('T2-011', 'T2-030')").count() == 0
