"""The SageMaker backend of the `train` and `score` jobs (``models.backend: sagemaker``).

``jobs/train.py`` and ``jobs/score.py`` read the feature table and resolve the windows as usual,
then hand over to ``train_on_sagemaker`` / ``score_on_sagemaker`` here. Settings live under
``models.sagemaker`` in the config (runtime/defaults.yaml documents each key); the AWS clients
come from ``aws`` (region, endpoint overrides) and the default credential chains.

Registry. SageMaker models are registered under their own kinds, ``sagemaker-rcf`` and
``sagemaker-logistic``, next to the embedded ``rcf`` / ``logistic`` under
``<paths.models>/<dataset>/``, so neither backend ever loads the other's champion. A version's
``model/sagemaker.json`` holds what hosting needs (training job name, model artifact URL, image,
role); ``version.json`` params add the hyperparameters SageMaker recorded, ``feature_cols`` and
``threshold``; the extra field ``backend: sagemaker`` says where it came from.

Metrics. Scoring a test window through SageMaker needs an endpoint, which training does not create
by default: the version is registered with ``metrics_status: pending`` and the registry metric set
to null (the first pending version becomes champion; a pending version replaces a pending champion
but never an evaluated one). With ``models.sagemaker.evaluate_with_endpoint: true`` training scores
a sample of the training window (RCF threshold: mean + ``train.rcf.threshold_sigmas`` sigma) and
the test window on a short-lived endpoint named ``<name_prefix>-eval-<training job>``, deletes it,
and registers real metrics (``metrics_status: evaluated``).

Scoring. For each champion an endpoint named after its version (``<name_prefix>-rcf-<dataset>-v0003``)
is created for this run only, rows are sent to InvokeEndpoint from the executors
(``sagemaker_backend.api.score_batch``), and endpoints, endpoint configs and models are deleted when the
run ends, also when it fails, unless ``keep_endpoint``. Rows with a null feature are not sent and
get null scores (the embedded RCF scores them as null too). Risk and ``is_anomaly`` come from the
same scoring core as the embedded path (scoring/plan.py ``score_detector_arrays``). Reasons:
SageMaker returns neither RCF attributions nor logistic coefficients through the endpoint, so
``reasons`` names the detectors at or above their own threshold, strongest first: ``[]``,
``["rcf"]``, ``["logistic"]`` or both.
``rcf_version`` / ``logistic_version`` read ``sagemaker-rcf/v0003``.

Not a separate entry point: runs inside ``python -m jobs train|score`` and
``spark-submit jobs/train.py|score.py`` with ``--set models.backend=sagemaker``.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from runtime.errors import InputError
from runtime.progress import log, step
from runtime import fs

#: Registry kind per detector: distinct from the embedded "rcf" / "logistic".
REGISTRY_KINDS = {"rcf": "sagemaker-rcf", "logistic": "sagemaker-logistic"}
ALGORITHMS = {"rcf": "randomcutforest", "logistic": "linear-learner"}
#: Each detector's SageMaker hyperparameters and the ``models.sagemaker`` settings they come from.
HYPERPARAMETERS = {
    "rcf": {"num_trees": "rcf_num_trees", "num_samples_per_tree": "rcf_num_samples_per_tree"},
    "logistic": {"binary_classifier_model_selection_criteria": "logistic_selection_criterion",
                 "positive_example_weight_mult": "logistic_positive_weight"},
}
MODEL_FILE = "sagemaker.json"
_FEATURES = "_sagemaker_features"
_PART = "_sagemaker_part"


class SageMakerJobError(RuntimeError):
    """The SageMaker backend could not finish; the message says what and what was cleaned up."""


# ----------------------------------------------------------------------------- settings


def settings(config: Mapping) -> dict[str, Any]:
    """``models.sagemaker`` with the derived defaults filled in (runtime/config.py checked the
    values at load, role and S3 prefix included).
    """
    sm = dict(config["models"]["sagemaker"])
    rcf = config["train"]["rcf"]
    for key in ("num_trees", "num_samples_per_tree"):
        if sm[f"rcf_{key}"] is None:
            sm[f"rcf_{key}"] = rcf[key]
    if sm["logistic_positive_weight"] is None:
        balanced = config["train"]["logistic"]["class_weight"] == "balanced"
        sm["logistic_positive_weight"] = "balanced" if balanced else 1.0
    return sm


def _s3_prefix(sm: Mapping, dataset: str, kind: str) -> str:
    return f"{sm['s3_prefix'].rstrip('/')}/{dataset}/{kind}"


def _model_version_name(kind: str, dataset: str, version: str) -> str:
    return f"{kind}-{dataset}-{version}"


def _check_classpath(spark: SparkSession) -> None:
    from runtime.aws import has_sagemaker_classes

    if not has_sagemaker_classes(spark):
        raise SageMakerJobError(
            "sagemaker-pyspark's classes are not on the driver's classpath: install it "
            "(pip install --no-deps sagemaker_pyspark==1.4.5) and keep spark.extra_jars=auto, or on EMR pass "
            "spark.driver.extraClassPath / spark.executor.extraClassPath (README: Running on EMR with SageMaker)")


def _save_trained(trained, path: str) -> None:
    fs.write_text(fs.join(path, MODEL_FILE), json.dumps(trained.to_dict(), indent=2, sort_keys=True))


def _load_trained(path: str):
    from sagemaker_backend.api import SageMakerTrainingResult

    return SageMakerTrainingResult(**json.loads(fs.read_text(fs.join(path, MODEL_FILE))))


def _with_vector(df: DataFrame, feature_cols: list[str]) -> DataFrame:
    from pyspark.ml.feature import VectorAssembler

    return VectorAssembler(inputCols=list(feature_cols), outputCol=_FEATURES, handleInvalid="error").transform(df)


def _complete(df: DataFrame, feature_cols: list[str]):
    """(rows with every feature set, rows with a null or NaN feature)."""
    ok = F.lit(True)
    for col in feature_cols:
        ok = ok & F.col(col).isNotNull() & ~F.isnan(F.col(col).cast("double"))
    return df.where(ok), df.where(~ok)


# ----------------------------------------------------------------------------- training


def train_on_sagemaker(spark: SparkSession, config, *, train_df: DataFrame, test_df: DataFrame,
                       feature_cols: list[str], kinds: list[str], window: dict, registry_root: str) -> int:
    """Run one SageMaker training job per kind and register each as ``sagemaker-<kind>``."""
    with _input_errors("SageMaker training stopped"):
        return _train(spark, config, train_df=train_df, test_df=test_df, feature_cols=list(feature_cols),
                      kinds=kinds, window=window, root=registry_root)


@contextlib.contextmanager
def _input_errors(stopped: str):
    """Report this backend's errors and SageMaker's as input errors (exit code 2), SageMaker's
    prefixed with ``stopped``.
    """
    from sagemaker_backend.api import SageMakerBackendError

    try:
        yield
    except SageMakerJobError as exc:
        raise InputError(str(exc)) from None
    except SageMakerBackendError as exc:
        raise InputError(f"{stopped}: {exc}") from None


def _train(spark, config, *, train_df, test_df, feature_cols, kinds, window, root) -> int:
    from features.datasets import dataset as dataset_named
    from models import registry
    from sagemaker_backend.api import fit_training_job
    from runtime.aws import client as aws_client

    sm = settings(config)
    dataset = config["dataset"]
    aws_conf = config["aws"]
    reg = config["train"]["registry"]
    _check_classpath(spark)
    sagemaker = aws_client("sagemaker", aws_conf)
    complete_df, incomplete_df = _complete(train_df, feature_cols)
    dropped = incomplete_df.count()
    if dropped:
        log("train", f"  {dropped:,} training rows have a null feature and are left out (SageMaker needs every value)")
    for kind in kinds:
        if kind == "rcf":
            data = _with_vector(complete_df, feature_cols).select(_FEATURES)
        else:
            labeled = complete_df.where(F.col("label").isNotNull())
            if labeled.limit(1).count() == 0:
                raise InputError("the training window has no labels: the logistic model needs them "
                                 "(use --model rcf for unlabeled data)")
            data = _with_vector(labeled, feature_cols).select(_FEATURES, F.col("label").cast("double").alias("label"))
        estimator = _estimator(spark, kind, sm, dataset, aws_conf, len(feature_cols))
        with step("train", f"SageMaker {ALGORITHMS[kind]} training job ({len(feature_cols)} features, "
                           f"{sm['training_instance_count']} x {sm['training_instance_type']})"):
            trained = fit_training_job(estimator, data, algorithm=kind)
        job = sagemaker.describe_training_job(TrainingJobName=trained.training_job_name)
        log("train", f"  {trained.training_job_name}: {job['TrainingJobStatus']}, model {trained.model_data_url}")
        params = {
            "backend": "sagemaker",
            "training_job_name": trained.training_job_name,
            "model_data_url": trained.model_data_url,
            "image_uri": trained.image_uri,
            "role_arn": trained.role_arn,
            "hyperparameters": dict(job.get("HyperParameters") or {}),
            "instance_type": sm["training_instance_type"],
            "instance_count": sm["training_instance_count"],
            "feature_cols": feature_cols,
            "threshold": sm["logistic_threshold"] if kind == "logistic" else sm["rcf_threshold"],
        }
        if sm["evaluate_with_endpoint"]:
            threshold, metrics = _evaluate_on_endpoint(trained, kind, sm, config, aws_conf,
                                                       train_df=complete_df, test_df=test_df,
                                                       feature_cols=feature_cols)
            params["threshold"] = threshold
            metrics = {**metrics, "metrics_status": "evaluated"}
        else:
            metrics = {reg["metric"]: None, "metrics_status": "pending",
                       "note": "not evaluated: scoring the test window needs an endpoint; run train with "
                               "models.sagemaker.evaluate_with_endpoint=true to evaluate on a short-lived one"}
        info = registry.register(
            root, REGISTRY_KINDS[kind], trained, metrics=metrics, params=params, data_window=window,
            metric=reg["metric"], tolerance=reg["tolerance"], save=_save_trained,
            extra={"dataset": dataset, "event_id": dataset_named(dataset).event_id, "backend": "sagemaker",
                   "metrics_status": metrics["metrics_status"]})
        moved = "now champion" if info["promoted"] else f"champion stays {info['previous_champion']}"
        value = metrics.get(reg["metric"])
        shown = f"{reg['metric']} {value:.3f}" if isinstance(value, (int, float)) else "metrics pending"
        log("train", f"{REGISTRY_KINDS[kind]} {info['version']}: {shown}; {moved} "
                     f"(registry {fs.join(root, REGISTRY_KINDS[kind])})")
    return 0


def _estimator(spark, kind: str, sm: Mapping, dataset: str, aws_conf: Mapping, feature_dim: int):
    from runtime.aws import java_clients
    from sagemaker_backend.api import sagemaker_estimator

    clients = java_clients(spark, aws_conf)
    return sagemaker_estimator(
        spark, kind, feature_dim=feature_dim,
        hyperparameters={name: sm[key] for name, key in HYPERPARAMETERS[kind].items()},
        role_arn=sm["role_arn"], instance_type=sm["training_instance_type"],
        instance_count=sm["training_instance_count"], max_runtime_s=sm["max_runtime_seconds"],
        volume_size_gb=sm["volume_size_gb"], s3_prefix=_s3_prefix(sm, dataset, kind), region=aws_conf["region"],
        endpoint_instance_type=sm["endpoint_instance_type"], endpoint_instance_count=sm["endpoint_instance_count"],
        features_col=_FEATURES, sagemaker_client=clients["sagemakerClient"], s3_client=clients["s3Client"],
        sts_client=clients["stsClient"], name_prefix=f"{sm['name_prefix']}-{kind}")


def _evaluate_on_endpoint(trained, kind, sm, config, aws_conf, *, train_df, test_df, feature_cols):
    """(threshold, metrics) from scoring on a short-lived endpoint, deleted afterwards."""
    from features.datasets import dataset as dataset_named
    from models.evaluation import evaluate_scores
    from sagemaker_backend.api import score_batch

    conf = config["train"]
    test_part, _ = _complete(test_df.where(F.col("label").isNotNull()), feature_cols)
    parts = test_part.withColumn(_PART, F.lit("test"))
    if kind == "rcf" and sm["rcf_threshold"] is None:
        total = train_df.count()
        fraction = min(1.0, sm["evaluate_sample_rows"] / max(total, 1))
        sample = train_df.sample(fraction=fraction, seed=conf["rcf"]["seed"]) if fraction < 1.0 else train_df
        parts = parts.unionByName(sample.withColumn(_PART, F.lit("train")), allowMissingColumns=True)
    card_col = dataset_named(config["dataset"]).card_col
    card = {"card_col": card_col, "date_col": "date"} if card_col else {}

    def sink(scored: DataFrame):
        scored = scored.persist()
        try:
            if kind == "logistic":
                threshold = sm["logistic_threshold"]
            elif sm["rcf_threshold"] is not None:
                threshold = sm["rcf_threshold"]
            else:
                threshold = _sigma_threshold(scored.where(F.col(_PART) == "train"), "score",
                                             conf["rcf"]["threshold_sigmas"])
            metrics = evaluate_scores(scored.where(F.col(_PART) == "test"), "score", "label",
                                      threshold=threshold, k=conf["k"], **card)
            return threshold, metrics
        finally:
            scored.unpersist()

    with step("train", f"evaluating {trained.training_job_name} on a short-lived endpoint"):
        return score_batch(trained, _with_vector(parts, feature_cols), sink,
                           model_version=f"eval-{trained.training_job_name}", aws_conf=dict(aws_conf),
                           endpoint_instance_type=sm["endpoint_instance_type"],
                           endpoint_instance_count=sm["endpoint_instance_count"], keep_endpoint=False,
                           name_prefix=sm["name_prefix"], features_col=_FEATURES, score_col="score",
                           batch_size=sm["batch_size"], wait_timeout_s=sm["endpoint_wait_seconds"],
                           poll_s=_poll(aws_conf))


def _sigma_threshold(df: DataFrame, score_col: str, sigmas: float) -> float:
    row = df.agg(F.mean(score_col).alias("m"), F.stddev_pop(score_col).alias("s")).first()
    if row is None or row["m"] is None:
        raise SageMakerJobError("no RCF scores to set a threshold from")
    threshold = float(row["m"]) + float(sigmas) * float(row["s"] or 0.0)
    if not threshold > 0:
        raise SageMakerJobError(f"the RCF threshold from the scores is {threshold}, not positive: "
                                "set models.sagemaker.rcf_threshold")
    return threshold


def _poll(aws_conf: Mapping) -> float:
    # A local server has endpoints InService at once; real SageMaker takes minutes.
    from runtime.aws import endpoint_for

    return 0.2 if endpoint_for("sagemaker", aws_conf) else 15.0


# ----------------------------------------------------------------------------- scoring


def score_on_sagemaker(spark: SparkSession, config, *, features_df: DataFrame, output: str, first, last,
                       models_root: str) -> int:
    """Score ``features_df`` on endpoints made for this run and write the scores table."""
    with _input_errors("SageMaker scoring stopped (endpoints of this run were deleted)"):
        return _score(spark, config, features_df=features_df, output=output, first=first, last=last,
                      models_root=models_root)


def _champions(root: str) -> dict[str, tuple[Any, dict]]:
    from models import registry

    out = {}
    for kind, registry_kind in REGISTRY_KINDS.items():
        if registry.champion(root, registry_kind) is not None:
            out[kind] = registry.load_version(root, registry_kind, loader=_load_trained)
    return out


def _score(spark, config, *, features_df, output, first, last, models_root) -> int:
    from features.datasets import dataset as dataset_named
    from scoring.table import output_columns, write_scores
    from scoring.champions import registry_root

    sm = settings(config)
    dataset = config["dataset"]
    aws_conf = dict(config["aws"])
    root = registry_root(models_root, dataset)
    champions = _champions(root)
    if not champions:
        raise InputError(f"no SageMaker champion (kinds {', '.join(REGISTRY_KINDS.values())}) under {root}: "
                         f"run python -m jobs train --dataset {dataset} --set models.backend=sagemaker first")
    feature_sets = {tuple(info["params"]["feature_cols"]) for _, info in champions.values()}
    if len(feature_sets) > 1:
        raise SageMakerJobError("the SageMaker champions were trained on different feature columns: retrain both")
    feature_cols = list(feature_sets.pop())
    missing = [c for c in feature_cols if c not in features_df.columns]
    if missing:
        raise InputError(f"the feature table lacks column(s) the models need: {', '.join(missing)}")
    versions = {kind: f"{REGISTRY_KINDS[kind]}/{info['version']}" for kind, (_, info) in champions.items()}
    log("score", f"{dataset} {first}..{last} on SageMaker with "
                 + ", ".join(f"{kind} {v}" for kind, v in versions.items()))

    complete_df, incomplete_df = _complete(features_df, feature_cols)
    scoring = config["scoring"]
    order = [kind for kind in ("rcf", "logistic") if kind in champions]

    def finish(scored_complete: DataFrame):
        scored = scored_complete.unionByName(incomplete_df, allowMissingColumns=True)
        for kind in ("rcf", "logistic"):
            if f"{kind}_score" not in scored.columns:
                scored = scored.withColumn(f"{kind}_score", F.lit(None).cast("double"))
        thresholds = {}
        if "rcf" in champions:
            thresholds["rcf"] = _rcf_threshold(champions["rcf"][1], sm, scored_complete, config)
        if "logistic" in champions:
            thresholds["logistic"] = sm["logistic_threshold"]
        scored = with_sagemaker_risk(scored, thresholds, method=scoring["risk_method"],
                                     anomaly_risk=scoring["anomaly_risk"], reasons=scoring["reasons"])
        scored = (scored.withColumn("rcf_version", F.lit(versions.get("rcf")).cast("string"))
                  .withColumn("logistic_version", F.lit(versions.get("logistic")).cast("string")))
        scored = scored.select(*output_columns(dataset_named(dataset), scored.columns))
        with step("score", f"writing scores to {output}"):
            write_scores(scored, output, config["storage"]["format"], first, last, dataset_named(dataset))

    def through(index: int, df: DataFrame):
        """Score ``df`` with ``order[index:]``, each endpoint alive until the write is done."""
        if index == len(order):
            return finish(df)
        kind = order[index]
        trained, info = champions[kind]
        names_version = _model_version_name(kind, dataset, info["version"])

        def sink(scored: DataFrame):
            if "predicted_label" in scored.columns:
                scored = scored.drop("predicted_label")
            # Materialise this detector's scores before the next endpoint is called: each endpoint
            # then sees its requests in one go, and the RCF threshold can be read from them.
            scored = scored.persist()
            try:
                with step("score", f"invoking {sm['name_prefix']}-{names_version} ({kind})"):
                    scored.count()
                return through(index + 1, scored)
            finally:
                scored.unpersist()

        log("score", f"  endpoint {sm['name_prefix']}-{names_version}: {sm['endpoint_instance_count']} x "
                     f"{sm['endpoint_instance_type']} for this run"
                     + (" (kept afterwards: keep_endpoint)" if sm["keep_endpoint"] else " (deleted afterwards)"))
        return score_batch(trained, _with_vector(df, feature_cols), sink, model_version=names_version,
                           aws_conf=aws_conf, endpoint_instance_type=sm["endpoint_instance_type"],
                           endpoint_instance_count=sm["endpoint_instance_count"], keep_endpoint=sm["keep_endpoint"],
                           name_prefix=sm["name_prefix"], features_col=_FEATURES, score_col=f"{kind}_score",
                           batch_size=sm["batch_size"], wait_timeout_s=sm["endpoint_wait_seconds"],
                           poll_s=_poll(aws_conf))

    from sagemaker_backend.api import score_batch

    started = time.perf_counter()
    through(0, complete_df)
    log("score", f"SageMaker scoring done in {time.perf_counter() - started:.1f} s")
    from scoring.table import report_written

    report_written(spark, output, config["storage"]["format"], first, last)
    return 0


def _rcf_threshold(info: Mapping, sm: Mapping, scored_complete: DataFrame, config) -> float:
    """Config wins, then the registered (evaluated) threshold, then mean + k sigma of this run."""
    if sm["rcf_threshold"] is not None:
        return float(sm["rcf_threshold"])
    registered = info["params"].get("threshold")
    if isinstance(registered, (int, float)) and registered > 0:
        return float(registered)
    sigmas = config["train"]["rcf"]["threshold_sigmas"]
    threshold = _sigma_threshold(scored_complete, "rcf_score", sigmas)
    log("score", f"  RCF threshold {threshold:.4f} (mean + {sigmas} sigma of this run's scores: the "
                 f"version has none registered)")
    return threshold


def with_sagemaker_risk(df: DataFrame, thresholds: Mapping[str, float], *, method: str = "max",
                        anomaly_risk: float = 0.5, reasons: int = 3) -> DataFrame:
    """``risk``, ``is_anomaly`` and ``reasons`` from ``rcf_score`` / ``logistic_score``.

    The scoring core computes them (scoring/plan.py ``score_detector_arrays``: the embedded
    path's risk and flag). ``reasons`` lists the detectors whose own risk component is at least
    0.5 (at or above their threshold), strongest first: SageMaker endpoints return no
    per-feature attribution.
    """
    from scoring.plan import ScoringPlan
    from scoring.spark import with_detector_risk

    plan = ScoringPlan.of_thresholds(rcf=thresholds.get("rcf"), logistic=thresholds.get("logistic"),
                                     risk_method=method, anomaly_risk=anomaly_risk, reasons=reasons)
    return with_detector_risk(df, plan)
