"""SageMaker backends for the RCF and logistic detectors, through ``sagemaker-pyspark``.

Lifecycle, kept explicit so no endpoint is left running by accident:

1. ``sagemaker_estimator(spark, "rcf" | "logistic", ...)`` builds a
   sagemaker-pyspark estimator from plain parameters. Its endpoint policy is ``DO_NOT_CREATE``
   by default: ``fit`` only uploads RecordIO-protobuf training data to S3 and runs a training job.
2. ``fit_training_job(estimator, df, algorithm=...)`` runs ``fit`` and returns a
   ``SageMakerTrainingResult`` of plain strings (job name, model artifact URI, image, role),
   which is what the model registry stores. A failed/stopped job raises ``TrainingJobFailed``.
3. ``score_batch(...)`` creates Model, EndpointConfig and Endpoint named after the model version
   (``endpoint_names``), only if that endpoint is not already InService, scores the frame through
   ``invoke_endpoint_scores`` (InvokeEndpoint from the executors), hands the scored frame to a
   ``sink`` that must run an action (write), and in ``finally`` deletes endpoint, endpoint config
   and model unless ``keep_endpoint=True``. On any failure everything it may have created is
   deleted, then the error is raised.

Hosting resources are managed with boto3 (plain, inspectable, with SageMaker's failure reasons);
the Java side is only used for what needs Spark: writing training data and InvokeEndpoint.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

T = TypeVar("T")

RCF_ALGORITHM = "randomcutforest"
LINEAR_LEARNER_ALGORITHM = "linear-learner"
#: RCF's inference response carries one ``score`` per record.
RCF_SCORE_KEY = "score"

_SDK = "com.amazonaws.services.sagemaker.sparksdk"
_ENDPOINT_POLICIES = ("do_not_create", "create_on_transform", "create_on_construct")
_MAX_NAME = 63


class SageMakerBackendError(RuntimeError):
    """A SageMaker call failed; the message says which call and why."""


class TrainingJobFailed(SageMakerBackendError):
    """The training job ended Failed or Stopped."""


class EndpointFailed(SageMakerBackendError):
    """Creating or waiting for the endpoint failed (status Failed, timeout or API error)."""


class SageMakerThrottled(SageMakerBackendError):
    """SageMaker kept throttling a call after the SDK's own retries."""


# --------------------------------------------------------------------------- helpers


@functools.cache
def image_uri(algorithm: str, region: str) -> str:
    """ECR image of a SageMaker built-in algorithm (``randomcutforest``, ``linear-learner``)."""
    from sagemaker import image_uris

    return image_uris.retrieve(algorithm, region)


def _jvm_class(spark: SparkSession, dotted: str):
    obj = spark._jvm
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _scala_seq(spark: SparkSession, items: list[str]):
    jlist = spark._jvm.java.util.ArrayList()
    for item in items:
        jlist.add(item)
    converters = _jvm_class(spark, "scala.collection.JavaConverters").asScalaBufferConverter
    return converters(jlist).asScala().toSeq()


def _endpoint_policy(spark: SparkSession, policy: str):
    if policy not in _ENDPOINT_POLICIES:
        raise ValueError(f"endpoint policy must be one of {_ENDPOINT_POLICIES}, got {policy!r}")
    from sagemaker_pyspark import EndpointCreationPolicy

    return getattr(EndpointCreationPolicy, policy.upper())


def protobuf_request_serializer(spark: SparkSession, features_col: str = "features"):
    """``ProtobufRequestRowSerializer`` reading a Vector column (Java object)."""
    return _jvm_class(spark, f"{_SDK}.transformation.serializers.ProtobufRequestRowSerializer")(
        spark._jvm.scala.Option.empty(), features_col
    )


