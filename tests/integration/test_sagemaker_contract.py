"""Contract tests: the SageMaker backend against moto's ThreadedMotoServer.

What is real here: sagemaker-pyspark's estimator writing RecordIO-protobuf through s3a, its Java
SageMaker/S3/STS clients, our boto3 hosting lifecycle and the executors' InvokeEndpoint calls.
What moto fakes: training jobs complete at once, endpoints are InService at once, and
InvokeEndpoint returns the responses queued through ``/moto-api/static/sagemaker/endpoint-results``
in call order. Failure paths are made by patching moto's in-process backend.

The module builds its own SparkSession with sagemaker-pyspark's jars. Those must be on the JVM's
launch classpath, so if another test already started a JVM without them the module is skipped.
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
import os
import re
from pathlib import Path

import pytest
from aws_local import DUMMY_ENV, REGION, local_aws

pytest.importorskip("sagemaker_pyspark",
                    reason="sagemaker_pyspark not installed (pip install --no-deps sagemaker_pyspark==1.4.5)")
pytest.importorskip("moto.server", reason="moto[server] not installed")
pytest.importorskip("sagemaker", reason="sagemaker SDK (<3) not installed")

import requests
from pyspark import SparkContext
from pyspark.ml.linalg import Vectors
from pyspark.sql import SparkSession

from sagemaker_backend import api as smb
from runtime import aws

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/sagemaker-execution"
BUCKET = "fraud-ml-test"
N_FEATURES = 3
N_ROWS = 20


@pytest.fixture(scope="module")
def moto_url():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
    with local_aws() as url:
        yield url


@pytest.fixture(scope="module")
def aws_conf(moto_url):
    return {
        "region": REGION,
        "endpoint_url": moto_url,
        "endpoints": {
            "s3": None,
            "sagemaker": None,
            "sts": None,
            "sagemaker_runtime": None,
            "kinesis": None,
            "sns": None,
        },
    }


@pytest.fixture(scope="module")
def sm_spark(aws_conf):
    if SparkContext._active_spark_context is not None:
        existing = SparkSession.builder.getOrCreate()
        if not aws.has_sagemaker_classes(existing):
            pytest.skip(
                "a SparkSession without sagemaker-pyspark's jars already runs in this process; "
                "run this module on its own or build the shared session with runtime.aws.sagemaker_jars()"
            )
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("sagemaker-contract")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for key, value in aws.sagemaker_spark_conf().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    jvm_system = spark._jvm.java.lang.System
    # Dummy credentials for the Java SDK's default chain (the JVM may predate this module's env).
    jvm_system.setProperty("aws.accessKeyId", DUMMY_ENV["AWS_ACCESS_KEY_ID"])
    jvm_system.setProperty("aws.secretKey", DUMMY_ENV["AWS_SECRET_ACCESS_KEY"])
    jvm_system.setProperty("aws.region", REGION)
    # ... and for the Python workers that call InvokeEndpoint.
    for key, value in DUMMY_ENV.items():
        spark.sparkContext.environment[key] = value
    aws.configure_s3a(spark, aws_conf)
    aws.client("s3", aws_conf).create_bucket(Bucket=BUCKET)
    yield spark
    for key in DUMMY_ENV:
        spark.sparkContext.environment.pop(key, None)


@pytest.fixture(scope="module")
def sm(aws_conf):
    return aws.client("sagemaker", aws_conf)


@pytest.fixture(scope="module")
def s3(aws_conf):
    return aws.client("s3", aws_conf)


@pytest.fixture(scope="module")
def train_df(sm_spark):
    rows = [(i, Vectors.dense([float(i), 2.0 * i, -1.0]), float(i % 2)) for i in range(N_ROWS)]
    return sm_spark.createDataFrame(rows, ["id", "features", "label"])


def _estimator_clients(spark, aws_conf):
    clients = aws.java_clients(spark, aws_conf)
    return {
        "sagemaker_client": clients["sagemakerClient"],
        "s3_client": clients["s3Client"],
        "sts_client": clients["stsClient"],
    }


def _rcf_estimator(spark, aws_conf, prefix):
    return smb.sagemaker_estimator(
        spark,
        "rcf",
        feature_dim=N_FEATURES,
        hyperparameters={"num_trees": 50, "num_samples_per_tree": 64},
        role_arn=ROLE,
        instance_type="ml.m5.xlarge",
        instance_count=2,
        max_runtime_s=900,
        volume_size_gb=20,
        s3_prefix=f"s3://{BUCKET}/{prefix}",
        region=REGION,
        **_estimator_clients(spark, aws_conf),
    )


@pytest.fixture(scope="module")
def rcf_fit(sm_spark, aws_conf, train_df):
    estimator = _rcf_estimator(sm_spark, aws_conf, "rcf")
    return smb.fit_training_job(estimator, train_df.select("id", "features"), algorithm="rcf")


@pytest.fixture()
def no_hosting_left(sm):
    yield
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []


def _queue_results(moto_url, bodies, content_type="application/json"):
    response = requests.post(
        f"{moto_url}/moto-api/static/sagemaker/endpoint-results",
        json={
            "account_id": ACCOUNT,
            "region": REGION,
            "results": [{"Body": body, "ContentType": content_type} for body in bodies],
        },
        timeout=10,
    )
    response.raise_for_status()


def _collect_sink(columns):
    seen = {}

    def sink(scored_df):
        seen["schema"] = scored_df.schema
        seen["rows"] = {row["id"]: tuple(row[c] for c in columns) for row in scored_df.collect()}
        return len(seen["rows"])

    return sink, seen


# --------------------------------------------------------------------------- training


def test_rcf_training_data_is_recordio_protobuf_with_feature_dim(rcf_fit, s3, train_df):
    from sagemaker.amazon.common import read_recordio
    from sagemaker.amazon.record_pb2 import Record

    prefix = f"rcf/training-input/{rcf_fit.training_job_name}/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    data_keys = [k for k in keys if k.endswith(".pbr")]
    assert data_keys, f"no RecordIO files under {prefix}: {keys}"

    vectors = []
    for key in data_keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        for raw in read_recordio(io.BytesIO(body)):
            record = Record()
            record.ParseFromString(raw)
            tensor = record.features["values"]
            values = list(tensor.float64_tensor.values or tensor.float32_tensor.values)
            assert len(values) == N_FEATURES
            vectors.append(tuple(values))
    expected = {tuple(row.features.toArray().tolist()) for row in train_df.collect()}
    assert len(vectors) == N_ROWS
    assert set(vectors) == expected


def test_rcf_training_job_has_image_hyperparameters_resources_and_role(rcf_fit, sm):
    job = sm.describe_training_job(TrainingJobName=rcf_fit.training_job_name)
    assert job["TrainingJobStatus"] == "Completed"
    assert job["AlgorithmSpecification"]["TrainingImage"] == smb.image_uri("randomcutforest", REGION)
    assert job["AlgorithmSpecification"]["TrainingImage"].endswith("/randomcutforest:1")
    assert job["HyperParameters"] == {
        "feature_dim": str(N_FEATURES),
        "num_trees": "50",
        "num_samples_per_tree": "64",
    }
    assert job["ResourceConfig"] == {
        "InstanceType": "ml.m5.xlarge",
        "InstanceCount": 2,
        "VolumeSizeInGB": 20,
    }
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 900
    assert job["RoleArn"] == ROLE
    channel = job["InputDataConfig"][0]
    assert channel["ContentType"] == "application/x-recordio-protobuf"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"].startswith(f"s3://{BUCKET}/rcf/training-input/")
    assert rcf_fit.model_data_url.startswith(f"s3://{BUCKET}/rcf/training-output/")
    assert rcf_fit.model_data_url.endswith("model.tar.gz")
    assert rcf_fit.role_arn == ROLE


ROOT = Path(__file__).resolve().parents[2]
SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")   # SageMaker's rule for these names


def _resolved(value, template: dict):
    """A template value with its Refs (pseudo parameters: moto's; parameters: their defaults) and
    Fn::Join resolved."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
        return pseudo.get(value["Ref"]) or template["Parameters"][value["Ref"]]["Default"]
    separator, parts = value["Fn::Join"]
    return separator.join(_resolved(part, template) for part in parts)


def _iam_sagemaker_patterns(template_path):
    """The SageMaker resources the stack's EMR role allows (deploy/cdk, synthesised)."""
    template = json.loads(template_path.read_text())
    (policy,) = template["Resources"]["EmrEc2Role"]["Properties"]["Policies"]
    (statement,) = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Sid") == "SageMakerTrainingAndHosting"]
    return [_resolved(r, template) for r in statement["Resource"]], template["Parameters"]["SageMakerNamePrefix"]["Default"]


@pytest.mark.parametrize("kind", ["rcf", "logistic"])
def test_training_names_are_at_most_63_characters_and_allowed_by_the_iam_policy(
    sm_spark, aws_conf, train_df, sm, kind, stack_template
):
    # The prefix the train job builds (sagemaker_backend/stage.py: f"{name_prefix}-{kind}") from the
    # config's name_prefix, which `make stack-conf` takes from the stack (SageMakerNamePrefix); the
    # default RandomNamePolicy made 64-69 characters of it.
    patterns, name_prefix = _iam_sagemaker_patterns(stack_template)
    estimator = smb.sagemaker_estimator(
        sm_spark, kind, feature_dim=N_FEATURES, hyperparameters={}, role_arn=ROLE, instance_type="ml.m5.large",
        instance_count=1, max_runtime_s=600, s3_prefix=f"s3://{BUCKET}/names-{kind}", region=REGION,
        name_prefix=f"{name_prefix}-{kind}", **_estimator_clients(sm_spark, aws_conf),
    )
    planned = smb.estimator_names(estimator)
    frame = train_df if kind == "logistic" else train_df.select("id", "features")
    result = smb.fit_training_job(estimator, frame, algorithm=kind)

    job = sm.describe_training_job(TrainingJobName=result.training_job_name)
    assert job["TrainingJobName"] == result.training_job_name == planned.training_job
    assert re.fullmatch(rf"{name_prefix}-{kind}-\d{{8}}-\d{{6}}-[0-9a-f]{{6}}", job["TrainingJobName"])
    for name in (planned.training_job, planned.model, planned.endpoint_config, planned.endpoint):
        assert len(name) <= 63, f"{name} has {len(name)} characters"
        assert SAGEMAKER_NAME.match(name), name
    # the policy's account and region resolved as moto's
    arns = {
        job["TrainingJobArn"]: "training-job",
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{planned.model}": "model",
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{planned.endpoint_config}": "endpoint-config",
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{planned.endpoint}": "endpoint",
    }
    for arn in arns:
        assert any(fnmatch.fnmatchcase(arn, pattern) for pattern in patterns), f"{arn} not allowed by {patterns}"

    with pytest.raises(smb.SageMakerBackendError, match="already ran training job"):
        smb.fit_training_job(estimator, frame, algorithm=kind)


def test_fit_creates_no_hosting_resources(rcf_fit, sm):
    assert sm.list_models()["Models"] == []
    assert sm.list_endpoints()["Endpoints"] == []


def test_logistic_training_job_carries_linear_learner_settings(sm_spark, aws_conf, train_df, sm, s3):
    from sagemaker.amazon.common import read_recordio
    from sagemaker.amazon.record_pb2 import Record

    estimator = smb.sagemaker_estimator(
        sm_spark,
        "logistic",
        feature_dim=N_FEATURES,
        role_arn=ROLE,
        instance_type="ml.m5.large",
        instance_count=1,
        max_runtime_s=600,
        volume_size_gb=10,
        s3_prefix=f"s3://{BUCKET}/logistic",
        region=REGION,
        hyperparameters={"binary_classifier_model_selection_criteria": "precision_at_target_recall",
                         "positive_example_weight_mult": 7.5},
        **_estimator_clients(sm_spark, aws_conf),
    )
    result = smb.fit_training_job(estimator, train_df, algorithm="logistic")

    job = sm.describe_training_job(TrainingJobName=result.training_job_name)
    params = job["HyperParameters"]
    assert params["predictor_type"] == "binary_classifier"
    assert params["feature_dim"] == str(N_FEATURES)
    assert params["binary_classifier_model_selection_criteria"] == "precision_at_target_recall"
    assert float(params["positive_example_weight_mult"]) == 7.5
    assert job["AlgorithmSpecification"]["TrainingImage"].endswith("/linear-learner:1")
    assert result.image_uri == job["AlgorithmSpecification"]["TrainingImage"]

    prefix = f"logistic/training-input/{result.training_job_name}/"
    labels = []
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]:
        if obj["Key"].endswith(".pbr"):
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            for raw in read_recordio(io.BytesIO(body)):
                record = Record()
                record.ParseFromString(raw)
                tensor = record.label["values"]
                labels.extend(tensor.float64_tensor.values or tensor.float32_tensor.values)
    assert sorted(labels) == sorted(float(i % 2) for i in range(N_ROWS))


