"""Metrics on tiny hand-computed examples, card precision@k, the Handbook split, plots, report."""
import datetime as dt

import numpy as np
import pytest
from pyspark.sql import types as T

from models import evaluation as ev
from reporting.plots import evaluation_plots
from reporting.report import evaluation_report, render_report

SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
LABELS = [1, 0, 1, 1, 0, 0]


@pytest.fixture(scope="module")
def six_df(spark):
    return spark.createDataFrame(list(zip(SCORES, LABELS, strict=True)), "score double, label int")


def test_auc_and_ap_match_hand_computation(six_df):
    table = ev.score_table(six_df, "score", "label")
    # positives beat negatives in 3 + 2 + 2 of 9 pairs
    assert ev.auc_roc(table) == pytest.approx(7 / 9)
    # precision at each positive: 1/1, 2/3, 3/4
    assert ev.average_precision(table) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_ties_count_half_for_auc_and_as_one_threshold_for_ap(spark):
    df = spark.createDataFrame([(0.5, 1), (0.5, 0), (0.2, 0)], "score double, label int")
    table = ev.score_table(df, "score", "label")
    assert ev.auc_roc(table) == pytest.approx(0.75)
    assert ev.average_precision(table) == pytest.approx(0.5)


def test_metrics_agree_with_scikit_learn_on_random_scores(spark):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y = rng.random(3000) < 0.05
    s = np.round(rng.random(3000) + 0.8 * y, 2)  # rounding makes ties
    df = spark.createDataFrame([(float(a), int(b)) for a, b in zip(s, y, strict=True)], "score double, label int")
    table = ev.score_table(df, "score", "label")
    assert ev.auc_roc(table) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    assert ev.average_precision(table) == pytest.approx(metrics.average_precision_score(y, s), abs=1e-12)
    binned = ev.score_table(df, "score", "label", max_points=50)
    assert binned.binned and len(binned.scores) <= 50
    assert ev.auc_roc(binned) == pytest.approx(metrics.roc_auc_score(y, s), abs=0.02)


def test_precision_recall_at_threshold_and_precision_at_k(six_df):
    m = ev.threshold_metrics(six_df, "score", "label", 0.6)  # flags 0.9 0.8 0.7 0.6
    assert (m["precision"], m["recall"], m["flagged"]) == (pytest.approx(0.75), pytest.approx(1.0), 4)
    assert ev.precision_at_k(six_df, "score", "label", k=2) == pytest.approx(0.5)
    assert ev.precision_at_k(six_df, "score", "label", k=4) == pytest.approx(0.75)
    # fewer rows than k: still divided by k, as the Handbook does
    assert ev.precision_at_k(six_df, "score", "label", k=10) == pytest.approx(0.3)


CARD_ROWS = [
    # day, card, score, label
    ("2018-08-08", "A", 0.90, 1),
    ("2018-08-08", "A", 0.10, 0),
    ("2018-08-08", "E", 0.85, 0),  # E: max score 0.85 and, from another transaction, max label 1
    ("2018-08-08", "E", 0.05, 1),
    ("2018-08-08", "B", 0.80, 0),
    ("2018-08-08", "C", 0.30, 1),
    ("2018-08-09", "A", 0.95, 1),
    ("2018-08-09", "E", 0.90, 1),
    ("2018-08-09", "C", 0.70, 1),
    ("2018-08-09", "D", 0.60, 0),
    ("2018-08-09", "B", 0.20, 0),
]


@pytest.fixture(scope="module")
def card_df(spark):
    rows = [(dt.date.fromisoformat(d), c, s, y) for d, c, s, y in CARD_ROWS]
    return spark.createDataFrame(rows, "day date, card string, score double, label int")


def test_card_precision_removes_cards_caught_on_earlier_days(card_df):
    result = ev.card_precision_at_k(card_df, "score", "label", card_col="card", date_col="day", k=2)
    # day 1: A and E (both fraud) -> 1.0; day 2 without A and E: C (fraud), D -> 0.5
    assert result["per_day"] == [1.0, 0.5]
    assert result["mean"] == pytest.approx(0.75)
    # fraudulent cards left as candidates: day 1 A, E, C; day 2 (A, E removed) C
    assert result["compromised_per_day"] == [3, 1] and result["ceiling"] == pytest.approx(0.75)
    kept = ev.card_precision_at_k(card_df, "score", "label", card_col="card", date_col="day", k=2,
                                  remove_detected=False)
    assert kept["per_day"] == [1.0, 1.0]


def test_known_compromised_cards_are_excluded_after_the_delay(spark):
    history = spark.createDataFrame(
        [("X", dt.date(2018, 1, 1), 1), ("Y", dt.date(2017, 12, 1), 1), ("Z", dt.date(2018, 1, 2), 0)],
        "card string, day date, label int")
    test = spark.createDataFrame(
        [("X", dt.date(2018, 1, 8)), ("X", dt.date(2018, 1, 9)), ("Y", dt.date(2018, 1, 9)),
         ("Z", dt.date(2018, 1, 9))], "card string, day date")
    kept = ev.exclude_known_compromised(test, history, card_col="card", date_col="day", delay_days=7,
                                        since="2018-01-01")
    got = sorted((r.card, r.day.isoformat()) for r in kept.collect())
    # X's fraud of 01-01 is known from 01-09 (delay 7 + 1 day); Y's is before `since`; Z never had one
    assert got == [("X", "2018-01-08"), ("Y", "2018-01-09"), ("Z", "2018-01-09")]
    assert kept.columns == test.columns


