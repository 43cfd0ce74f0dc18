"""Logistic detector: recovers a planted rule, meets its target precision, save/load round trip."""
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from models import evaluation as ev
import oracles as risk
from models.logistic import LogisticDetector, LogisticError, time_split, train_logistic

FEATURES = ["x1", "x2", "x3"]
START = dt.datetime(2018, 7, 1)


@pytest.fixture(scope="module")
def planted_df(spark):
    """label = (x1 + small noise) > 0.85 (about 15% positives); x2, x3 are noise; 21 days."""
    rng = np.random.default_rng(7)
    n = 4200
    x1 = rng.random(n)
    x2 = rng.normal(size=n)
    x3 = rng.normal(size=n)
    label = (x1 + rng.normal(scale=0.03, size=n)) > 0.85
    x2 = np.where(np.arange(n) % 97 == 0, np.nan, x2)  # a few missing values: the Imputer must cope
    pdf = pd.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "event_time": pd.Timestamp(START) + pd.to_timedelta((np.arange(n) * 21 * 86400 // n), unit="s"),
        "x1": x1, "x2": x2, "x3": x3, "label": label.astype(np.int32), "weekend": np.arange(n) % 2 == 1,
    })
    # from pandas through Arrow: much faster than a list of tuples
    return spark.createDataFrame(pdf).coalesce(1).cache()


@pytest.fixture(scope="module")
def detector(planted_df):
    # refit=False keeps the model the threshold was chosen with, so the test can check it
    return train_logistic(planted_df, feature_cols=FEATURES, reg_params=(0.001, 0.01), validation_days=7,
                          delay_days=3, target={"precision": 0.9}, refit=False)


def test_recovers_the_planted_rule(detector, planted_df):
    scored = detector.transform(planted_df)
    table = ev.score_table(scored, "logistic_score", "label")
    assert ev.auc_roc(table) > 0.95
    coefs = detector.coefficients()
    assert coefs["x1"] > 5 * max(abs(coefs["x2"]), abs(coefs["x3"]))
    assert detector.params["reg_param"] in (0.001, 0.01)
    assert len(detector.validation["selection"]) == 2
    assert set(scored.columns) == set(planted_df.columns) | {"logistic_score", "logistic_flag"}


def test_threshold_meets_target_precision_on_validation(detector, planted_df):
    _, valid, window = time_split(planted_df, "event_time", 7, 3)
    assert window["validation_from"] == "2018-07-15"
    flagged = detector.transform(valid).where("logistic_flag").groupBy().agg({"label": "avg", "*": "count"}).first()
    precision, count = flagged["avg(label)"], flagged["count(1)"]
    assert count > 20 and precision >= 0.9
    assert detector.validation["threshold_choice"]["target_met"]
    assert 0.0 < detector.threshold < 1.0


def test_save_load_round_trip_gives_identical_scores(detector, planted_df, tmp_path):
    detector.save(str(tmp_path / "lr"))
    loaded = LogisticDetector.load(str(tmp_path / "lr"))
    assert loaded.threshold == detector.threshold and loaded.feature_cols == FEATURES
    assert loaded.params == detector.params
    before = {r.id: r.logistic_score for r in detector.transform(planted_df).select("id", "logistic_score").collect()}
    after = {r.id: r.logistic_score for r in loaded.transform(planted_df).select("id", "logistic_score").collect()}
    assert before == after


def test_contributions_and_combined_risk(detector, planted_df):
    scored = detector.transform(planted_df, contributions_col="contrib")
    out = risk.with_risk(scored, logistic_threshold=detector.threshold, logistic_contributions_col="contrib",
                         logistic_features=FEATURES).cache()
    top = out.orderBy(out["logistic_score"].desc()).first()
    assert top["risk_reasons"][0] == "logistic:x1"
    # at the decision threshold the logistic risk is exactly 0.5
    at = out.sparkSession.createDataFrame([(detector.threshold,)], "logistic_score double")
    assert risk.with_risk(at, logistic_threshold=detector.threshold).first()["risk"] == pytest.approx(0.5)
    assert out.where("risk < 0 or risk > 1").count() == 0


def test_refit_uses_all_days_and_bad_windows_fail(planted_df):
    with pytest.raises(LogisticError, match="too short"):
        train_logistic(planted_df, feature_cols=FEATURES, validation_days=15, delay_days=7)
    one_class = planted_df.where("label = 0")
    with pytest.raises(LogisticError):
        train_logistic(one_class, feature_cols=FEATURES, reg_params=(0.0,), validation_days=7, delay_days=3)


def test_supervised_edges_find_where_the_label_rate_jumps(spark):
    from models.logistic import supervised_edges

    rng = np.random.default_rng(2)
    amount = np.round(rng.gamma(2.0, 40.0, 20_000), 2)
    label = (amount > 220) | (rng.random(20_000) < 0.01)  # the Handbook's first scenario plus noise
    df = spark.createDataFrame(pd.DataFrame({"amount": amount, "label": label.astype(np.int32)}))
    edges = supervised_edges(df, "amount", "label", max_bins=2)
    below, above = amount[amount <= 220].max(), amount[amount > 220].min()
    assert edges == [pytest.approx((below + above) / 2)]
    assert len(supervised_edges(df, "amount", "label", max_bins=6)) <= 5
    assert supervised_edges(df, "amount", "label", max_bins=0) == []


def test_binning_is_chosen_on_validation_and_kept_with_the_model(planted_df, tmp_path):
    detector = train_logistic(planted_df, feature_cols=FEATURES, reg_params=(0.0,), validation_days=5, delay_days=2,
                              binned_features=["x1"], bins=(0, 2))
    assert {s["bins"] for s in detector.validation["selection"]} == {0, 2}
    # a step at the planted 0.85 separates the classes better than a slope: binning is chosen
    assert detector.params["bins"] == 2
    (name, edge), = detector.steps
    assert name == "x1" and edge == pytest.approx(0.85, abs=0.03)
    detector.save(str(tmp_path / "m"))
    assert LogisticDetector.load(str(tmp_path / "m")).steps == detector.steps
