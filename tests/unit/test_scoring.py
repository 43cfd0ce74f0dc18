"""score_events: the score columns, reasons only for flagged rows, RCF attribution only where it flags."""
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models.logistic import LogisticDetector, fit_pipeline
from models.rcf import RandomCutForest
from oracles import transform_with_pipeline
from scoring.champions import Champions
from scoring.plan import SCORE_COLUMNS, ScoringError
from scoring.spark import assemble, score_events

FEATURES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def events_df(spark):
    """Gaussian rows, some far out (for the RCF), a label the logistic model learns, a few nulls."""
    rng = np.random.default_rng(11)
    n = 1200
    X = rng.normal(size=(n, len(FEATURES)))
    out = np.arange(n) % 40 == 0
    X[out] += rng.choice([-1, 1], size=(out.sum(), len(FEATURES))) * rng.uniform(4, 8, size=(out.sum(), len(FEATURES)))
    label = X[:, 0] + 0.5 * X[:, 2] > 1.8  # mostly inside the cloud: flags the RCF does not share
    pdf = pd.DataFrame(X, columns=FEATURES)
    pdf["event_id"] = [f"e{i}" for i in range(n)]
    pdf["label"] = label.astype(np.int32)
    pdf.loc[pdf.index % 97 == 5, "b"] = np.nan
    return spark.createDataFrame(pdf).coalesce(1).cache()


@pytest.fixture(scope="module")
def champions(events_df):
    rcf = RandomCutForest(featuresCol="_f", numTrees=50, numSamplesPerTree=128, seed=3).fit(
        assemble(events_df, FEATURES, "_f"))
    pipeline = fit_pipeline(events_df, FEATURES, "label", reg_param=0.01)
    logistic = LogisticDetector(pipeline=pipeline, feature_cols=FEATURES, threshold=0.5)
    return Champions(feature_cols=FEATURES, rcf=rcf, rcf_version="r1", logistic=logistic, logistic_version="l1")


@pytest.fixture(scope="module")
def scored(events_df, champions):
    return {r.event_id: r for r in score_events(events_df, champions).collect()}


def test_adds_the_score_columns_and_keeps_the_rest(events_df, champions):
    out = score_events(events_df, champions)
    assert out.columns[:len(events_df.columns)] == events_df.columns
    assert set(out.columns) - set(events_df.columns) == set(SCORE_COLUMNS)
    assert dict(out.dtypes)["reasons"] == "array<string>"


def test_reasons_only_for_flagged_rows(scored, champions):
    flagged = [r for r in scored.values() if r.is_anomaly]
    assert 5 < len(flagged) < len(scored) / 4
    assert all(r.reasons == [] for r in scored.values() if not r.is_anomaly)
    assert all(1 <= len(r.reasons) <= 3 for r in flagged)
    for r in flagged:
        # with the default "max" risk and cut 0.5, a flag means some detector is over its threshold
        assert (r.rcf_score is not None and r.rcf_score >= champions.rcf.threshold) or \
            r.logistic_score >= champions.logistic.threshold
        # the RCF explains only the rows it flags itself (attribution is computed only there)
        if any(x.startswith("rcf:") for x in r.reasons):
            assert r.rcf_score > champions.rcf.threshold


def test_flagged_scope_changes_nothing_but_the_reasons_of_logistic_only_flags(events_df, champions, scored):
    full = {r.event_id: r for r in score_events(events_df, champions, rcf_attribution="all").collect()}
    for key, row in full.items():
        mine = scored[key]
        for col in ("rcf_score", "logistic_score", "risk", "is_anomaly", "rcf_version", "logistic_version"):
            assert getattr(mine, col) == getattr(row, col), (key, col)
        if row.rcf_score is not None and row.rcf_score > champions.rcf.threshold:
            assert mine.reasons == row.reasons, key
        else:
            assert all(x.startswith("logistic:") for x in mine.reasons), key
    assert any(r.reasons and r.reasons[0].startswith("rcf:") for r in scored.values())
    logistic_only = [r for r in scored.values()
                     if r.is_anomaly and not (r.rcf_score is not None and r.rcf_score > champions.rcf.threshold)]
    assert logistic_only and any(full[r.event_id].reasons != r.reasons for r in logistic_only)


