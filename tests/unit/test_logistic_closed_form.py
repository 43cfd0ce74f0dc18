"""The closed-form logistic score equals the fitted PipelineModel's probability."""
import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from models.logistic import LogisticDetector, fit_pipeline, linear_terms
from oracles import transform_with_pipeline

FEATURES = ["x1", "x2", "flat", "flag"]


@pytest.fixture(scope="module")
def frames(spark):
    """Training and scoring frames with nulls, NaNs, a constant column and a boolean column."""
    rng = np.random.default_rng(3)
    n = 1500
    x1 = rng.normal(size=n)
    x2 = rng.normal(5.0, 3.0, size=n)
    label = (x1 + 0.3 * x2 + rng.normal(scale=0.5, size=n) > 1.5).astype(np.int32)
    train = pd.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "x1": np.where(np.arange(n) % 11 == 0, np.nan, x1),  # NaN: missing for the Imputer
        "x2": x2,
        "flat": np.full(n, 7.0),  # std 0: Spark's StandardScaler scales it to 0
        "flag": np.arange(n) % 3 == 0,
        "label": label,
    })
    train_df = spark.createDataFrame(train).withColumn(  # nulls as well as NaNs
        "x2", F.when(F.col("id") % 13 == 0, F.lit(None)).otherwise(F.col("x2"))).coalesce(1)
    rows = [
        (0, 0.5, 6.0, 7.0, True), (1, None, 6.0, 7.0, False), (2, float("nan"), None, 7.0, True),
        (3, -2.0, float("nan"), None, None), (4, 3.0, -4.0, 9.5, False), (5, None, None, float("nan"), None),
        (6, 40.0, 90.0, 7.0, True), (7, -40.0, -90.0, -3.0, False),
    ]
    score_df = spark.createDataFrame(rows, "id long, x1 double, x2 double, flat double, flag boolean").coalesce(1)
    return train_df, score_df


@pytest.fixture(scope="module")
def detector(frames):
    train_df, _ = frames
    pipeline = fit_pipeline(train_df, FEATURES, "label", reg_param=0.01)
    return LogisticDetector(pipeline=pipeline, feature_cols=FEATURES, threshold=0.5)


def test_terms_follow_the_fitted_stages(detector):
    terms = linear_terms(detector.pipeline, FEATURES)
    assert terms.features == tuple(FEATURES)
    assert math.isnan(terms.missing_value)
    assert terms.scales[FEATURES.index("flat")] == 0.0  # the constant column contributes nothing
    assert terms.weights == tuple(detector.coefficients().values())
    assert terms.intercept == detector.intercept


def test_closed_form_equals_the_pipeline_probability(detector, frames):
    train_df, score_df = frames
    for df in (score_df, train_df):
        fast = {r.id: r.logistic_score for r in detector.transform(df).select("id", "logistic_score").collect()}
        slow = {r.id: r.logistic_score for r in transform_with_pipeline(detector, df).select("id", "logistic_score")
                .collect()}
        assert fast.keys() == slow.keys()
        for key, expected in slow.items():
            assert fast[key] == pytest.approx(expected, rel=0, abs=1e-12), key
    extremes = {r.id: r.logistic_score for r in detector.transform(score_df).collect()}
    assert 0.0 <= extremes[7] < 1e-6 and extremes[6] > 1 - 1e-6  # saturates without overflow


def test_contributions_equal_coefficient_times_standardized_value(detector, frames):
    _, score_df = frames
    fast = {r.id: r.c for r in detector.transform(score_df, contributions_col="c").collect()}
    slow = {r.id: r.c for r in transform_with_pipeline(detector, score_df, contributions_col="c").collect()}
    for key, expected in slow.items():
        assert fast[key] == pytest.approx(expected, rel=0, abs=1e-12), key
        assert fast[key][FEATURES.index("flat")] == 0.0


def test_transform_adds_only_its_columns(detector, frames):
    _, score_df = frames
    out = detector.transform(score_df, contributions_col="c")
    assert out.columns == [*score_df.columns, "logistic_score", "logistic_flag", "c"]
    flags = {r.id: (r.logistic_flag, r.logistic_score) for r in out.collect()}
    assert all(flag == (score >= 0.5) for flag, score in flags.values())


STEPS = [("x1", 0.3), ("x2", 6.0), ("x1", -1.0)]


@pytest.fixture(scope="module")
def stepped(frames):
    """A model with step terms (feature >= edge indicators) after the features, as binning adds them."""
    train_df, _ = frames
    pipeline = fit_pipeline(train_df, FEATURES, "label", reg_param=0.01, steps=STEPS)
    return LogisticDetector(pipeline=pipeline, feature_cols=FEATURES, threshold=0.5, steps=STEPS)


def test_step_terms_keep_the_closed_form_exact(stepped, frames):
    train_df, score_df = frames
    terms = stepped.terms
    assert terms.features == tuple(FEATURES) and terms.steps == ((0, 0.3), (1, 6.0), (0, -1.0))
    assert len(terms.weights) == len(FEATURES) + len(STEPS)
    for df in (score_df, train_df):
        fast = {r.id: r.logistic_score for r in stepped.transform(df).select("id", "logistic_score").collect()}
        slow = {r.id: r.logistic_score for r in transform_with_pipeline(stepped, df).select("id", "logistic_score")
                .collect()}
        assert fast.keys() == slow.keys()
        for key, expected in slow.items():
            assert fast[key] == pytest.approx(expected, rel=0, abs=1e-12), key


def test_the_numpy_form_with_steps_is_the_jvm_form(stepped, frames):
    from models.logistic import feature_contributions, probability_array

    _, score_df = frames
    pdf = stepped.transform(score_df, contributions_col="c").toPandas().sort_values("id")
    values = pdf[FEATURES].astype(float).to_numpy()
    numpy_scores = probability_array(stepped.terms, lambda j: values[:, j], len(pdf))
    assert np.allclose(numpy_scores, pdf["logistic_score"].to_numpy(), rtol=0, atol=1e-15)
    # reasons rank features: each step's part is added to its feature's (x1 gets two steps)
    jvm_parts = np.array(pdf["c"].tolist())
    per_feature = feature_contributions(stepped.terms, values)
    expected = jvm_parts[:, :len(FEATURES)].copy()
    expected[:, 0] += jvm_parts[:, 4] + jvm_parts[:, 6]
    expected[:, 1] += jvm_parts[:, 5]
    assert np.allclose(per_feature, expected, rtol=0, atol=1e-12)


def test_a_saved_stepped_detector_scores_the_same_after_load(stepped, frames, tmp_path):
    _, score_df = frames
    stepped.save(str(tmp_path / "m"))
    again = LogisticDetector.load(str(tmp_path / "m"))
    assert again.steps == STEPS
    first = [r.logistic_score for r in stepped.transform(score_df).orderBy("id").collect()]
    assert [r.logistic_score for r in again.transform(score_df).orderBy("id").collect()] == first
