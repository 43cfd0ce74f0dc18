"""Tests of the Kinesis Analytics RANDOM_CUT_FOREST migration target (models/kda.py).

numpy-level tests for the score, the explanation, time decay and shingling; one small Spark test
for the DataFrame helper and the documented explanation shape.
"""
import json
import math

import numpy as np
import pytest

from models.kda import (
    RandomCutForestStream,
    StreamingForest,
    explanation_json,
    random_cut_forest_with_explanation,
    shingle,
)

LOG2_3 = math.log2(3.0)


def two_point_forest():
    """One tree over the points (0, 0) and (1, 0): its only cut is on x, between them."""
    forest = StreamingForest(2, number_of_trees=1, sub_sample_size=2, output_after=2, seed=1)
    scores, _, _ = forest.update(np.array([[0.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_array_equal(scores, [0.0, 0.0])  # warm-up: nothing scored yet
    return forest


def test_scores_and_directions_match_hand_computation():
    # (3, 0) lands in the leaf of (1, 0) at depth 1: 1/2 there; the root box [0, 1] x [0, 0]
    # grown to x = 3 has sides 3, of which 2 separate the point: s = 2/3 * 1 + 1/3 * 1/2 = 5/6,
    # times log2(M + 1) = log2(3). All of it is x, on the high side.
    forest = two_point_forest()
    s, high, low = forest.update(np.array([[3.0, 0.0]]))
    assert s[0] == pytest.approx(5.0 / 6.0 * LOG2_3, rel=1e-12)
    np.testing.assert_allclose(high[0], [5.0 / 6.0 * LOG2_3, 0.0], rtol=1e-12)
    np.testing.assert_array_equal(low[0], [0.0, 0.0])
    # (-2, 0): the mirror image, all low
    forest = two_point_forest()
    s, high, low = forest.update(np.array([[-2.0, 0.0]]))
    assert s[0] == pytest.approx(5.0 / 6.0 * LOG2_3, rel=1e-12)
    np.testing.assert_allclose(low[0], [5.0 / 6.0 * LOG2_3, 0.0], rtol=1e-12)
    # a duplicate of (1, 0): leaf mass 1 of 2 at depth 1: (1 - 1/4) / (1 + log2 2) = 3/8
    forest = two_point_forest()
    s, high, low = forest.update(np.array([[1.0, 0.0]]))
    assert s[0] == pytest.approx(0.375 * LOG2_3, rel=1e-12)
    assert (high + low).sum() == pytest.approx(s[0], rel=1e-12)


def clusters_then_outliers(seed=0):
    """A dense cluster streamed first, then the four points of the KDA docs' figure."""
    rng = np.random.default_rng(seed)
    cluster = rng.normal(0.0, 1.0, (600, 2))
    a = np.array([[0.0, -12.0],   # A1: y LOW
                  [0.0, 12.0],    # A2: y HIGH
                  [12.0, 0.0],    # A3: x HIGH
                  [-12.0, 0.0]])  # A4: x LOW
    return np.vstack([cluster, a])


def test_attributions_sum_to_the_score_and_point_the_documented_way():
    X = clusters_then_outliers()
    forest = StreamingForest(2, number_of_trees=50, sub_sample_size=128, seed=5)
    s, high, low = forest.update(X)
    scored = s > 0
    assert scored[:128].sum() == 0 and scored[128:].all()
    np.testing.assert_allclose((high + low).sum(axis=1)[scored], s[scored], rtol=0, atol=1e-9)
    tail = s[-4:]
    assert tail.min() > 2.0 * np.quantile(s[128:600], 0.99)
    expected = [("y", "LOW"), ("y", "HIGH"), ("x", "HIGH"), ("x", "LOW")]
    for k, (col, direction) in enumerate(expected):
        explanation = json.loads(explanation_json(["x", "y"], high[600 + k], low[600 + k], True))
        assert max(explanation, key=lambda c: explanation[c]["ATTRIBUTION_SCORE"]) == col
        assert explanation[col]["DIRECTION"] == direction
        assert explanation[col]["STRENGTH"] > 0.9


def test_feeding_in_batches_gives_the_same_scores_as_at_once():
    X = np.random.default_rng(2).normal(size=(400, 2))
    a = StreamingForest(2, number_of_trees=20, sub_sample_size=32, shingle_size=3, seed=1)
    b = StreamingForest(2, number_of_trees=20, sub_sample_size=32, shingle_size=3, seed=1)
    whole = a.update(X)
    parts = [b.update(X[:123]), b.update(X[123:124]), b.update(X[124:])]
    for k in range(3):
        np.testing.assert_array_equal(whole[k], np.concatenate([p[k] for p in parts]))


def test_non_finite_records_score_nan_and_are_skipped():
    X = np.random.default_rng(3).normal(size=(100, 2))
    X_bad = np.insert(X, 50, [np.nan, 1.0], axis=0)
    a = StreamingForest(2, number_of_trees=10, sub_sample_size=16, seed=1).update(X)[0]
    b = StreamingForest(2, number_of_trees=10, sub_sample_size=16, seed=1).update(X_bad)[0]
    assert np.isnan(b[50])
    _, high, low = StreamingForest(2, number_of_trees=10, sub_sample_size=16, seed=1).update(X_bad)
    assert explanation_json(["x", "y"], high[50], low[50], True) is None
    np.testing.assert_array_equal(np.delete(b, 50), a)


def test_shingle_puts_the_last_records_side_by_side_oldest_first():
    X = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    Z, complete = shingle(X, 2, history=np.array([[0.0, 0.0]]))
    np.testing.assert_array_equal(Z, [[0, 0, 1, 10], [1, 10, 2, 20], [2, 20, 3, 30]])
    assert complete.all()
    Z, complete = shingle(X, 3)
    np.testing.assert_array_equal(complete, [False, False, True])
    np.testing.assert_array_equal(Z[2], [1, 10, 2, 20, 3, 30])


def seasonal_with_level_shift(seed=0, n=2600, t0=2400, shift=3.0):
    """Period-48 sine of amplitude 5 plus noise; from t0 (a rising zero crossing) the level is +shift."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = 5.0 * np.sin(2 * np.pi * t / 48) + rng.normal(0.0, 0.2, n)
    x[t0:] += shift
    return x[:, None], t0


def test_shingling_detects_a_level_shift_in_a_seasonal_series():
    """Right after the shift the values are still inside the seasonal range, so one record at a
    time looks ordinary; a shingle of 8 sees the jump against the recent shape."""
    X, t0 = seasonal_with_level_shift()
    conf = dict(number_of_trees=30, sub_sample_size=64, time_decay=2000, seed=0)
    single = StreamingForest(1, shingle_size=1, **conf).update(X)[0]
    shingled = StreamingForest(1, shingle_size=8, **conf).update(X)[0]
    before = slice(1000, t0)
    assert single[t0] < np.quantile(single[before], 0.99)
    assert shingled[t0:t0 + 4].max() > 1.1 * shingled[before].max()
    # the attribution of a shingled record is per input column (summed over the shingle)
    s, high, low = StreamingForest(1, shingle_size=8, **conf).update(X[:300])
    assert high.shape == (300, 1)
    np.testing.assert_allclose((high + low)[:, 0], s, rtol=0, atol=1e-9)


def test_time_decay_keeps_the_samples_recent():
    X, _ = seasonal_with_level_shift(n=2400)
    ages = {}
    for decay in (100.0, 1e9):
        forest = StreamingForest(1, number_of_trees=20, sub_sample_size=64, time_decay=decay, seed=1)
        forest.update(X)
        ages[decay] = forest.seen - 1 - forest.seqs
    # timeDecay 100: a point 1000 records old has weight +10 against a new one: almost never kept
    assert (ages[100.0] > 1000).mean() < 0.01
    # no decay: a uniform sample of the whole stream, of which 1399 of 2400 records are that old
    assert 0.45 < (ages[1e9] > 1000).mean() < 0.72


def test_parameters_are_checked_with_their_kda_names():
    with pytest.raises(ValueError, match="subSampleSize"):
        StreamingForest(1, sub_sample_size=1)
    with pytest.raises(ValueError, match="timeDecay"):
        StreamingForest(1, time_decay=0)
    with pytest.raises(ValueError, match="numberOfTrees"):
        RandomCutForestStream(numberOfTrees=0)
    assert RandomCutForestStream().getOrDefault("timeDecay") == 100000.0
    with pytest.raises(ValueError, match="orderCol"):
        RandomCutForestStream().getOrderCol()


def test_dataframe_helper_gives_the_documented_explanation_per_series(spark, tmp_path):
    X = clusters_then_outliers()
    rows = [(key, i, float(x), float(y)) for key in ("a", "b") for i, (x, y) in enumerate(X)]
    rows.append(("b", len(X), 1.0, None))  # a null input: a null score, not learned from
    source_df = spark.createDataFrame(rows, "series string, ts long, x double, y double").repartition(2)
    out_df = random_cut_forest_with_explanation(source_df, 50, 128, 100000, 1, True, orderCol="ts",
                                                partitionCols=["series"], seed=5)
    assert out_df.columns == ["series", "ts", "x", "y", "ANOMALY_SCORE", "ANOMALY_EXPLANATION"]
    out = {(r.series, r.ts): r for r in out_df.collect()}
    expected_scores = StreamingForest(2, number_of_trees=50, sub_sample_size=128, seed=5).update(X)[0]
    for key in ("a", "b"):  # each series has its own forest, fed in ts order
        np.testing.assert_allclose([out[(key, i)].ANOMALY_SCORE for i in range(len(X))],
                                   expected_scores, rtol=0, atol=1e-12)
    assert out[("b", len(X))].ANOMALY_SCORE is None and out[("b", len(X))].ANOMALY_EXPLANATION is None
    a2 = out[("a", 601)]
    explanation = json.loads(a2.ANOMALY_EXPLANATION)
    assert set(explanation) == {"x", "y"}
    for entry in explanation.values():
        assert set(entry) == {"DIRECTION", "STRENGTH", "ATTRIBUTION_SCORE"}
        assert entry["DIRECTION"] in ("HIGH", "LOW") and 0.0 <= entry["STRENGTH"] <= 1.0
    assert explanation["y"]["DIRECTION"] == "HIGH"
    assert sum(e["ATTRIBUTION_SCORE"] for e in explanation.values()) == pytest.approx(
        a2.ANOMALY_SCORE, rel=0, abs=1e-9)
    assert json.loads(out[("a", 3)].ANOMALY_EXPLANATION) == {}  # warm-up
    # a Transformer: its Params survive save/load
    stage = RandomCutForestStream(orderCol="ts", shingleSize=4, timeDecay=500.0, withExplanation=True)
    stage.save(str(tmp_path / "kda"))
    loaded = RandomCutForestStream.load(str(tmp_path / "kda"))
    assert loaded.getOrderCol() == "ts" and loaded.getOrDefault("shingleSize") == 4
    assert loaded.getOrDefault("timeDecay") == 500.0 and loaded.uid == stage.uid
