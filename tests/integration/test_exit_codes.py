"""Exit codes and the summary line of every job: nothing to do (3, or 0 with --allow-empty) leaves
nothing behind, and with --json the last line of stdout is one JSON object, for every job.

Uses the small transactions lake of conftest.py (features of 2018-04-01 .. 2018-04-30).
"""
import json

import pandas as pd
import pytest

from jobs import build_features, evaluate, replay, score, stream, summary

pytestmark = pytest.mark.integration

EMPTY = "2030-01-01"


def listing(folder):
    """Every file and folder under ``folder`` with its size and modification time."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def features_of(lake):
    return lake["root"] / "lake" / "features" / "transactions"


@pytest.fixture(scope="module")
def gappy_features(spark, lake, tmp_path_factory):
    """A copy of the feature table (a Delta table) without 2018-04-28: the range
    2018-04-27..2018-05-01 then has two empty dates, 2018-04-28 and 2018-05-01, and three with rows."""
    copy = tmp_path_factory.mktemp("gappy") / "features"
    table = spark.read.format("delta").load(str(features_of(lake)))
    table.where("date != DATE'2018-04-28'").write.format("delta").partitionBy("date").save(str(copy))
    return copy


@pytest.fixture(scope="module")
def scored_table(lake, tmp_path_factory):
    """A scores table holding 2018-04-26 (the existing table the empty runs must not touch)."""
    out = tmp_path_factory.mktemp("scored") / "scores"
    assert score.main(lake["args"] + ["--date", "2018-04-26", "--output", str(out)]) == 0
    return out


def test_score_on_a_date_without_features_exits_3_and_creates_no_folder(lake, tmp_path, capsys):
    out = tmp_path / "new-scores"
    capsys.readouterr()
    assert score.main(lake["args"] + ["--date", EMPTY, "--output", str(out)]) == 3
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"python -m jobs score: nothing to do: no feature rows in {features_of(lake)} "
                                    f"on {EMPTY}")
    assert not out.exists()
    last = captured.out.strip().splitlines()[-1]
    assert last.startswith("[score] status nothing-to-do; dataset transactions; dates 2030-01-01; seconds ")


def test_score_on_a_date_without_features_leaves_an_existing_table_as_it_was(lake, scored_table, capsys):
    before = listing(scored_table)
    capsys.readouterr()
    assert score.main(lake["args"] + ["--date", EMPTY, "--output", str(scored_table)]) == 3
    assert EMPTY in capsys.readouterr().err
    assert listing(scored_table) == before


def test_a_range_with_some_empty_dates_lists_them_and_writes_nothing(lake, gappy_features, scored_table, capsys):
    before = listing(scored_table)
    capsys.readouterr()
    code = score.main(lake["args"] + ["--from", "2018-04-27", "--to", "2018-05-01", "--input", str(gappy_features),
                                      "--output", str(scored_table), "--json"])
    assert code == 3
    err = capsys.readouterr()
    assert err.err.count("\n") == 1
    assert "no feature rows in" in err.err and "on 2 of the 5 dates asked: 2018-04-28, 2018-05-01;" in err.err
    assert last_json(err.out) == {"job": "score", "dataset": "transactions", "status": "nothing-to-do",
                                  "dates": ["2018-04-28", "2018-05-01"], "seconds": last_json(err.out)["seconds"]}
    assert listing(scored_table) == before


def test_allow_empty_scores_the_dates_that_have_rows_and_exits_0(spark, lake, gappy_features, tmp_path, capsys):
    out = tmp_path / "scores"
    capsys.readouterr()
    code = score.main(lake["args"] + ["--from", "2018-04-27", "--to", "2018-05-01", "--input", str(gappy_features),
                                      "--output", str(out), "--allow-empty", "--json"])
    assert code == 0
    result = last_json(capsys.readouterr().out)
    assert sorted(p.name for p in out.glob("date=*")) == ["date=2018-04-27", "date=2018-04-29", "date=2018-04-30"]
    written = pd.read_parquet(out)
    features = pd.read_parquet(gappy_features, columns=["transaction_id", "date"])
    features = features[features["date"].astype(str).isin(["2018-04-27", "2018-04-29", "2018-04-30"])]
    assert result["status"] == "done"
    assert result["dates"] == ["2018-04-27", "2018-04-29", "2018-04-30"]
    assert result["extra"] == {"empty_dates": "2018-04-28, 2018-05-01"}
    assert result["rows_in"] == len(features) == result["rows_out"] == len(written) > 0
    assert result["alerts"] == int(written["is_anomaly"].sum())
    assert result["versions"] == {"rcf": "v0001", "logistic": "v0001"}


def test_allow_empty_on_a_date_without_features_exits_0_with_nothing_written(lake, tmp_path, capsys):
    out = tmp_path / "scores"
    capsys.readouterr()
    assert score.main(lake["args"] + ["--date", EMPTY, "--output", str(out), "--allow-empty", "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert (result["status"], result["dates"]) == ("nothing-to-do", [EMPTY])
    assert not out.exists()


def test_features_on_a_range_without_raw_rows_exits_3_with_nothing_written(lake, tmp_path, capsys):
    out, quarantine = tmp_path / "features", tmp_path / "quarantine"
    capsys.readouterr()
    code = build_features.main(lake["args"] + ["--from-date", EMPTY, "--to-date", "2030-01-02", "--output", str(out),
                                               "--quarantine", str(quarantine)])
    assert code == 3
    err = capsys.readouterr().err
    assert err.startswith("python -m jobs features: nothing to do: no valid raw rows in ")
    assert err.strip().endswith(" on 2030-01-01..2030-01-02") and err.count("\n") == 1
    assert not out.exists() and not quarantine.exists()


def test_summary_on_a_date_without_scores_exits_3(lake, scored_table, tmp_path, capsys):
    out = tmp_path / "summary"
    capsys.readouterr()
    code = summary.main(lake["args"] + ["--date", EMPTY, "--input", str(scored_table), "--output", str(out)])
    assert code == 3
    assert capsys.readouterr().err.strip() == f"python -m jobs summary: nothing to do: no scores on {EMPTY} in {scored_table}"
    assert not out.exists()


def test_every_job_prints_its_summary_as_one_json_line(spark, lake, scored_table, tmp_path, capsys):
    raw = pd.read_parquet(lake["root"] / "lake" / "raw" / "transactions")
    features = pd.read_parquet(features_of(lake), columns=["transaction_id", "date"])
    summaries = {name: last_json(out) for name, out in lake["json"].items()}   # generate, features, train

    def run(job, *extra):
        capsys.readouterr()
        assert job.main(lake["args"] + ["--json", *extra]) == 0
        return last_json(capsys.readouterr().out)

    summaries["evaluate"] = run(evaluate)
    summaries["score"] = run(score, "--date", "2018-04-25", "--output", str(tmp_path / "scores"))
    summaries["summary"] = run(summary, "--date", "2018-04-26", "--input", str(scored_table),
                               "--output", str(tmp_path / "summary"), "--report", str(tmp_path / "report.html"),
                               "--reference-days", "0")
    landing = tmp_path / "landing"
    summaries["replay"] = run(replay, "--mode", "landing", "--output", str(landing), "--limit", "300",
                              "--batch-size", "100", "--rate", "0")
    summaries["stream"] = run(stream, "--source", "landing", "--input", str(landing), "--trigger", "available-now",
                              "--no-alerts", "--output", str(tmp_path / "sink"),
                              "--checkpoint", str(tmp_path / "checkpoint"), "--dead-letter", str(tmp_path / "dead"))

    assert set(summaries) == {"generate", "features", "train", "evaluate", "score", "summary", "replay", "stream"}
    for job, result in summaries.items():
        assert result["job"] == job and result["dataset"] == "transactions" and result["seconds"] >= 0, result
        assert result["status"] == "done", result
    assert summaries["generate"]["rows_out"] == len(raw)
    assert summaries["generate"]["extra"] == {"labeled": int(raw["label"].sum())}
    assert (summaries["features"]["rows_in"], summaries["features"]["rows_out"]) == (len(raw), len(features))
    assert summaries["features"]["extra"] == {"quarantined": 0}
    assert summaries["features"]["dates"][0] == "2018-04-01" and summaries["features"]["dates"][-1] == "2018-04-30"
    # evaluate: the documented metrics object, with the summary's fields added to it
    assert 0.0 <= summaries["evaluate"]["auc_roc"] <= 1.0
    assert set(summaries["evaluate"]["detectors"]) == {"rcf_score", "logistic_score"}
    assert summaries["evaluate"]["versions"] == {"rcf": "v0001", "logistic": "v0001"}
    assert summaries["evaluate"]["dates"] == [summaries["evaluate"]["test_from"], summaries["evaluate"]["test_to"]]
    day = features[features["date"].astype(str) == "2018-04-25"]
    written = pd.read_parquet(tmp_path / "scores")
    assert summaries["score"]["rows_in"] == len(day) == summaries["score"]["rows_out"] == len(written)
    assert summaries["score"]["alerts"] == int(written["is_anomaly"].sum())
    assert summaries["summary"]["dates"] == ["2018-04-26"]
    assert summaries["replay"]["rows_out"] == 300 and summaries["replay"]["extra"] == {"failed": 0}
    sink = pd.read_parquet(tmp_path / "sink")
    assert summaries["stream"]["rows_in"] == 300
    assert summaries["stream"]["rows_out"] == len(sink)
    assert summaries["stream"]["rows_out"] + summaries["stream"]["extra"]["dead_letters"] == 300