def protobuf_response_deserializer(
    spark: SparkSession, output_cols: list[str], protobuf_keys: list[str] | None = None
):
    """``ProtobufResponseRowDeserializer`` producing Double columns ``output_cols``.

    The Scala constructor takes ``(StructType, Option[Seq[String]])``; sagemaker-pyspark's
    Python wrapper passes a plain list for the second argument, which py4j cannot match, so the
    ``Option[Seq[String]]`` is built here. ``protobuf_keys`` defaults to ``output_cols``.
    """
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([StructField(col, DoubleType(), True) for col in output_cols])
    jschema = spark._jvm.org.apache.spark.sql.types.DataType.fromJson(schema.json())
    keys = _scala_seq(spark, list(protobuf_keys or output_cols))
    option = spark._jvm.scala.Option.apply(keys)
    return _jvm_class(spark, f"{_SDK}.transformation.deserializers.ProtobufResponseRowDeserializer")(
        jschema, option
    )


def _s3_path(s3_prefix: str, leaf: str):
    from sagemaker_pyspark import S3DataPath

    match = re.match(r"^s3a?://([^/]+)/?(.*)$", s3_prefix)
    if not match:
        raise ValueError(f"s3_prefix must look like s3://bucket/prefix, got {s3_prefix!r}")
    bucket, prefix = match.group(1), match.group(2).strip("/")
    return S3DataPath(bucket, f"{prefix}/{leaf}" if prefix else leaf)


_NAME_PREFIX = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_NAME_SUFFIXES = ("-mdl", "-cfg")


@dataclass(frozen=True)
class TrainingNames:
    """The four names sagemaker-spark's name policy gives one ``fit`` (each <= 63 characters)."""

    training_job: str
    model: str
    endpoint_config: str
    endpoint: str


def training_names(prefix: str, *, now: datetime.datetime | None = None, token: str | None = None) -> TrainingNames:
    """Names for one training run: ``<prefix>-<yyyymmdd-hhmmss>-<6 hex>`` (+ ``-mdl`` / ``-cfg``).

    sagemaker-pyspark's ``RandomNamePolicy`` builds ``<prefix>trainingJob-<uid>-<ISO timestamp>``,
    64-69 characters with our prefixes, and SageMaker refuses names over 63. These keep the prefix
    whole (the IAM policy allows ``<name_prefix>-rcf-*`` / ``<name_prefix>-logistic-*``) and are
    unique by the second plus 24 random bits. ``now`` (UTC) and ``token`` are for tests.
    """
    if not _NAME_PREFIX.match(prefix or ""):
        raise ValueError(f"SageMaker name prefix {prefix!r} must be letters and digits joined by '-' "
                         "(models.sagemaker.name_prefix)")
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%d-%H%M%S")
    token = token if token is not None else secrets.token_hex(3)
    base = f"{prefix}-{stamp}-{token}"
    longest = len(base) + max(len(suffix) for suffix in _NAME_SUFFIXES)
    if longest > _MAX_NAME:
        raise ValueError(f"SageMaker name prefix {prefix!r} is too long: its names would have {longest} "
                         f"characters and SageMaker allows {_MAX_NAME} (shorten models.sagemaker.name_prefix "
                         f"to at most {len(prefix) - (longest - _MAX_NAME)} characters with its '-<kind>')")
    return TrainingNames(training_job=base, model=f"{base}-mdl", endpoint_config=f"{base}-cfg", endpoint=base)


def name_policy_factory(names: TrainingNames):
    """sagemaker-pyspark's ``CustomNamePolicyFactory`` (its JVM class) giving ``names``.

    A Python subclass of ``NamePolicyFactory`` cannot stand in: the Scala estimator calls an
    abstract JVM class, which py4j callbacks cannot implement. The factory returns the same names
    on every ``fit``, so an estimator runs one training job (``fit_training_job`` checks).
    """
    from sagemaker_pyspark import CustomNamePolicyFactory

    return CustomNamePolicyFactory(names.training_job, names.model, names.endpoint_config, names.endpoint)


def estimator_names(estimator) -> TrainingNames:
    """The names ``estimator``'s name policy gives (what its next ``fit`` will use)."""
    policy = estimator._java_obj.namePolicyFactory().createNamePolicy()
    return TrainingNames(training_job=str(policy.trainingJobName()), model=str(policy.modelName()),
                         endpoint_config=str(policy.endpointConfigName()), endpoint=str(policy.endpointName()))