def test_each_detector_explains_only_the_rows_it_flags_itself(scored, champions):
    rcf_only = logistic_only = both = 0
    for r in scored.values():
        if not r.is_anomaly:
            continue
        rcf_own = r.rcf_score is not None and r.rcf_score >= champions.rcf.threshold
        logistic_own = r.logistic_score >= champions.logistic.threshold
        assert rcf_own or logistic_own
        kinds = {x.split(":")[0] for x in r.reasons}
        assert kinds <= {"rcf"} | ({"logistic"} if logistic_own else set()), r
        assert kinds <= {"logistic"} | ({"rcf"} if rcf_own else set()), r
        rcf_only += rcf_own and not logistic_own
        logistic_only += logistic_own and not rcf_own
        both += rcf_own and logistic_own
    assert rcf_only and logistic_only, (rcf_only, logistic_only, both)


def test_rows_only_the_two_detectors_together_flag_are_explained_by_the_rcf(events_df, champions):
    from scoring.risk import logistic_risk_array, rcf_risk_array

    rows = score_events(events_df, champions, risk_method="noisy_or").collect()
    together = [r for r in rows if r.is_anomaly and r.rcf_score is not None
                and rcf_risk_array(np.array([r.rcf_score]), champions.rcf.threshold)[0] < 0.5
                and logistic_risk_array(np.array([r.logistic_score]), champions.logistic.threshold)[0] < 0.5]
    assert together, "the fixture should hold rows flagged by agreement only"
    assert all(r.reasons and all(x.startswith("rcf:") for x in r.reasons) for r in together)


def test_keep_selects_the_passed_through_columns(events_df, champions, scored):
    out = score_events(events_df, champions, keep=["label", "event_id"])
    assert out.columns == ["label", "event_id", "rcf_score", "logistic_score", "risk", "reasons", "is_anomaly",
                           "rcf_version", "logistic_version"]
    for r in out.collect():
        ref = scored[r.event_id]
        assert (r.label, r.rcf_score, r.logistic_score, r.risk, r.reasons) == \
            (ref.label, ref.rcf_score, ref.logistic_score, ref.risk, ref.reasons)
    with pytest.raises(ScoringError, match="lacks column.*nope"):
        score_events(events_df, champions, keep=["event_id", "nope"])


def test_scores_match_the_models_own_transforms(events_df, champions, scored):
    rcf = {r.event_id: r.s for r in champions.rcf.copy().setFeaturesCol("_f").setScoreCol("s").setPredictionCol("")
           .transform(assemble(events_df, FEATURES, "_f")).select("event_id", "s").collect()}
    lr = {r.event_id: r.p for r in transform_with_pipeline(champions.logistic, events_df, score_col="p")
          .select("event_id", "p").collect()}
    for key, row in scored.items():
        assert row.rcf_score == rcf[key]  # a null feature scores null either way
        assert row.logistic_score == pytest.approx(lr[key], rel=0, abs=1e-12)
    assert any(row.rcf_score is None for row in scored.values())


def test_no_reasons_requested_and_missing_columns(events_df, champions):
    out = score_events(events_df, champions, reasons=0).collect()
    assert all(r.reasons == [] for r in out)
    with pytest.raises(ScoringError, match="lacks column"):
        score_events(events_df.drop("c"), champions)


def test_an_rcf_on_fewer_features_scores_with_its_own_columns(spark, events_df, champions, tmp_path):
    from models import registry
    from scoring.champions import load_champions, registry_root

    subset = ["c", "a"]
    rcf = RandomCutForest(featuresCol="_f", numTrees=50, numSamplesPerTree=128, seed=5).fit(
        assemble(events_df, subset, "_f"))
    root = registry_root(str(tmp_path), "telemetry")
    registry.register(root, "rcf", rcf, metrics={"average_precision": 0.5}, params={"feature_cols": subset})
    registry.register(root, "logistic", champions.logistic, metrics={"average_precision": 0.5},
                      params={"feature_cols": FEATURES})
    loaded = load_champions(str(tmp_path), "telemetry")
    assert loaded.rcf_feature_cols == subset and loaded.feature_cols == FEATURES
    scored = {r.event_id: r for r in score_events(events_df, loaded).collect()}
    own = {r.event_id: r.s for r in rcf.copy().setFeaturesCol("_f").setScoreCol("s").setPredictionCol("")
           .transform(assemble(events_df, subset, "_f")).select("event_id", "s").collect()}
    assert all(row.rcf_score == own[key] for key, row in scored.items())
    rcf_reasons = {x for row in scored.values() for x in row.reasons if x.startswith("rcf:")}
    assert rcf_reasons and rcf_reasons <= {"rcf:c", "rcf:a"}