def test_failed_training_job_raises_with_reason(sm_spark, aws_conf, train_df, monkeypatch, no_hosting_left):
    from moto.sagemaker import models as moto_sagemaker

    original_init = moto_sagemaker.FakeTrainingJob.__init__

    def failing_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.training_job_status = "Failed"
        self.secondary_status = "Failed"
        self.failure_reason = "AlgorithmError: feature_dim mismatch"

    monkeypatch.setattr(moto_sagemaker.FakeTrainingJob, "__init__", failing_init)
    estimator = _rcf_estimator(sm_spark, aws_conf, "rcf-failed")
    with pytest.raises(smb.TrainingJobFailed, match="feature_dim mismatch|Failed"):
        smb.fit_training_job(estimator, train_df.select("id", "features"), algorithm="rcf")


# --------------------------------------------------------------------------- hosting + scoring


def test_score_batch_maps_queued_scores_to_rows_and_deletes_hosting(
    sm_spark, moto_url, aws_conf, rcf_fit, train_df, sm, no_hosting_left
):
    # One partition so the requests (5 rows each) reach moto's queue in row order.
    bodies = [
        json.dumps({"scores": [{"score": 100.0 + i} for i in range(start, start + 5)]})
        for start in range(0, N_ROWS, 5)
    ]
    _queue_results(moto_url, bodies)
    seen_hosting = {}

    def sink(scored_df):
        endpoint = sm.describe_endpoint(EndpointName="fraud-rcf-v7")
        config = sm.describe_endpoint_config(EndpointConfigName="fraud-rcf-v7-cfg")
        model = sm.describe_model(ModelName="fraud-rcf-v7-mdl")
        seen_hosting.update(endpoint=endpoint, config=config, model=model)
        return {row["id"]: row["score"] for row in scored_df.collect()}

    scores = smb.score_batch(
        rcf_fit,
        train_df.select("id", "features").coalesce(1),
        sink,
        model_version="rcf-v7",
        aws_conf=aws_conf,
        endpoint_instance_type="ml.m5.large",
        batch_size=5,
        poll_s=0.05,
    )

    assert scores == {i: 100.0 + i for i in range(N_ROWS)}
    assert seen_hosting["endpoint"]["EndpointStatus"] == "InService"
    assert seen_hosting["config"]["ProductionVariants"][0]["ModelName"] == "fraud-rcf-v7-mdl"
    assert seen_hosting["config"]["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"
    container = seen_hosting["model"]["PrimaryContainer"]
    assert container["Image"] == rcf_fit.image_uri
    assert container["ModelDataUrl"] == rcf_fit.model_data_url
    assert seen_hosting["model"]["ExecutionRoleArn"] == ROLE


def test_keep_endpoint_leaves_it_and_next_run_reuses_then_deletes(
    sm_spark, moto_url, aws_conf, rcf_fit, train_df, sm, monkeypatch, no_hosting_left
):
    df = train_df.select("id", "features").where("id < 4").coalesce(1)
    # moto answers a repeated (endpoint, body) pair from its cache: score other rows next time.
    other_df = train_df.select("id", "features").where("id >= 4 and id < 8").coalesce(1)
    _queue_results(moto_url, [json.dumps({"scores": [{"score": s} for s in (1.0, 2.0, 3.0, 4.0)]})])
    kwargs = {"model_version": "rcf-v8", "aws_conf": aws_conf, "endpoint_instance_type": "ml.m5.large", "poll_s": 0.05}

    smb.score_batch(rcf_fit, df, lambda d: d.count(), keep_endpoint=True, **kwargs)
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["fraud-rcf-v8"]

    from moto.sagemaker import models as moto_sagemaker

    created_models = []
    original_create_model = moto_sagemaker.SageMakerModelBackend.create_model

    def counting_create_model(self, *args, **kwargs):
        created_models.append(kwargs.get("model_name"))
        return original_create_model(self, *args, **kwargs)

    monkeypatch.setattr(moto_sagemaker.SageMakerModelBackend, "create_model", counting_create_model)
    _queue_results(moto_url, [json.dumps({"scores": [{"score": s} for s in (5.0, 6.0, 7.0, 8.0)]})])
    sink, seen = _collect_sink(["score"])
    assert smb.score_batch(rcf_fit, other_df, sink, **kwargs) == 4
    assert created_models == []  # the InService endpoint was reused
    assert seen["rows"] == {4: (5.0,), 5: (6.0,), 6: (7.0,), 7: (8.0,)}


def test_logistic_scores_and_labels_map_to_rows(sm_spark, moto_url, aws_conf, train_df, no_hosting_left):
    trained = smb.SageMakerTrainingResult(
        algorithm="logistic",
        training_job_name="logistic-job",
        model_data_url=f"s3://{BUCKET}/logistic/model.tar.gz",
        image_uri=smb.image_uri("linear-learner", REGION),
        role_arn=ROLE,
    )
    predictions = [{"score": i / N_ROWS, "predicted_label": float(i >= 10)} for i in range(N_ROWS)]
    _queue_results(moto_url, [json.dumps({"predictions": predictions})])
    sink, seen = _collect_sink(["score", "predicted_label"])
    smb.score_batch(
        trained,
        train_df.coalesce(1),
        sink,
        model_version="lr-1",
        aws_conf=aws_conf,
        endpoint_instance_type="ml.m5.large",
        poll_s=0.05,
    )
    assert seen["rows"] == {i: (i / N_ROWS, float(i >= 10)) for i in range(N_ROWS)}
    assert "features" not in seen["schema"].names  # vectors cannot cross Arrow; documented
    assert {"id", "label", "score", "predicted_label"} <= set(seen["schema"].names)


def test_short_response_fails_clearly_and_leaves_nothing(
    sm_spark, moto_url, aws_conf, rcf_fit, train_df, no_hosting_left
):
    _queue_results(moto_url, [json.dumps({"scores": [{"score": 1.0}]})])  # 1 score for 3 rows
    with pytest.raises(smb.SageMakerBackendError, match="returned 1 scores for 3 rows"):
        smb.score_batch(
            rcf_fit,
            train_df.select("id", "features").limit(3).coalesce(1),
            lambda d: d.collect(),
            model_version="rcf-short",
            aws_conf=aws_conf,
            endpoint_instance_type="ml.m5.large",
            poll_s=0.05,
        )


def test_endpoint_creation_failure_raises_reason_and_cleans_up(
    sm_spark, aws_conf, rcf_fit, train_df, monkeypatch, no_hosting_left
):
    from moto.sagemaker import models as moto_sagemaker

    original_init = moto_sagemaker.FakeEndpoint.__init__

    def failing_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.endpoint_status = "Failed"
        self.failure_reason = "ResourceLimitExceeded: ml.m5.large for endpoint usage"

    monkeypatch.setattr(moto_sagemaker.FakeEndpoint, "__init__", failing_init)
    sink_called = []
    with pytest.raises(smb.EndpointFailed, match="ended Failed: ResourceLimitExceeded"):
        smb.score_batch(
            rcf_fit,
            train_df.select("id", "features"),
            sink_called.append,
            model_version="rcf-broken",
            aws_conf=aws_conf,
            endpoint_instance_type="ml.m5.large",
            poll_s=0.05,
        )
    assert sink_called == []


@pytest.mark.filterwarnings("ignore:Exception\\(Throttled\\):UserWarning")
def test_throttled_create_endpoint_raises_and_cleans_up(
    sm_spark, aws_conf, rcf_fit, train_df, monkeypatch, no_hosting_left
):
    from moto.sagemaker import models as moto_sagemaker
    from moto.sagemaker.exceptions import SagemakerClientError

    class Throttled(SagemakerClientError):
        code = "ThrottlingException"

    def throttled(self, *args, **kwargs):
        raise Throttled("Rate exceeded")

    monkeypatch.setattr(moto_sagemaker.SageMakerModelBackend, "create_endpoint", throttled)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the SDK's retries would only slow the test
    with pytest.raises(smb.SageMakerThrottled, match="CreateEndpoint fraud-rcf-busy.*Throttling"):
        smb.score_batch(
            rcf_fit,
            train_df.select("id", "features"),
            lambda d: d.count(),
            model_version="rcf-busy",
            aws_conf=aws_conf,
            endpoint_instance_type="ml.m5.large",
            poll_s=0.05,
        )


# --------------------------------------------------------------------------- s3a + helpers


def test_s3a_parquet_round_trip_through_the_endpoint(sm_spark, train_df, s3):
    path = f"s3a://{BUCKET}/lake/roundtrip"
    train_df.select("id", "label").coalesce(1).write.mode("overwrite").parquet(path)
    assert sm_spark.read.parquet(path).count() == N_ROWS
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="lake/roundtrip/")["Contents"]]
    assert any(k.endswith(".parquet") for k in keys)


def test_sagemaker_jars_put_sdk_jars_before_the_old_bundle():
    jars = [os.path.basename(j) for j in aws.sagemaker_jars()]
    assert jars[0].startswith("sagemaker-spark")
    assert jars.index("aws-java-sdk-bundle-1.11.901.jar") > jars.index("aws-java-sdk-core-1.12.262.jar")
    if os.path.exists(aws.PROTOBUF_JAR):
        assert jars[-1].startswith("protobuf")


def test_endpoint_names_are_per_version_and_valid():
    names = smb.endpoint_names("fraud", "rcf/2024-06-01T00:00:00+v1_" + "x" * 80)
    for name in (names.model, names.endpoint_config, names.endpoint):
        assert len(name) <= 63
        assert all(c.isalnum() or c == "-" for c in name)
    assert smb.endpoint_names("fraud", "v1") != smb.endpoint_names("fraud", "v2")