def _safe_name(text: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", text).strip("-")
    return name[:_MAX_NAME].rstrip("-")


# --------------------------------------------------------------------------- estimators


def sagemaker_estimator(
    spark: SparkSession,
    algorithm: str,
    *,
    feature_dim: int,
    hyperparameters: Mapping[str, Any],
    role_arn: str,
    instance_type: str,
    instance_count: int,
    max_runtime_s: int,
    s3_prefix: str,
    region: str,
    sagemaker_client,
    s3_client,
    sts_client,
    volume_size_gb: int = 30,
    endpoint_instance_type: str = "ml.m5.large",
    endpoint_instance_count: int = 1,
    endpoint_policy: str = "do_not_create",
    features_col: str = "features",
    label_col: str = "label",
    name_prefix: str | None = None,
):
    """A sagemaker-pyspark estimator for ``algorithm`` (``"rcf"`` or ``"logistic"``).

    ``rcf``: Random Cut Forest as a generic ``SageMakerEstimator`` (sagemaker-pyspark has no RCF
    class), ``hyperparameters`` ``num_trees`` and ``num_samples_per_tree``; it trains on
    ``features_col`` alone and its endpoint answers ``score``. ``logistic``: sagemaker-pyspark's
    ``LinearLearnerBinaryClassifier``, trained on ``features_col`` and ``label_col``,
    ``hyperparameters`` among ``binary_classifier_model_selection_criteria``,
    ``positive_example_weight_mult`` (a float or ``"balanced"``) and ``epochs``; scores come back
    as ``score`` (probability) and ``predicted_label``.

    ``sagemaker_client``/``s3_client``/``sts_client`` are Java SDK clients, e.g. from
    ``runtime.aws.java_clients``. Training data is written as RecordIO-protobuf (Vector column
    ``features_col``) under ``{s3_prefix}/training-input``; artifacts go to
    ``{s3_prefix}/training-output``. Job names are ``training_names(name_prefix or algorithm)``:
    the prefix, a UTC timestamp and a random token, at most 63 characters.
    """
    from sagemaker_pyspark import IAMRole

    if algorithm not in _ESTIMATORS:
        raise ValueError(f"algorithm must be 'rcf' or 'logistic', got {algorithm!r}")
    if feature_dim < 1:
        raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
    labelled = algorithm == "logistic"
    names = training_names(name_prefix or algorithm)
    common = dict(
        trainingInstanceType=instance_type,
        trainingInstanceCount=instance_count,
        endpointInstanceType=endpoint_instance_type,
        endpointInitialInstanceCount=endpoint_instance_count,
        requestRowSerializer=protobuf_request_serializer(spark, features_col),
        trainingInputS3DataPath=_s3_path(s3_prefix, "training-input"),
        trainingOutputS3DataPath=_s3_path(s3_prefix, "training-output"),
        trainingProjectedColumns=[features_col, label_col] if labelled else [features_col],
        trainingSparkDataFormatOptions={"featuresColumnName": features_col,
                                        **({"labelColumnName": label_col} if labelled else {})},
        trainingMaxRuntimeInSeconds=max_runtime_s,
        # sagemaker-pyspark's default is 1024 GB of EBS per training instance.
        trainingInstanceVolumeSizeInGB=volume_size_gb,
        endpointCreationPolicy=_endpoint_policy(spark, endpoint_policy),
        sagemakerClient=sagemaker_client,
        sagemakerRole=IAMRole(role_arn),
        s3Client=s3_client,
        stsClient=sts_client,
        deleteStagingDataAfterTraining=False,
        namePolicyFactory=name_policy_factory(names),
    )
    return _ESTIMATORS[algorithm](spark, common, feature_dim=feature_dim, hyperparameters=dict(hyperparameters),
                                  region=region)


def _rcf_estimator(spark: SparkSession, common: dict, *, feature_dim: int, hyperparameters: dict, region: str):
    from sagemaker_pyspark import SageMakerEstimator

    image = image_uri(RCF_ALGORITHM, region)
    return SageMakerEstimator(
        trainingImage=image,
        modelImage=image,
        responseRowDeserializer=protobuf_response_deserializer(spark, ["score"], [RCF_SCORE_KEY]),
        hyperParameters={**{key: str(value) for key, value in hyperparameters.items()},
                         "feature_dim": str(feature_dim)},
        trainingContentType="application/x-recordio-protobuf",
        trainingSparkDataFormat="sagemaker",
        trainingS3DataDistribution="ShardedByS3Key",
        modelPrependInputRowsToTransformationRows=True,
        **common,
    )


def _linear_learner_estimator(spark: SparkSession, common: dict, *, feature_dim: int, hyperparameters: dict,
                              region: str):
    from sagemaker_pyspark.algorithms import LinearLearnerBinaryClassifier

    estimator = LinearLearnerBinaryClassifier(region=region, **common)
    estimator.setFeatureDim(feature_dim)
    for key, value in hyperparameters.items():   # e.g. epochs -> setEpochs
        getattr(estimator, "set" + "".join(part.title() for part in key.split("_")))(value)
    return estimator


_ESTIMATORS = {"rcf": _rcf_estimator, "logistic": _linear_learner_estimator}


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class SageMakerTrainingResult:
    """What a finished training job leaves behind: enough to host it later."""

    algorithm: str  # "rcf" | "logistic"
    training_job_name: str
    model_data_url: str
    image_uri: str
    role_arn: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _java_error_message(exc: Exception) -> str:
    # Errors raised in Python workers (our InvokeEndpoint code) come back as a PythonException
    # whose text holds the worker's traceback: surface our own error line.
    worker_error = re.findall(r"(?:SageMakerBackendError|ClientError|EndpointConnectionError): (.+)", str(exc))
    if worker_error:
        return worker_error[-1].strip()
    java_exc = getattr(exc, "java_exception", None)
    if java_exc is not None:
        # sagemaker-spark wraps the useful reason ("Training job 'x' failed for reason: ...") in
        # a generic RuntimeException: report the whole cause chain.
        try:
            parts = []
            while java_exc is not None and len(parts) < 5:
                parts.append(str(java_exc.toString()))
                java_exc = java_exc.getCause()
            return " <- caused by: ".join(parts)
        except Exception:  # noqa: BLE001, S110 - the JVM may already be gone
            pass
    return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)