@pytest.mark.parametrize("method,attribution", [("max", "flagged"), ("noisy_or", "all")])
def test_the_driver_local_twin_gives_what_spark_gives(events_df, champions, method, attribution):
    from scoring.local import score_pandas

    spark_rows = {r.event_id: r for r in score_events(events_df, champions, risk_method=method,
                                                      rcf_attribution=attribution).collect()}
    local = score_pandas(events_df.toPandas(), champions, risk_method=method, rcf_attribution=attribution)
    assert list(local.columns) == [*events_df.columns, *[c for c in local.columns if c in SCORE_COLUMNS]]
    assert set(local.columns) - set(events_df.columns) == set(SCORE_COLUMNS)
    assert len(local) == len(spark_rows)
    flagged = 0
    for row in local.itertuples(index=False):
        ref = spark_rows[row.event_id]
        if ref.rcf_score is None:
            assert np.isnan(row.rcf_score)
        else:
            assert row.rcf_score == ref.rcf_score          # the same kernel on the same numbers
        assert row.logistic_score == pytest.approx(ref.logistic_score, rel=1e-12, abs=1e-15)
        assert row.risk == pytest.approx(ref.risk, rel=1e-12, abs=1e-15)
        assert bool(row.is_anomaly) == ref.is_anomaly
        assert list(row.reasons) == list(ref.reasons), row.event_id
        assert (row.rcf_version, row.logistic_version) == (ref.rcf_version, ref.logistic_version)
        flagged += bool(row.is_anomaly)
    assert flagged > 5


def test_rcf_scores_in_threads_are_the_scores_of_one_call(champions):
    from scoring.plan import rcf_in_threads as _rcf_in_threads

    X = np.random.default_rng(2).normal(size=(5000, len(FEATURES))) * 2
    X[7, 1] = np.nan
    forest = champions.rcf.forest
    many = _rcf_in_threads(forest, X, min_rows=10)
    np.testing.assert_array_equal(many, forest.score(X))
    assert np.isnan(many[7]) and np.isfinite(np.delete(many, 7)).all()


def test_reason_ranking_for_many_rows_is_the_row_by_row_ranking():
    from oracles import reason_codes_row
    from scoring.risk import reason_codes_array

    rng = np.random.default_rng(4)
    m = 300
    attr = rng.normal(size=(m, 4))
    attr[::7] = np.nan                      # attribution not computed for these rows
    attr[1] = [0.5, 0.5, 0.5, -1.0]         # ties: broken by name, as Spark's sort_array does
    contrib = rng.normal(size=(m, 3))
    contrib[2] = 0.0
    contrib[1] = -1.0                       # row 1: only the tied RCF parts are positive
    w_rcf, w_log = rng.uniform(size=m), rng.uniform(size=m)
    names_rcf, names_log = ["a", "b", "c", "d"], ["x", "y", "z"]
    many = reason_codes_array(n=3, rcf_attribution=attr, rcf_features=names_rcf, rcf_weight=w_rcf,
                              logistic_contributions=contrib, logistic_features=names_log, logistic_weight=w_log)
    for i in range(m):
        one = reason_codes_row(n=3, rcf_attribution=None if np.isnan(attr[i]).any() else attr[i].tolist(),
                               rcf_features=names_rcf, rcf_weight=float(w_rcf[i]),
                               logistic_contributions=contrib[i].tolist(), logistic_features=names_log,
                               logistic_weight=float(w_log[i]))
        assert many[i] == one, i
    assert many[1] == ["rcf:c", "rcf:b", "rcf:a"]
    assert any(len(r) < 3 for r in many) and all(len(r) <= 3 for r in many)


