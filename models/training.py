"""Training: fit the detectors on a time window, evaluate them on a later one, register.

Reads the feature table, trains the Random Cut Forest (unsupervised: every training row) and/or
the logistic model (labeled rows; regularisation and decision threshold chosen on a time-based
validation window), evaluates each candidate on the test window, writes a new registry version
(params, data window, metrics, time) and moves the champion only if the new version is not worse
than the champion on train.registry.metric (within train.registry.tolerance).

A candidate is evaluated on its own score, which each detector computes itself: the RCF through
its Spark ML ``transform`` (the forest's kernels), the logistic model through its closed-form
column (``LogisticDetector.score_column``, the expression scoring/ evaluates too). The combined
risk of scoring/ plays no part in one detector's metrics, so training stays below the scoring
stage and needs nothing from it.

Where the data set has a card column (features/datasets.py ``card_col``), test rows of cards
already known to be compromised are left out and card precision@k is reported (the Handbook's
protocol).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Mapping, Optional

from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.datasets import Dataset
from features.datasets import dataset as dataset_named
from models import registry
from models.evaluation import evaluate_scores, exclude_known_compromised
from runtime.errors import InputError
from runtime.progress import log, step
from runtime.storage import StorageError, read_table

KINDS = {"rcf": ("rcf",), "logistic": ("logistic",), "all": ("rcf", "logistic")}
_VECTOR = "_score_features"

# What trains elsewhere (the SageMaker backend): called with the prepared windows instead of
# fitting here; it returns the job's exit code.
RemoteTrainer = Callable[..., int]


def resolve_windows(dates, given: Mapping[str, Optional[dt.date]], *, test_days: int, train_days: Optional[int],
                    gap_days: int) -> tuple[dt.date, dt.date, dt.date, dt.date]:
    """(train_from, train_to, test_from, test_to) from the dates present and what the user gave."""
    if not dates:
        raise InputError("the feature table is empty: run the features job first")
    dates = sorted(dates)
    test_to = given["test_to"] or dates[-1]
    test_from = given["test_from"] or test_to - dt.timedelta(days=test_days - 1)
    train_to = given["train_to"] or test_from - dt.timedelta(days=gap_days + 1)
    train_from = given["train_from"] or (train_to - dt.timedelta(days=train_days - 1) if train_days else dates[0])
    if not train_from <= train_to < test_from <= test_to:
        raise InputError(f"windows must be ordered train {train_from}..{train_to} < test {test_from}..{test_to}; "
                         f"the feature table holds {dates[0]}..{dates[-1]}")
    return train_from, train_to, test_from, test_to


def between(df: DataFrame, first, last) -> DataFrame:
    return df.where(F.col("date").between(F.lit(str(first)).cast("date"), F.lit(str(last)).cast("date")))


def _assemble(df: DataFrame, feature_cols) -> DataFrame:
    """The RCF's inputs as one vector column (nulls kept: the forest scores such a row as null)."""
    return VectorAssembler(inputCols=list(feature_cols), outputCol=_VECTOR, handleInvalid="keep").transform(df)


def fit_rcf(train_df: DataFrame, feature_cols, conf: Mapping) -> tuple[Any, dict]:
    from models.rcf import RandomCutForest

    estimator = RandomCutForest(featuresCol=_VECTOR, numTrees=conf["num_trees"],
                                numSamplesPerTree=conf["num_samples_per_tree"],
                                thresholdMethod=conf["threshold_method"], thresholdSigmas=conf["threshold_sigmas"],
                                thresholdQuantile=conf["threshold_quantile"], featureScaling=conf["scaling"],
                                seed=conf["seed"])
    model = estimator.fit(_assemble(train_df, feature_cols))
    return model, {k: conf[k] for k in conf} | {"threshold": model.threshold}


def fit_logistic(train_df: DataFrame, feature_cols, conf: Mapping, gap_days: int) -> tuple[Any, dict]:
    from models.logistic import train_logistic

    labeled = train_df.where(F.col("label").isNotNull())
    if labeled.limit(1).count() == 0:
        raise InputError("the training window has no labels: the logistic model needs them "
                         "(use --model rcf for unlabeled data)")
    detector = train_logistic(
        labeled, feature_cols=feature_cols,
        reg_params=conf["reg_params"], elastic_net_params=conf["elastic_net_params"],
        validation_days=conf["validation_days"], delay_days=gap_days,
        target={conf["target_metric"]: conf["target_value"]}, class_weight=conf["class_weight"],
        max_iter=conf["max_iter"], log=lambda msg: log("train", f"  logistic: {msg}"))
    return detector, {**detector.params, "threshold": detector.threshold, "validation": detector.validation}