def fit_training_job(estimator, train_df: DataFrame, *, algorithm: str) -> SageMakerTrainingResult:
    """Run ``estimator.fit`` (upload + training job) and return plain facts about the job.

    Raises ``TrainingJobFailed`` (with SageMaker's failure reason) when the job fails or is
    stopped, ``SageMakerBackendError`` for other errors raised on the Java side, and for an
    estimator that already ran its one training job (its name policy would repeat the job's name).
    """
    if estimator._java_obj.latestTrainingJob().isDefined():
        raise SageMakerBackendError(
            f"this estimator already ran training job {estimator._java_obj.latestTrainingJob().get()}: "
            "build a new one with sagemaker_estimator (each gets fresh SageMaker names)")
    try:
        # The Python wrapper's fit() converts the result into its own SageMakerModel wrapper; the
        # Java model is all we need.
        estimator._transfer_params_to_java()
        java_model = estimator._java_obj.fit(train_df._jdf)
    except Exception as exc:  # py4j.protocol.Py4JJavaError, but keep py4j an implementation detail
        message = _java_error_message(exc)
        if re.search(r"Training job .*(failed|stopped)|TrainingJobStatus|FailureReason", message, re.IGNORECASE):
            raise TrainingJobFailed(f"SageMaker training job did not complete: {message}") from exc
        raise SageMakerBackendError(f"SageMaker training failed: {message}") from exc
    java_est = estimator._java_obj
    job_name = java_est.latestTrainingJob().get()
    model_path = java_model.modelPath().get().toS3UriString()
    return SageMakerTrainingResult(
        algorithm=algorithm,
        training_job_name=str(job_name),
        model_data_url=str(model_path),
        image_uri=str(java_est.modelImage()),
        role_arn=str(java_est.sagemakerRole().role()),
    )