def test_the_python_writers_write_what_spark_scores_in_the_session_codec(spark, events_df, champions, tmp_path):
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    from scoring.files import write_scored_files
    from runtime.storage import partition_files

    dated = events_df.withColumn("date", F.when(F.col("event_id").substr(2, 9).cast("int") % 3 == 0,
                                                F.lit("2026-01-02")).otherwise(F.lit("2026-01-01")).cast("date"))
    dated.repartition(3).write.partitionBy("date").parquet(str(tmp_path / "features"))
    table = spark.read.parquet(str(tmp_path / "features"))
    files = partition_files(table, "date")
    columns = ["event_id", "date", "rcf_score", "logistic_score", "risk", "is_anomaly", "rcf_version", "reasons"]
    previous = spark.conf.get("spark.sql.parquet.compression.codec")
    spark.conf.set("spark.sql.parquet.compression.codec", "zstd")
    try:
        counts = write_scored_files(spark, files, champions, str(tmp_path / "scores"), table_schema=table.schema,
                                    keep=["event_id", "date"], columns=columns, plain_columns=["event_id"],
                                    batch_rows=100)  # batches of 100 rows, one row group per file
        spark.conf.set("spark.sql.parquet.compression.codec", "lzo")
        with pytest.raises(ScoringError, match="'lzo' has no pyarrow twin"):
            write_scored_files(spark, files, champions, str(tmp_path / "other"), table_schema=table.schema,
                               keep=["event_id", "date"], columns=columns)
    finally:
        spark.conf.set("spark.sql.parquet.compression.codec", previous)

    expected = {r.event_id: r for r in score_events(dated, champions, keep=["event_id", "date"]).collect()}
    assert DeltaTable(str(tmp_path / "scores")).version() == 0  # created and filled in one commit
    written = spark.read.format("delta").load(str(tmp_path / "scores"))
    assert written.columns == columns
    rows = written.collect()
    assert len(rows) == len(expected) == sum(n for n, _ in counts.values())
    assert {str(r.date) for r in rows} == set(counts) == {"2026-01-01", "2026-01-02"}
    assert sum(a for _, a in counts.values()) == sum(r.is_anomaly for r in rows) > 0
    for r in rows:
        e = expected[r.event_id]
        assert (r.date, r.is_anomaly, r.reasons, r.rcf_version) == (e.date, e.is_anomaly, e.reasons, "r1")
        assert r.risk == pytest.approx(e.risk, rel=1e-9, abs=1e-12)
    one = next((tmp_path / "scores").glob("date=*/*.parquet"))
    assert one.name.endswith(".zstd.parquet")
    chunks = pq.ParquetFile(one).metadata.row_group(0)
    by_name = {chunks.column(j).path_in_schema: chunks.column(j) for j in range(chunks.num_columns)}
    assert by_name["risk"].compression == "ZSTD"
    assert not any("DICTIONARY" in e for e in by_name["event_id"].encodings)
    assert any("DICTIONARY" in e for e in by_name["rcf_version"].encodings)
    assert any("DICTIONARY" in e for e in by_name["reasons.list.element"].encodings)
    assert pq.ParquetFile(one).metadata.num_row_groups == 1  # batches are buffered into row groups
    assert not (tmp_path / "other").exists()  # refused before anything was written


def test_the_python_writers_replace_only_the_dates_asked_and_clean_up_when_they_fail(spark, events_df, champions,
                                                                                     tmp_path):
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    from scoring.files import write_scored_files
    from runtime.storage import partition_files

    def features(name, day):
        events_df.withColumn("date", F.lit(day).cast("date")).write.partitionBy("date").parquet(str(tmp_path / name))
        table = spark.read.parquet(str(tmp_path / name))
        return table, partition_files(table, "date")

    scores, columns = str(tmp_path / "scores"), ["event_id", "date", "risk", "is_anomaly", "reasons"]
    for name, day in (("first", "2026-01-01"), ("second", "2026-01-02"), ("again", "2026-01-02")):
        table, files = features(name, day)
        write_scored_files(spark, files, champions, scores, table_schema=table.schema, keep=["event_id", "date"],
                           columns=columns, values=[day])
    assert DeltaTable(scores).version() == 2
    written = spark.read.format("delta").load(scores)
    n = events_df.count()
    assert {str(r.date): r["count"] for r in written.groupBy("date").count().collect()} == \
        {"2026-01-01": n, "2026-01-02": n}  # the date scored twice holds its rows once
    # a worker that fails (a file with a column missing) leaves the table and no file behind
    before = sorted((tmp_path / "scores").rglob("*.parquet"))
    table, _ = features("bad", "2026-01-03")
    events_df.drop("c").withColumn("date", F.lit("2026-01-03").cast("date")) \
        .write.mode("append").partitionBy("date").parquet(str(tmp_path / "bad"))
    files = partition_files(spark.read.parquet(str(tmp_path / "bad")), "date")
    with pytest.raises(Exception, match="lacks column"):
        write_scored_files(spark, files, champions, scores, table_schema=table.schema, keep=["event_id", "date"],
                           columns=columns, values=["2026-01-03"])
    assert DeltaTable(scores).version() == 2
    assert sorted((tmp_path / "scores").rglob("*.parquet")) == before