def candidate_scores(test_df: DataFrame, kind: str, model, feature_cols) -> tuple[DataFrame, str]:
    """``test_df`` plus the candidate's own score, and that column's name."""
    if kind == "rcf":
        return model.transform(_assemble(test_df, feature_cols)), model.getScoreCol()
    return model.score_column(test_df, "logistic_score"), "logistic_score"


def evaluate_candidate(test_df: DataFrame, dataset: Dataset, kind: str, model, feature_cols, k: int) -> dict:
    """Metrics of one detector on the test window (None where the window has no labels)."""
    scored, score_col = candidate_scores(test_df, kind, model, feature_cols)
    card = {"card_col": dataset.card_col, "date_col": "date"} if dataset.card_col else {}
    return evaluate_scores(scored.where(F.col("label").isNotNull()), score_col, "label",
                           threshold=model.threshold, k=k, **card)


def train_detectors(spark: SparkSession, config: Mapping, *, source: str, registry_root: str,
                    model: Optional[str] = None, given: Mapping[str, Optional[dt.date]],
                    remote: Optional[RemoteTrainer] = None) -> int:
    """Train, evaluate and register the detectors of ``config["dataset"]``; the exit code.

    ``config`` is the whole config because the data set's feature columns depend on its
    ``features`` and ``schema`` sections. ``given``: the window dates asked for (None: the
    default). ``remote(train_df=, test_df=, feature_cols=, kinds=, window=, registry_root=)``
    trains elsewhere instead (models.backend: sagemaker).
    """
    dataset = dataset_named(config["dataset"])
    conf = config["train"]
    kinds = list(KINDS[model or conf["model"]])
    gap_days = conf["gap_days"] if conf["gap_days"] is not None else dataset.label_delay_days(config)
    try:
        table = read_table(spark, source, config["storage"]["format"])
        feature_cols = dataset.feature_columns(config)
        rcf_cols = dataset.rcf_feature_columns(config)
    except (StorageError, ValueError) as exc:
        raise InputError(str(exc)) from None
    dates = [r["date"] for r in table.select("date").distinct().collect()]
    train_from, train_to, test_from, test_to = resolve_windows(
        dates, given, test_days=conf["test_days"], train_days=conf["train_days"], gap_days=gap_days)
    window = {"train_from": str(train_from), "train_to": str(train_to),
              "test_from": str(test_from), "test_to": str(test_to), "gap_days": gap_days}
    log("train", f"{dataset.name}: train {train_from}..{train_to}, test {test_from}..{test_to} "
                 f"({len(feature_cols)} features) -> registry {registry_root}")
    train_df = between(table, train_from, train_to).persist()
    test_df = between(table, test_from, test_to).persist()
    if dataset.card_col:
        # Cards already known to be compromised are not a detection (the Handbook's protocol).
        test_df = exclude_known_compromised(test_df, between(table, train_from, test_to), card_col=dataset.card_col,
                                            date_col="date", delay_days=gap_days, since=str(train_from))
    if remote is not None:
        return remote(train_df=train_df, test_df=test_df, feature_cols=feature_cols, kinds=kinds, window=window,
                      registry_root=registry_root)
    for kind in kinds:
        cols = rcf_cols if kind == "rcf" else feature_cols
        with step("train", f"training {kind}"):
            if kind == "rcf":
                fitted, params = fit_rcf(train_df, cols, conf["rcf"])
            else:
                fitted, params = fit_logistic(train_df, cols, conf["logistic"], gap_days)
        with step("train", f"evaluating {kind} on {test_from}..{test_to}"):
            metrics = evaluate_candidate(test_df, dataset, kind, fitted, cols, conf["k"])
        info = registry.register(
            registry_root, kind, fitted, metrics=metrics, params={**params, "feature_cols": cols},
            data_window=window, metric=conf["registry"]["metric"], tolerance=conf["registry"]["tolerance"],
            extra={"dataset": dataset.name, "event_id": dataset.event_id})
        headline = ", ".join(f"{m} {metrics[m]:.3f}" for m in ("auc_roc", "average_precision", "precision_at_k")
                             if isinstance(metrics.get(m), (int, float)))
        moved = "now champion" if info["promoted"] else f"champion stays {info['previous_champion']}"
        log("train", f"{kind} {info['version']}: {headline}; {moved}")
    train_df.unpersist()
    test_df.unpersist()
    return 0