# --------------------------------------------------------------------------- hosting + scoring


@dataclass(frozen=True)
class EndpointNames:
    model: str
    endpoint_config: str
    endpoint: str


def endpoint_names(prefix: str, model_version: str) -> EndpointNames:
    """Deterministic SageMaker names for one model version (letters, digits, '-', <= 63 chars)."""
    base = _safe_name(f"{prefix}-{model_version}")
    if not base:
        raise ValueError("prefix and model_version must contain letters or digits")
    base = base[: _MAX_NAME - len("-cfg")].rstrip("-")
    return EndpointNames(model=f"{base}-mdl", endpoint_config=f"{base}-cfg", endpoint=base)


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", ""))


_THROTTLE_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException"}


def _call(description: str, fn: Callable[..., Any], **kwargs):
    try:
        return fn(**kwargs)
    except Exception as exc:
        code = _client_error_code(exc)
        if code in _THROTTLE_CODES:
            raise SageMakerThrottled(f"{description}: throttled by SageMaker ({code}): {exc}") from exc
        raise EndpointFailed(f"{description} failed: {exc}") from exc


def _endpoint_status(sm, name: str) -> dict | None:
    try:
        return sm.describe_endpoint(EndpointName=name)
    except Exception as exc:
        if _client_error_code(exc) in {"ValidationException", "ResourceNotFound"}:
            return None
        raise


def create_endpoint(
    sm,
    names: EndpointNames,
    trained: SageMakerTrainingResult,
    *,
    instance_type: str,
    instance_count: int,
    wait_timeout_s: float = 1800,
    poll_s: float = 15,
) -> bool:
    """Create model, endpoint config and endpoint unless the endpoint is already InService.

    Returns True when it created them. Waits for InService; raises ``EndpointFailed`` with the
    failure reason when the endpoint ends Failed or the wait times out (resources are left for
    the caller's cleanup, which ``score_batch`` always runs).
    """
    current = _endpoint_status(sm, names.endpoint)
    if current and current.get("EndpointStatus") == "InService":
        log.info("reusing InService endpoint %s", names.endpoint)
        return False
    if current:
        raise EndpointFailed(
            f"endpoint {names.endpoint} exists with status {current.get('EndpointStatus')}: "
            f"{current.get('FailureReason', 'no reason given')}"
        )
    _call(
        f"CreateModel {names.model}",
        sm.create_model,
        ModelName=names.model,
        PrimaryContainer={"Image": trained.image_uri, "ModelDataUrl": trained.model_data_url},
        ExecutionRoleArn=trained.role_arn,
    )
    _call(
        f"CreateEndpointConfig {names.endpoint_config}",
        sm.create_endpoint_config,
        EndpointConfigName=names.endpoint_config,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": names.model,
                "InitialInstanceCount": instance_count,
                "InstanceType": instance_type,
            }
        ],
    )
    _call(
        f"CreateEndpoint {names.endpoint}",
        sm.create_endpoint,
        EndpointName=names.endpoint,
        EndpointConfigName=names.endpoint_config,
    )
    deadline = time.monotonic() + wait_timeout_s
    while True:
        desc = _call(f"DescribeEndpoint {names.endpoint}", sm.describe_endpoint, EndpointName=names.endpoint)
        status = desc.get("EndpointStatus")
        if status == "InService":
            return True
        if status in {"Failed", "OutOfService", "Deleting"}:
            raise EndpointFailed(
                f"endpoint {names.endpoint} ended {status}: {desc.get('FailureReason', 'no reason given')}"
            )
        if time.monotonic() > deadline:
            raise EndpointFailed(f"endpoint {names.endpoint} not InService after {wait_timeout_s}s ({status})")
        time.sleep(poll_s)


