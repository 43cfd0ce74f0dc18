"""Unit tests for the Random Cut Forest core (numpy) and its Spark ML Estimator/Model.

Kept cheap on purpose: fitted forests and the fitted Spark model are shared through
module-scoped fixtures, and the (small) Spark inputs are single-partition DataFrames, so every
Spark job runs one task in one reused Python worker.
"""
import math

import numpy as np
import pytest

from models.rcf import Forest, RandomCutForest, RandomCutForestModel, top_reasons

LOG2_3 = math.log2(3.0)
# The kernels compute on float32 coordinates with float32 arithmetic per tree (see the module
# docstring of models.rcf). Per tree a score goes through about 3 float32 operations per
# ancestor on a path of up to ~30 nodes, each with relative error <= 2**-24 (6e-8), and the
# per-tree errors partly cancel in the mean: relative 1e-6 bounds the arithmetic difference
# from float64 (measured: at most 6e-8 over 100,000 rows x 100 trees of the benchmark data).
F32_RTOL = 1e-6


# ---------------------------------------------------------------------------------------------
# data helpers
# ---------------------------------------------------------------------------------------------
def two_clusters_with_outliers(n_per_cluster=1000, n_outliers=20, dim=4, seed=0):
    """Two dense Gaussian clusters plus isolated points far from both; labels 1 = outlier."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, (n_per_cluster, dim))
    b = rng.normal(10.0, 1.0, (n_per_cluster, dim))
    # isolated points: on a shell of radius 20..30 around the midpoint, away from both clusters
    direction = rng.normal(size=(n_outliers, dim))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    outliers = 5.0 + direction * rng.uniform(20.0, 30.0, (n_outliers, 1))
    X = np.vstack([a, b, outliers])
    y = np.r_[np.zeros(2 * n_per_cluster), np.ones(n_outliers)]
    return X, y


def auc(labels, scores):
    """ROC AUC by the rank-sum formula (ties count one half)."""
    labels = np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def to_vector_df(spark, X, extra=None):
    from pyspark.ml.linalg import Vectors

    rows = [(i, Vectors.dense(x.tolist())) for i, x in enumerate(X)]
    return spark.createDataFrame(rows, ["id", "features"]).coalesce(1)


@pytest.fixture(scope="module")
def clusters():
    return two_clusters_with_outliers()


@pytest.fixture(scope="module")
def forest_100x256(clusters):
    X, _ = clusters
    return Forest.fit(X, num_trees=100, samples=256, seed=1)


@pytest.fixture(scope="module")
def fitted(spark, clusters):
    X, _ = clusters
    source_df = to_vector_df(spark, X).cache()
    rcf = RandomCutForest(numTrees=50, numSamplesPerTree=128, seed=7, attributionCol="rcf_attr")
    model = rcf.fit(source_df)
    model.estimator_uid = rcf.uid
    return source_df, model


# ---------------------------------------------------------------------------------------------
# score definition (randomcutforest-by-aws AnomalyScoreVisitor)
# ---------------------------------------------------------------------------------------------
def test_two_point_tree_scores_match_hand_computation():
    forest = Forest.from_samples([np.array([[0.0, 0.0], [1.0, 0.0]])], seed=0)
    assert forest.num_nodes == 3 and forest.max_depth == 1
    scores = forest.score([[2.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    # unseen (2,0): leaf at depth 1 gives 1/2; root box [0,1]x[0,0] grown to [0,2]: p = 1/2
    #   s = 1/2 * 1/(0+1) + 1/2 * 1/2 = 0.75, times log2(mass 2 + 1)
    # seen (1,0): damp(1, 2) * 1/(1 + log2 2) = 0.75 * 0.5 = 0.375
    # inside the root box (0.5,0): 1/(1+1) = 0.5, the root does not separate it
    np.testing.assert_allclose(scores, np.array([0.75, 0.375, 0.5]) * LOG2_3, rtol=1e-12)


def test_duplicate_leaf_uses_damp_and_mass():
    forest = Forest.from_samples([np.array([[0.0], [0.0], [1.0]])], seed=0)
    # leaf {0, 0} has mass 2 at depth 1, tree mass 3:
    #   damp = 1 - 2/(2*3), scoreSeen = 1/(1 + log2(3)), normaliser log2(3 + 1) = 2
    expected = (1 - 2 / 6) / (1 + LOG2_3) * 2.0
    np.testing.assert_allclose(forest.score([[0.0]]), [expected], rtol=F32_RTOL)


def reference_scores(forest, X):
    """Row by row, tree by tree walk of the randomcutforest-by-aws score in float64 arithmetic.

    Coordinates (rows and boxes) are rounded to float32 first, as the library stores them;
    everything else is float64. Returns the scores and, per row, how many trees found the row
    equal to its leaf point (the "seen" case).
    """
    X32 = np.asarray(X, np.float64).astype(np.float32).astype(np.float64)
    lo32 = forest.box_min.astype(np.float32).astype(np.float64)
    hi32 = forest.box_max.astype(np.float32).astype(np.float64)
    scores = np.zeros(len(X32))
    seen_trees = np.zeros(len(X32), int)
    for r, x in enumerate(X32):
        total = 0.0
        for t, root in enumerate(forest.roots):
            big_m = forest.tree_mass[t]
            path = [int(root)]
            while forest.cut_dim[path[-1]] >= 0:
                v = path[-1]
                go_left = x[forest.cut_dim[v]] <= forest.cut_val[v]
                path.append(int(forest.left[v] if go_left else forest.right[v]))
            leaf, h = path[-1], len(path) - 1
            if np.array_equal(x, lo32[leaf]):
                m = forest.mass[leaf]
                s = (1.0 - m / (2.0 * big_m)) / (h + math.log2(m + 1.0))
                seen_trees[r] += 1
            else:
                s = 1.0 / (h + 1.0)
                for k in range(h - 1, -1, -1):
                    v = path[k]
                    gap = (np.maximum(x - hi32[v], 0.0) + np.maximum(lo32[v] - x, 0.0)).sum()
                    if gap == 0.0:
                        break
                    p = gap / ((hi32[v] - lo32[v]).sum() + gap)
                    s = p / (k + 1.0) + (1.0 - p) * s
            total += s * math.log2(big_m + 1.0)
        scores[r] = total / len(forest.roots)
    return scores, seen_trees


def test_scores_match_a_row_wise_float64_reference_walk(clusters):
    X, _ = clusters
    forest = Forest.fit(X, num_trees=20, samples=64, seed=4)
    rng = np.random.default_rng(1)
    # inliers, outliers, points just outside cluster edges and duplicates of training points
    rows = np.vstack([X[::25], X[-20:], X[::97] + rng.normal(0.0, 0.3, X[::97].shape),
                      forest.box_min[forest.cut_dim < 0][:30]])
    expected, seen = reference_scores(forest, rows)
    assert seen[-30:].min() >= 1  # the leaf points are seen by their own tree at least
    np.testing.assert_allclose(forest.score(rows), expected, rtol=F32_RTOL)
    scores, attr = forest.score_and_attribution(rows)
    np.testing.assert_allclose(scores, expected, rtol=F32_RTOL)
    np.testing.assert_allclose(attr.sum(axis=1), expected, rtol=F32_RTOL)


def test_training_points_get_the_seen_score_at_large_offsets():
    """Points 1e6 apart by less than float32 spacing (0.0625 there): after rounding to
    float32 they are one point, and each still reaches its leaf and gets the seen score."""
    rng = np.random.default_rng(8)
    pts = 1.0e6 + rng.normal(0.0, 0.5, (64, 3))
    pts[1] = pts[0] + 1e-3  # rounds onto pts[0] in float32
    forest = Forest.from_samples([pts] * 5, seed=2)
    expected, seen = reference_scores(forest, pts)
    assert (seen == forest.num_trees).all()
    scores = forest.score(pts)
    np.testing.assert_allclose(scores, expected, rtol=F32_RTOL)
    assert scores[0] == scores[1]  # one merged leaf of mass 2
    # a point off the data by a few float32 steps is unseen, and scored as the walk does
    off = pts[:1] + [0.25, 0.0, 0.0]
    expected_off, seen_off = reference_scores(forest, off)
    assert seen_off[0] == 0
    np.testing.assert_allclose(forest.score(off), expected_off, rtol=F32_RTOL)


def test_forest_built_on_float64_points_scores_like_the_reference(clusters, monkeypatch):
    """Forests saved before trees were built on float32-rounded points: their float64 boxes
    and cuts are rounded when loaded, and the scores still follow the reference walk."""
    import models.rcf as rcf_module

    X, _ = clusters
    X = X * 1.0e3 + 1.0e5  # values whose float64 digits float32 does not keep
    monkeypatch.setattr(rcf_module, "_round_f32", lambda a: a)
    old = Forest.fit(X, num_trees=20, samples=64, seed=5)
    monkeypatch.undo()
    assert not np.array_equal(old.box_min, old.box_min.astype(np.float32))
    loaded = Forest.from_bytes(old.to_bytes())
    rows = np.vstack([X[::40], X[-20:], loaded.box_min[loaded.cut_dim < 0][:30]])
    expected, seen = reference_scores(loaded, rows)
    assert seen[-30:].min() >= 1
    np.testing.assert_allclose(loaded.score(rows), expected, rtol=F32_RTOL)


def test_attribution_splits_the_score_by_dimension():
    forest = Forest.from_samples([np.array([[0.0, 0.0], [1.0, 0.0]])], seed=0)
    score, attr = forest.score_and_attribution([[2.0, 1.0]])
    # leaf (1,0): gaps 1 and 1 -> 1/2 each of 1/2; root: gaps 1, 1, new ranges 2 + 1 -> p = 2/3
    #   per dim: (1/3) * 1 + (1 - 2/3) * 1/4 = 5/12
    np.testing.assert_allclose(attr[0], [5 / 12 * LOG2_3, 5 / 12 * LOG2_3], rtol=F32_RTOL)
    np.testing.assert_allclose(attr.sum(axis=1), score, rtol=F32_RTOL)


def test_attribution_rows_sum_to_score_on_a_real_forest(clusters):
    X, _ = clusters
    forest = Forest.fit(X, num_trees=50, samples=64, seed=3)
    score, attr = forest.score_and_attribution(X[::10])
    np.testing.assert_allclose(attr.sum(axis=1), score, rtol=F32_RTOL)
    np.testing.assert_array_equal(forest.score(X[::10]), score)


def test_scores_are_on_the_aws_scale(clusters, forest_100x256):
    X, y = clusters
    scores = forest_100x256.score(X)
    inlier_median = np.median(scores[y == 0])
    assert 0.5 < inlier_median < 1.5
    assert np.min(scores[y == 1]) > 2.0 * inlier_median


def test_isolated_points_rank_above_dense_clusters(clusters, forest_100x256):
    X, y = clusters
    scores = forest_100x256.score(X)
    assert auc(y, scores) >= 0.99


def test_attribution_only_for_rows_above_min_score(clusters, forest_100x256):
    X, _ = clusters
    X = np.vstack([X, [[np.nan, 0.0, 0.0, 0.0]]])
    full_scores, full_attr = forest_100x256.score_and_attribution(X)
    min_score = float(np.nanquantile(full_scores, 0.9))
    scores, attr = forest_100x256.score_and_attribution(X, min_score=min_score)
    np.testing.assert_array_equal(scores, forest_100x256.score(X))
    np.testing.assert_array_equal(scores, full_scores)
    flagged = scores > min_score
    assert 0 < flagged.sum() < len(X) - 1
    np.testing.assert_array_equal(attr[flagged], full_attr[flagged])
    assert np.isnan(attr[~flagged]).all()
    assert np.isnan(scores[-1]) and np.isnan(attr[-1]).all()


def test_attribution_names_the_perturbed_dimension():
    rng = np.random.default_rng(5)
    X = rng.normal(0.0, 1.0, (3000, 4))
    forest = Forest.fit(X, num_trees=60, samples=256, seed=2)
    names = ["cpu", "mem", "bytes_in", "latency"]
    for dim in range(4):
        point = np.zeros(4)
        point[dim] = 9.0
        attr = forest.attribution(point[None, :])[0]
        assert top_reasons(attr, names, k=1) == [names[dim]]


def test_nonfinite_rows_score_nan_and_others_are_unaffected():
    forest = Forest.fit(np.random.default_rng(0).normal(size=(500, 2)), 50, 64, seed=0)
    X = np.array([[0.0, 0.0], [np.nan, 1.0], [3.0, 3.0]])
    scores = forest.score(X)
    assert np.isnan(scores[1]) and np.isfinite(scores[[0, 2]]).all()
    np.testing.assert_array_equal(scores[[0, 2]], forest.score(X[[0, 2]]))
    with pytest.raises(ValueError, match="2 features"):
        forest.score(np.zeros((3, 3)))


def test_forest_bytes_round_trip_and_seed_determinism(clusters):
    X, _ = clusters
    first = Forest.fit(X, 50, 128, seed=11)
    again = Forest.fit(X, 50, 128, seed=11)
    other = Forest.fit(X, 50, 128, seed=12)
    np.testing.assert_array_equal(first.score(X), again.score(X))
    assert not np.array_equal(first.score(X), other.score(X))
    restored = Forest.from_bytes(first.to_bytes())
    np.testing.assert_array_equal(restored.score(X), first.score(X))


def test_top_reasons_orders_by_attribution():
    assert top_reasons([0.1, 3.0, 0.5], ["a", "b", "c"], k=2) == ["b", "c"]
    assert top_reasons(None, ["a"], k=2) == []
    with pytest.raises(ValueError):
        top_reasons([1.0, 2.0], ["a"], k=1)


# ---------------------------------------------------------------------------------------------
# Spark ML Params
# ---------------------------------------------------------------------------------------------
def test_estimator_defaults():
    rcf = RandomCutForest()
    assert rcf.getFeaturesCol() == "features"
    assert rcf.getScoreCol() == "rcf_score"
    assert rcf.getPredictionCol() == "rcf_anomaly"
    assert rcf.getAttributionCol() == ""
    assert rcf.getNumTrees() == 100
    assert rcf.getNumSamplesPerTree() == 256
    assert rcf.getThresholdMethod() == "sigma"
    assert rcf.getThresholdSigmas() == 3.0
    assert rcf.getThresholdQuantile() == 0.99
    assert RandomCutForest().getSeed() == rcf.getSeed()  # fixed default, not per-process hash


@pytest.mark.parametrize("kwargs, name", [
    ({"numTrees": 49}, "numTrees"),
    ({"numTrees": 1001}, "numTrees"),
    ({"numSamplesPerTree": 0}, "numSamplesPerTree"),
    ({"numSamplesPerTree": 2049}, "numSamplesPerTree"),
    ({"thresholdMethod": "iqr"}, "thresholdMethod"),
    ({"thresholdQuantile": 1.0}, "thresholdQuantile"),
    ({"thresholdSigmas": -1.0}, "thresholdSigmas"),
])
def test_out_of_range_params_raise_naming_the_param(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RandomCutForest(**kwargs)
    with pytest.raises(ValueError, match=name):
        RandomCutForest().setParams(**kwargs)


def test_setters_return_self_and_set_values():
    rcf = RandomCutForest()
    assert rcf.setNumTrees(500) is rcf and rcf.getNumTrees() == 500
    assert rcf.setThresholdMethod("quantile").getThresholdMethod() == "quantile"


def test_copy_keeps_the_original_unchanged():
    rcf = RandomCutForest(numTrees=200)
    copied = rcf.copy({rcf.numTrees: 300})
    assert copied.uid == rcf.uid
    assert copied.getNumTrees() == 300 and rcf.getNumTrees() == 200


def test_attribution_scope_param_default_setter_copy_and_validation():
    rcf = RandomCutForest()
    assert rcf.getAttributionScope() == "all"
    assert RandomCutForest(attributionScope="flagged").getAttributionScope() == "flagged"
    assert rcf.setAttributionScope("flagged") is rcf and rcf.getAttributionScope() == "flagged"
    copied = rcf.copy({rcf.attributionScope: "all"})
    assert copied.getAttributionScope() == "all" and rcf.getAttributionScope() == "flagged"
    with pytest.raises(ValueError, match="attributionScope"):
        RandomCutForest(attributionScope="top")
    with pytest.raises(ValueError, match="attributionScope"):
        RandomCutForest().setAttributionScope("none")


# ---------------------------------------------------------------------------------------------
# Spark fit / transform / persistence
# ---------------------------------------------------------------------------------------------
def test_fitted_model_keeps_estimator_uid_and_params(fitted, clusters):
    X, _ = clusters
    _, model = fitted
    assert model.uid == model.estimator_uid
    assert model.getAttributionCol() == "rcf_attr" and model.getNumTrees() == 50
    assert model.forest.num_trees == 50 and model.numFeatures == X.shape[1]
    # 2020 rows < 50 * 128: every tree draws its own 128 rows
    assert set(model.forest.tree_mass) == {128}


def test_transform_matches_numpy_and_model_save_load_round_trip(fitted, clusters, tmp_path):
    """One Spark job scores with the fitted model and with its saved-and-loaded copy."""
    X, y = clusters
    source_df, model = fitted
    path = str(tmp_path / "rcf_model")
    model.write().overwrite().save(path)
    loaded = RandomCutForestModel.load(path)
    assert loaded.uid == model.uid
    assert loaded.threshold == model.threshold
    assert loaded.getAttributionCol() == "rcf_attr" and loaded.getNumTrees() == 50
    actual_df = model.transform(source_df)
    assert {"rcf_score", "rcf_anomaly", "rcf_attr"} <= set(actual_df.columns)
    loaded_only_score = loaded.copy({loaded.scoreCol: "loaded_score", loaded.predictionCol: "",
                                     loaded.attributionCol: ""})
    both_df = loaded_only_score.transform(actual_df)
    rows = sorted(both_df.select("id", "rcf_score", "rcf_anomaly", "rcf_attr",
                                 "loaded_score").collect())
    scores = np.array([r.rcf_score for r in rows])
    np.testing.assert_allclose(scores, model.forest.score(X), rtol=1e-12)
    assert auc(y, scores) >= 0.99
    flagged = np.array([r.rcf_anomaly for r in rows])
    assert flagged[y == 1].all()
    assert flagged[y == 0].mean() < 0.05
    attr = np.array([r.rcf_attr for r in rows])
    np.testing.assert_allclose(attr.sum(axis=1), scores, rtol=F32_RTOL)
    # the loaded model's transform gives exactly the fitted forest's numpy scores
    np.testing.assert_array_equal([r.loaded_score for r in rows], model.forest.score(X))


def test_flagged_attribution_scope_transform_and_model_save_load(fitted, tmp_path):
    """Attribution only for rows above the threshold; same scores; the scope survives save/load."""
    source_df, model = fitted
    flagged_model = model.copy({model.attributionScope: "flagged", model.scoreCol: "flagged_score",
                                model.attributionCol: "flagged_attr", model.predictionCol: ""})
    path = str(tmp_path / "rcf_flagged")
    flagged_model.write().overwrite().save(path)
    loaded = RandomCutForestModel.load(path)
    assert loaded.getAttributionScope() == "flagged" and model.getAttributionScope() == "all"
    actual_df = loaded.transform(model.transform(source_df))
    rows = sorted(actual_df.select("id", "rcf_score", "rcf_attr", "flagged_score",
                                   "flagged_attr").collect())
    scores = np.array([r.rcf_score for r in rows])
    np.testing.assert_array_equal([r.flagged_score for r in rows], scores)
    flagged = scores > model.threshold
    assert 0 < flagged.sum() < len(rows)
    for row, is_flagged in zip(rows, flagged, strict=True):
        if is_flagged:
            assert row.flagged_attr == row.rcf_attr
        else:
            assert row.flagged_attr is None


def test_flagged_attribution_scope_needs_a_threshold(fitted):
    source_df, model = fitted
    no_threshold = RandomCutForestModel(forest=model.forest)
    no_threshold.setAttributionCol("why").setAttributionScope("flagged")
    with pytest.raises(ValueError, match="threshold"):
        no_threshold.transform(source_df)


def test_estimator_save_load_keeps_attribution_scope(tmp_path):
    rcf = RandomCutForest(attributionCol="why", attributionScope="flagged")
    path = str(tmp_path / "rcf_estimator_scope")
    rcf.save(path)
    assert RandomCutForest.load(path).getAttributionScope() == "flagged"


def test_threshold_is_mean_plus_three_sigma_of_training_scores(fitted):
    _, model = fitted
    # the training pool is the whole input here (2020 rows < 50 * 128), so it is known
    X_all = two_clusters_with_outliers()[0]
    s = model.forest.score(X_all)
    assert model.threshold == pytest.approx(s.mean() + 3 * s.std(), rel=1e-9)


def test_same_seed_gives_identical_models(spark, clusters, fitted):
    source_df, model = fitted
    again = RandomCutForest(numTrees=50, numSamplesPerTree=128, seed=7,
                            attributionCol="rcf_attr").fit(source_df)
    X, _ = clusters
    np.testing.assert_array_equal(again.forest.score(X), model.forest.score(X))
    assert again.threshold == model.threshold


def test_array_features_null_rows_and_quantile_threshold(spark, clusters):
    """One fit covers an array<double> features column, a null row and the quantile threshold."""
    from pyspark.sql.types import ArrayType, DoubleType, LongType, StructField, StructType

    X, _ = clusters
    X = X[::4]  # 505 rows
    rows = [(i, [float(v) for v in x]) for i, x in enumerate(X)]
    rows.append((len(X), None))
    schema = StructType([StructField("id", LongType()),
                         StructField("x", ArrayType(DoubleType()))])
    source_df = spark.createDataFrame(rows, schema).coalesce(1)
    model = RandomCutForest(featuresCol="x", numTrees=50, numSamplesPerTree=16,
                            thresholdMethod="quantile", thresholdQuantile=0.9,
                            seed=3).fit(source_df)
    # all 505 non-null rows are the training pool (fewer than 50 * 16)
    above = (model.forest.score(X) > model.threshold).mean()
    assert 0.08 <= above <= 0.12
    out = {r.id: r for r in model.transform(source_df).collect()}
    assert out[len(X)].rcf_score is None and out[len(X)].rcf_anomaly is None
    assert out[0].rcf_score > 0
    np.testing.assert_allclose([out[i].rcf_score for i in range(len(X))],
                               model.forest.score(X), rtol=1e-12)


def test_wrong_features_type_is_a_named_error(spark):
    source_df = spark.createDataFrame([(1, "a")], ["id", "features"])
    with pytest.raises(TypeError, match="features"):
        RandomCutForest().fit(source_df)
    with pytest.raises(ValueError, match="nope"):
        RandomCutForest(featuresCol="nope").fit(source_df)


def test_estimator_save_load_round_trip(tmp_path):
    rcf = RandomCutForest(numTrees=70, thresholdMethod="quantile", attributionCol="why")
    path = str(tmp_path / "rcf_estimator")
    rcf.save(path)
    loaded = RandomCutForest.load(path)
    assert loaded.uid == rcf.uid
    assert loaded.getNumTrees() == 70 and loaded.getAttributionCol() == "why"
    assert loaded.getThresholdMethod() == "quantile"


def test_model_copy_shares_forest_and_threshold(fitted):
    _, model = fitted
    copied = model.copy({model.scoreCol: "other"})
    assert copied.forest is model.forest and copied.threshold == model.threshold
    assert copied.getScoreCol() == "other" and model.getScoreCol() == "rcf_score"


# ---------------------------------------------------------------------------------------------
# robust feature scaling
# ---------------------------------------------------------------------------------------------
def test_robust_scaling_is_median_and_iqr_with_fallbacks():
    from models.rcf import robust_scaling

    X = np.column_stack([np.arange(101.0), np.r_[np.zeros(99), 5.0, -5.0], np.full(101, 3.0)])
    center, scale = robust_scaling(X)
    np.testing.assert_allclose(center, [50.0, 0.0, 3.0])
    assert scale[0] == 50.0                       # IQR of 0..100
    assert scale[1] == pytest.approx(X[:, 1].std())  # IQR 0: the standard deviation
    assert scale[2] == 1.0                        # constant column


def test_a_scaled_forest_is_the_forest_of_the_scaled_data(clusters):
    """Scaling is applied before the trees are built and to every scored row, nothing else."""
    from models.rcf import robust_scaling

    X, _ = clusters
    stretch = np.ones(X.shape[1])
    stretch[0] = 1e6
    wide = X * stretch + 5e7 * (stretch > 1)     # one column a million times wider, far from 0
    scaled = Forest.fit(wide, num_trees=50, samples=128, seed=4, scaling="robust")
    center, scale = robust_scaling(wide)
    plain = Forest.fit((wide - center) / scale, num_trees=50, samples=128, seed=4)
    far = np.median(wide, axis=0)
    far[1] = wide[:, 1].max() + 10 * scale[1]    # out in a narrow column only
    missing = far.copy()
    missing[0] = np.nan
    probe = np.vstack([wide[:300], far, missing])
    np.testing.assert_array_equal(scaled.score(probe), plain.score((probe - center) / scale))
    s, a = scaled.score_and_attribution(probe)
    np.testing.assert_array_equal(s, scaled.score(probe))
    assert np.isnan(s[-1]) and np.argmax(a[-2]) == 1     # the outlier is out in the narrow column
    # unscaled, the wide column takes the cuts and the narrow outlier barely stands out
    raw = Forest.fit(wide, num_trees=50, samples=128, seed=4)
    assert scaled.score(probe[-2:-1])[0] > 2 * raw.score(probe[-2:-1])[0]
    again = Forest.from_bytes(scaled.to_bytes())
    np.testing.assert_array_equal(again.score(probe), scaled.score(probe))
    with pytest.raises(ValueError, match="scaling"):
        Forest.fit(wide, scaling="zscore")


def test_feature_scaling_param_reaches_the_model_and_survives_save_load(spark, clusters, tmp_path):
    from models.rcf import RandomCutForestModel

    X, _ = clusters
    assert RandomCutForest().getFeatureScaling() == "none"
    with pytest.raises(ValueError, match="featureScaling"):
        RandomCutForest(featureScaling="minmax")
    stretch = np.ones(X.shape[1])
    stretch[0] = 1e5
    source_df = to_vector_df(spark, X[::4] * stretch)
    model = RandomCutForest(numTrees=50, numSamplesPerTree=64, seed=2, featureScaling="robust").fit(source_df)
    assert model.getFeatureScaling() == "robust" and model.forest.center is not None
    model.write().overwrite().save(str(tmp_path / "scaled"))
    loaded = RandomCutForestModel.load(str(tmp_path / "scaled"))
    np.testing.assert_array_equal(loaded.forest.scale, model.forest.scale)
    out = [r.rcf_score for r in loaded.transform(source_df).orderBy("id").collect()]
    np.testing.assert_allclose(out, model.forest.score(X[::4] * stretch), rtol=1e-12)
