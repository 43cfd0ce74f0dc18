"""Unit tests for the self-organising map (numpy core) and its Spark ML Estimator/Model.

One Spark fit, shared by the Spark tests through a module fixture, on a single-partition frame.
"""
import numpy as np
import pytest

from models.som import SelfOrganizingMap, SelfOrganizingMapModel, SomGrid


def two_clusters_with_outliers(n_per_cluster=1000, n_outliers=20, dim=4, seed=0):
    """Two dense Gaussian clusters plus isolated points on a shell far from both; 1 = isolated."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, (n_per_cluster, dim))
    b = rng.normal(10.0, 1.0, (n_per_cluster, dim))
    direction = rng.normal(size=(n_outliers, dim))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    outliers = 5.0 + direction * rng.uniform(20.0, 30.0, (n_outliers, 1))
    return np.vstack([a, b, outliers]), np.r_[np.zeros(2 * n_per_cluster), np.ones(n_outliers)]


def auc(labels, scores):
    """ROC AUC by the rank-sum formula (ties count one half)."""
    labels = np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    return (((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
            / (len(pos) * len(neg)))


@pytest.fixture(scope="module")
def clusters():
    return two_clusters_with_outliers()


# ---------------------------------------------------------------------------------------------
# numpy core
# ---------------------------------------------------------------------------------------------
def test_isolated_points_rank_above_dense_clusters(clusters):
    """The isolated points are in the training data too (contamination), and still stand out."""
    X, y = clusters
    grid = SomGrid.fit(X, grid_rows=8, grid_cols=8, seed=1)
    assert auc(y, grid.score(X)) >= 0.99
    # held-out rows of the same clusters score like the training rows, new isolated ones high
    X_new, y_new = two_clusters_with_outliers(n_per_cluster=300, n_outliers=10, seed=5)
    assert auc(y_new, grid.score(X_new)) >= 0.99


def test_score_is_the_distance_to_the_nearest_unit_in_standardised_space(clusters):
    X, _ = clusters
    grid = SomGrid.fit(X[:500], grid_rows=3, grid_cols=4, epochs=5, seed=2)
    probe = np.vstack([X[:7], [[50.0, -3.0, 2.0, 0.5]]])
    z = (probe - X[:500].mean(axis=0)) / X[:500].std(axis=0)
    brute = np.array([min(np.linalg.norm(r - u) for u in grid.units) for r in z])
    bmu, dist = grid.bmu_and_score(probe)
    np.testing.assert_allclose(dist, brute, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(bmu, [int(np.argmin(np.linalg.norm(grid.units - r, axis=1))) for r in z])


def test_units_follow_the_data_on_a_one_unit_map():
    # one unit, no neighbours: the batch update puts it on the mean, which is 0 after standardising
    X = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    grid = SomGrid.fit(X, grid_rows=1, grid_cols=1, epochs=3, seed=0)
    np.testing.assert_allclose(grid.units, [[0.0, 0.0]], atol=1e-12)
    assert grid.scale[1] == 1.0  # a constant column gets scale 1
    # distance of (5, 10): (5 - 3) / std([1, 3, 5]) in the first column
    assert grid.score(np.array([[5.0, 10.0]]))[0] == pytest.approx(2.0 / np.std([1.0, 3.0, 5.0]))


def test_non_finite_rows_score_nan_and_bad_widths_are_named(clusters):
    X, _ = clusters
    grid = SomGrid.fit(X[:200], grid_rows=2, grid_cols=2, epochs=2, seed=0)
    s = grid.score(np.array([[np.nan, 0, 0, 0], [0, 0, 0, 0.0]]))
    assert np.isnan(s[0]) and np.isfinite(s[1])
    with pytest.raises(ValueError, match="4 features"):
        grid.score(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no \\(finite\\) rows"):
        SomGrid.fit(np.full((3, 2), np.nan))


def test_same_seed_same_map_and_bytes_round_trip(clusters):
    X, _ = clusters
    a = SomGrid.fit(X, grid_rows=5, grid_cols=5, epochs=10, seed=3)
    b = SomGrid.fit(X, grid_rows=5, grid_cols=5, epochs=10, seed=3)
    c = SomGrid.fit(X, grid_rows=5, grid_cols=5, epochs=10, seed=4)
    np.testing.assert_array_equal(a.units, b.units)
    assert not np.array_equal(a.units, c.units)
    again = SomGrid.from_bytes(a.to_bytes())
    np.testing.assert_array_equal(again.score(X), a.score(X))


# ---------------------------------------------------------------------------------------------
# Spark ML Estimator / Model
# ---------------------------------------------------------------------------------------------
def to_vector_df(spark, X):
    from pyspark.ml.linalg import Vectors

    return spark.createDataFrame([(i, Vectors.dense(x.tolist())) for i, x in enumerate(X)],
                                 ["id", "features"]).coalesce(1)


@pytest.fixture(scope="module")
def fitted(spark, clusters):
    X, _ = clusters
    source_df = to_vector_df(spark, X).cache()
    som = SelfOrganizingMap(gridRows=6, gridCols=6, numEpochs=15, seed=7)
    model = som.fit(source_df)
    model.estimator_uid = som.uid
    return source_df, model


def test_defaults():
    som = SelfOrganizingMap()
    assert (som.getGridRows(), som.getGridCols(), som.getNumEpochs()) == (10, 10, 30)
    assert som.getThresholdQuantile() == 0.95 and som.getFinalSigma() == 1.0 and som.getSigma() == 0.0
    assert som.getMaxSamples() == 50_000 and som.getSeed() == 19820101
    assert (som.getFeaturesCol(), som.getScoreCol(), som.getPredictionCol()) == (
        "features", "som_score", "som_anomaly")
    with pytest.raises(ValueError, match="gridRows"):
        SelfOrganizingMap(gridRows=0)
    with pytest.raises(ValueError, match="thresholdQuantile"):
        SelfOrganizingMap(thresholdQuantile=1.0)


def test_estimator_copy_keeps_uid_and_changes_only_the_given_param():
    som = SelfOrganizingMap(gridRows=4)
    copied = som.copy({som.gridCols: 9})
    assert copied.uid == som.uid
    assert copied.getGridCols() == 9 and som.getGridCols() == 10 and copied.getGridRows() == 4


def test_model_keeps_estimator_uid_params_and_flags_the_isolated_points(fitted, clusters):
    source_df, model = fitted
    X, y = clusters
    assert model.uid == model.estimator_uid
    assert (model.getGridRows(), model.getNumEpochs(), model.getSeed()) == (6, 15, 7)
    rows = model.transform(source_df).orderBy("id").collect()
    scores = np.array([r.som_score for r in rows])
    np.testing.assert_allclose(scores, model.grid.score(X), rtol=1e-12)
    # threshold: the 95% quantile of the training distances (the whole input is the sample here)
    assert model.threshold == pytest.approx(float(np.quantile(model.grid.score(X), 0.95)), rel=1e-12)
    flagged = np.array([r.som_anomaly for r in rows])
    assert flagged[y == 1].all() and 0.04 <= flagged.mean() <= 0.06
    assert auc(y, scores) >= 0.99


def test_same_seed_gives_identical_models(fitted, clusters):
    source_df, model = fitted
    again = SelfOrganizingMap(gridRows=6, gridCols=6, numEpochs=15, seed=7).fit(source_df)
    np.testing.assert_array_equal(again.grid.units, model.grid.units)
    assert again.threshold == model.threshold


def test_model_and_estimator_save_load_round_trip(spark, fitted, clusters, tmp_path):
    source_df, model = fitted
    X, _ = clusters
    model.write().overwrite().save(str(tmp_path / "som_model"))
    loaded = SelfOrganizingMapModel.load(str(tmp_path / "som_model"))
    assert loaded.uid == model.uid and loaded.threshold == model.threshold
    assert loaded.getGridRows() == 6 and loaded.getScoreCol() == "som_score"
    np.testing.assert_array_equal(loaded.grid.units, model.grid.units)
    np.testing.assert_array_equal(loaded.score(X), model.score(X))
    som = SelfOrganizingMap(gridCols=3, maxSamples=99, thresholdQuantile=0.9)
    som.save(str(tmp_path / "som_estimator"))
    again = SelfOrganizingMap.load(str(tmp_path / "som_estimator"))
    assert again.uid == som.uid and again.getGridCols() == 3 and again.getMaxSamples() == 99
    assert again.getThresholdQuantile() == 0.9


def test_model_copy_shares_the_map(fitted):
    _, model = fitted
    copied = model.copy({model.scoreCol: "other"})
    assert copied.grid is model.grid and copied.threshold == model.threshold
    assert copied.getScoreCol() == "other" and model.getScoreCol() == "som_score"


def test_null_rows_score_null_and_sampling_caps_the_training_rows(spark, clusters):
    from pyspark.sql.types import ArrayType, DoubleType, LongType, StructField, StructType

    X, _ = clusters
    rows = [(i, [float(v) for v in x]) for i, x in enumerate(X[::5])] + [(10_000, None)]
    schema = StructType([StructField("id", LongType()), StructField("x", ArrayType(DoubleType()))])
    source_df = spark.createDataFrame(rows, schema).coalesce(1)
    model = SelfOrganizingMap(featuresCol="x", gridRows=3, gridCols=3, numEpochs=5, maxSamples=100,
                              seed=1).fit(source_df)
    out = {r.id: r for r in model.transform(source_df).collect()}
    assert out[10_000].som_score is None and out[10_000].som_anomaly is None
    assert out[0].som_score >= 0.0
    # the map was fitted on a sample of about 100 of the 404 rows: standardised with their mean
    assert not np.allclose(model.grid.center, X[::5].mean(axis=0), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="nope"):
        SelfOrganizingMap(featuresCol="nope").fit(source_df)