def delete_endpoint(sm, names: EndpointNames) -> list[str]:
    """Delete endpoint, endpoint config and model; missing ones are fine. Returns errors."""
    errors = []
    for what, fn, kwargs in (
        ("endpoint", sm.delete_endpoint, {"EndpointName": names.endpoint}),
        ("endpoint config", sm.delete_endpoint_config, {"EndpointConfigName": names.endpoint_config}),
        ("model", sm.delete_model, {"ModelName": names.model}),
    ):
        try:
            fn(**kwargs)
        except Exception as exc:  # noqa: BLE001 - report every cleanup error, keep going
            if _client_error_code(exc) in {"ValidationException", "ResourceNotFound"}:
                continue
            errors.append(f"delete {what}: {exc}")
    for error in errors:
        log.error("SageMaker cleanup: %s", error)
    return errors


def _csv_body(rows) -> bytes:
    return "".join(",".join(repr(float(x)) for x in row) + "\n" for row in rows).encode("ascii")


def parse_scores(algorithm: str, body: bytes, content_type: str) -> list[tuple[float, float | None]]:
    """(score, predicted_label) per record of an endpoint response, in request order.

    JSON is what RCF (``{"scores": [{"score": s}]}``) and Linear Learner
    (``{"predictions": [{"score": p, "predicted_label": l}]}``) return for
    ``Accept: application/json``; RecordIO-protobuf responses are decoded with the ``sagemaker``
    SDK's reader (label keys ``score`` / ``predicted_label``).
    """
    import json

    if "json" in content_type:
        payload = json.loads(body)
        key = "scores" if algorithm == "rcf" else "predictions"
        if key not in payload:
            raise SageMakerBackendError(f"endpoint response has no {key!r}: {str(payload)[:200]}")
        return [
            (float(item["score"]), float(item["predicted_label"]) if "predicted_label" in item else None)
            for item in payload[key]
        ]
    if "recordio-protobuf" in content_type:
        import io

        from sagemaker.amazon.common import read_records

        out = []
        for record in read_records(io.BytesIO(body)):
            label = record.label
            score = float(label["score"].float32_tensor.values[0])
            predicted = (
                float(label["predicted_label"].float32_tensor.values[0])
                if "predicted_label" in label
                else None
            )
            out.append((score, predicted))
        return out
    raise SageMakerBackendError(f"unsupported endpoint response content type {content_type!r}")