def test_handbook_split_windows_and_exclusion(spark):
    start = dt.datetime(2018, 7, 25, 12)
    rows = [(f"t{i}", start + dt.timedelta(days=i), "c1" if i != 3 else "c2", 1 if i == 3 else 0)
            for i in range(30)]
    rows.append(("late", start + dt.timedelta(days=16), "c2", 0))  # c2 fraud on day 3 -> known by day 11
    rows.append(("early", start + dt.timedelta(days=14), "c3", 0))
    schema = T.StructType([T.StructField("transaction_id", T.StringType()),
                           T.StructField("event_time", T.TimestampType()),
                           T.StructField("customer_id", T.StringType()), T.StructField("label", T.IntegerType())])
    df = spark.createDataFrame(rows, schema)
    train, test = ev.handbook_train_test_split(df, "2018-07-25")
    assert sorted(r.transaction_id for r in train.collect()) == [f"t{i}" for i in range(7)]
    test_ids = {r.transaction_id for r in test.collect()}
    assert test_ids == {f"t{i}" for i in range(14, 21)} | {"early"}


def test_evaluate_scores_keys_and_values(card_df):
    m = ev.evaluate_scores(card_df, "score", "label", threshold=0.75, k=2, card_col="card", date_col="day")
    for key in ("auc_roc", "average_precision", "precision", "recall", "precision_at_k", "card_precision_at_2"):
        assert key in m
    assert m["n"] == len(CARD_ROWS) and m["n_positive"] == 6
    # flagged: 0.9, 0.85, 0.8, 0.95, 0.9 -> frauds A, A, E -> 3/5; recall 3/6
    assert m["precision"] == pytest.approx(3 / 5) and m["recall"] == pytest.approx(0.5)
    assert m["precision_at_k"] == pytest.approx(1.0)
    assert m["card_precision_at_2"] == pytest.approx(0.75)


def test_threshold_for_target_precision_and_recall(six_df):
    table = ev.score_table(six_df, "score", "label")
    p = ev.threshold_for_target(table, {"precision": 0.7})
    # precision by threshold: .9 1.0, .8 .5, .7 .667, .6 .75, .5 .6 -> lowest with >= .7 is 0.6
    assert p["threshold"] == 0.6 and p["target_met"]
    r = ev.threshold_for_target(table, {"recall": 0.6})
    assert r["threshold"] == 0.7 and r["recall"] == pytest.approx(2 / 3)
    missed = ev.threshold_for_target(table, {"precision": 1.1})
    assert not missed["target_met"] and missed["threshold"] == 0.9


def test_plots_are_png_and_report_embeds_them(six_df):
    plots = evaluation_plots(six_df, "score", "label", threshold=0.6)
    assert set(plots) == {"roc", "pr", "histogram"}
    assert all(png.startswith(b"\x89PNG") for png in plots.values())
    page, metrics = evaluation_report(six_df, {"score": 0.6}, k=2, title="tiny")
    assert page.count("src='data:image/png;base64,") == 3
    assert "average_precision" in page and "0.8056" in page
    assert metrics["score"]["auc_roc"] == pytest.approx(7 / 9)


def test_render_report_escapes_text():
    page = render_report("<t>", {"m": {"a<b": 1.0}}, {"s": {"cap": b"\x89PNGxx"}})
    assert "<t>" not in page and "&lt;t&gt;" in page and "a&lt;b" in page
    assert "data:image/png;base64,iVBOR3h4" in page


def test_combined_risk_formula_and_reason_codes(spark):
    import oracles as risk

    df = spark.createDataFrame(
        [(1, 2.0, 0.2, [0.5, 1.5, 0.0], [0.1, -2.0]),     # both detectors exactly at their thresholds
         (2, 4.0, 0.01, [3.0, 0.5, 0.5], [-1.0, -1.0]),  # RCF far above, logistic far below
         (3, None, 0.2, None, [0.3, 0.9])],              # no RCF score: counts as 0
        "id int, rcf_score double, logistic_score double, attr array<double>, contrib array<double>")
    common = {"rcf_threshold": 2.0, "logistic_threshold": 0.2, "rcf_attribution_col": "attr",
              "rcf_features": ["a", "b", "c"], "logistic_contributions_col": "contrib",
              "logistic_features": ["u", "v"]}
    rows = {r.id: r for r in risk.with_risk(df, **common).collect()}
    assert rows[1].risk_rcf == pytest.approx(0.5) and rows[1].risk_logistic == pytest.approx(0.5)
    assert rows[1].risk == pytest.approx(0.75)  # noisy-OR: 1 - 0.5 * 0.5
    assert rows[2].risk_rcf == pytest.approx(1 / (1 + np.exp(-4.0)))
    assert rows[3].risk == pytest.approx(0.5)
    # row 1 shares x risk: logistic u 1.0 x 0.5 > rcf b 0.75 x 0.5 > rcf a 0.25 x 0.5
    assert rows[1].risk_reasons == ["logistic:u", "rcf:b", "rcf:a"]
    assert rows[2].risk_reasons[0] == "rcf:a" and all(not r.startswith("logistic") for r in rows[2].risk_reasons)
    assert rows[3].risk_reasons == ["logistic:v", "logistic:u"]
    maxed = {r.id: r.risk for r in risk.with_risk(df, method="max", **common).collect()}
    assert maxed[1] == pytest.approx(0.5)


def test_a_missing_probability_is_no_risk_rather_than_a_tiny_one(spark):
    import oracles as risk

    df = spark.createDataFrame([(1, 2.0, None)], "id int, rcf_score double, logistic_score double")
    row = risk.with_risk(df, rcf_threshold=2.0, logistic_threshold=0.2).collect()[0]
    assert row.risk_logistic is None
    assert row.risk == pytest.approx(0.5)  # the RCF alone, at its threshold