def invoke_endpoint_scores(
    df: DataFrame,
    *,
    endpoint_name: str,
    aws_conf: dict,
    algorithm: str,
    features_col: str = "features",
    score_col: str = "score",
    predicted_label_col: str = "predicted_label",
    batch_size: int = 500,
    accept: str = "application/json",
) -> DataFrame:
    """``df``'s non-vector columns plus ``score_col`` (and ``predicted_label_col`` for logistic).

    Replaces ``SageMakerModel.transform`` on Spark 3.5. Each partition sends its rows in batches of
    ``batch_size`` as ``text/csv`` (both built-in algorithms accept it) from the executors with a
    boto3 ``sagemaker-runtime`` client built from ``aws_conf`` (so executors need boto3; EMR has
    it). The n-th record of a response is the n-th row of its request; a response with a
    different record count fails the task instead of shifting scores onto the wrong rows.
    """
    import pandas as pd
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StructField, StructType

    if algorithm not in {"rcf", "logistic"}:
        raise ValueError(f"algorithm must be 'rcf' or 'logistic', got {algorithm!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    tmp_col = "__sagemaker_features"
    out_fields = [StructField(score_col, DoubleType(), True)]
    if algorithm == "logistic":
        out_fields.append(StructField(predicted_label_col, DoubleType(), True))
    # Arrow cannot carry Vector (UDT) columns through mapInPandas: they are left out of the
    # result; every other input column is passed through unchanged.
    kept = [f.name for f in df.schema.fields if not _is_udt(df, f.name)]
    conf = dict(aws_conf)
    with_array = df.withColumn(tmp_col, vector_to_array(F.col(features_col)))

    def score_partition(batches):
        from runtime.aws import client as aws_client

        runtime = aws_client("sagemaker_runtime", conf)
        for pdf in batches:
            scores: list[float] = []
            labels: list[float | None] = []
            features = pdf[tmp_col].tolist()
            for start in range(0, len(features), batch_size):
                chunk = features[start : start + batch_size]
                response = runtime.invoke_endpoint(
                    EndpointName=endpoint_name,
                    ContentType="text/csv",
                    Accept=accept,
                    Body=_csv_body(chunk),
                )
                parsed = parse_scores(
                    algorithm, response["Body"].read(), response.get("ContentType") or accept
                )
                if len(parsed) != len(chunk):
                    raise SageMakerBackendError(
                        f"endpoint {endpoint_name} returned {len(parsed)} scores for {len(chunk)} rows"
                    )
                scores.extend(p[0] for p in parsed)
                labels.extend(p[1] for p in parsed)
            result = pdf.drop(columns=[tmp_col])
            result[score_col] = pd.Series(scores, index=pdf.index, dtype="float64")
            if algorithm == "logistic":
                result[predicted_label_col] = pd.Series(labels, index=pdf.index, dtype="float64")
            yield result

    return with_array.select(*kept, tmp_col).mapInPandas(
        score_partition, schema=StructType([df.schema[name] for name in kept] + out_fields)
    )


def _is_udt(df: DataFrame, name: str) -> bool:
    from pyspark.sql.types import UserDefinedType

    return isinstance(df.schema[name].dataType, UserDefinedType)


def score_batch(
    trained: SageMakerTrainingResult,
    df: DataFrame,
    sink: Callable[[DataFrame], T],
    *,
    model_version: str,
    aws_conf: dict,
    endpoint_instance_type: str,
    endpoint_instance_count: int = 1,
    keep_endpoint: bool = False,
    name_prefix: str = "fraud",
    features_col: str = "features",
    score_col: str = "score",
    batch_size: int = 500,
    wait_timeout_s: float = 1800,
    poll_s: float = 15,
) -> T:
    """Score ``df`` on a SageMaker endpoint for ``model_version`` and pass the result to ``sink``.

    ``aws_conf`` is the plain ``aws`` config dict (``runtime.aws.client`` builds the boto3
    clients: SageMaker on the driver, SageMaker Runtime on the executors). ``sink`` must run an
    action (e.g. write Parquet): the endpoint is deleted when it returns unless
    ``keep_endpoint``. On any failure the endpoint, its config and the model are deleted before
    the error propagates. Returns what ``sink`` returns.
    """
    from runtime.aws import client as aws_client

    sagemaker = aws_client("sagemaker", aws_conf)
    names = endpoint_names(name_prefix, model_version)
    succeeded = False
    try:
        create_endpoint(
            sagemaker,
            names,
            trained,
            instance_type=endpoint_instance_type,
            instance_count=endpoint_instance_count,
            wait_timeout_s=wait_timeout_s,
            poll_s=poll_s,
        )
        scored = invoke_endpoint_scores(
            df,
            endpoint_name=names.endpoint,
            aws_conf=aws_conf,
            algorithm=trained.algorithm,
            features_col=features_col,
            score_col=score_col,
            batch_size=batch_size,
        )
        try:
            result = sink(scored)
        except Exception as exc:
            raise SageMakerBackendError(
                f"scoring on endpoint {names.endpoint} failed: {_java_error_message(exc)}"
            ) from exc
        succeeded = True
        return result
    finally:
        if not (succeeded and keep_endpoint):
            errors = delete_endpoint(sagemaker, names)
            if errors and succeeded:
                raise SageMakerBackendError(
                    f"scoring finished but cleanup of {names.endpoint} failed: {'; '.join(errors)}"
                )
