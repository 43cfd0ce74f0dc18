"""The train and score jobs with ``models.backend=sagemaker``, end to end against moto.

Each job runs in a subprocess (``python -m jobs ...``) so it starts its own JVM with
sagemaker-pyspark's jars, exactly as a user would run it; the tests only talk to moto (boto3) and
read the files the jobs write (pyarrow), so this module starts no Spark itself.

The feature table is written directly with pyarrow as one Parquet file in a fixed row order:
Spark reads it as one partition, so the score job sends each endpoint one request whose rows are
in file order, and the results queued in moto (a FIFO shared by all endpoints, consumed RCF first,
then logistic: the job materialises the RCF scores before calling the next endpoint) map back to
known rows.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aws_local import DUMMY_ENV, REGION, local_aws

pytest.importorskip("sagemaker_pyspark",
                    reason="sagemaker_pyspark not installed (pip install --no-deps sagemaker_pyspark==1.4.5)")
pytest.importorskip("moto.server", reason="moto[server] not installed")
pytest.importorskip("sagemaker", reason="sagemaker SDK (<3) not installed")

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import requests
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"  # moto's default account
BUCKET = "fraud-ml-jobs"
START = dt.date(2018, 4, 1)
DAYS = 20
ROWS_PER_DAY = 12
SCORE_DATE = START + dt.timedelta(days=DAYS - 1)
NULL_ROW = 5  # the row of SCORE_DATE whose last feature is null: not sent, null scores
SIGMAS = 2.0


def _feature_cols() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from features.datasets import dataset as dataset_named
    from runtime.config import load_config

    return dataset_named("transactions").feature_columns(load_config(None, ["dataset=transactions"]))


FEATURES = _feature_cols()


def _invoke_endpoint_keyed_by_path(original):
    """moto 5.2 quirk: for a text/csv InvokeEndpoint it reads EndpointName from the form-parsed body
    (None), so it caches answers per body across *all* endpoints and the logistic endpoint would get
    the RCF endpoint's answer to the same rows. Take the name from the URL path instead."""

    def invoke_endpoint(self):
        name = self.path.split("/")[2]
        parsed = self._get_params()
        self._get_params = lambda: {**parsed, "EndpointName": name}
        return original(self)

    return invoke_endpoint


@pytest.fixture(scope="module")
def moto_url():
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    patch = pytest.MonkeyPatch()
    patch.setattr(SageMakerRuntimeResponse, "invoke_endpoint",
                  _invoke_endpoint_keyed_by_path(SageMakerRuntimeResponse.invoke_endpoint))
    try:
        with local_aws() as url:
            yield url
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def aws_env():
    with pytest.MonkeyPatch.context() as mp:
        for key, value in DUMMY_ENV.items():
            mp.setenv(key, value)
        yield dict(DUMMY_ENV)


@pytest.fixture(scope="module")
def clients(moto_url, aws_env):
    def make(service):
        return boto3.client(service, region_name=REGION, endpoint_url=moto_url)

    return {name: make(name) for name in ("s3", "iam", "sagemaker")}


@pytest.fixture(scope="module")
def role_arn(clients):
    clients["s3"].create_bucket(Bucket=BUCKET)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
    role = clients["iam"].create_role(RoleName="fraud-anomaly-sagemaker-execution",
                                      AssumeRolePolicyDocument=json.dumps(trust))
    return role["Role"]["Arn"]


def _feature_table() -> pa.Table:
    rows = []
    for day in range(DAYS):
        date = START + dt.timedelta(days=day)
        for i in range(ROWS_PER_DAY):
            tx = day * ROWS_PER_DAY + i
            row = {
                "transaction_id": tx,
                "event_time": dt.datetime.combine(date, dt.time(hour=i)),
                "customer_id": i % 5,
                "terminal_id": tx % 7,
                "date": date,
                "label": int(i == 3),
            }
            for j, name in enumerate(FEATURES):
                row[name] = float((tx * (j + 3)) % 17) + 0.5 * j
            if date == SCORE_DATE and i == NULL_ROW:
                row[FEATURES[-1]] = None
            rows.append(row)
    schema = pa.schema([("transaction_id", pa.int64()), ("event_time", pa.timestamp("us")),
                        ("customer_id", pa.int64()), ("terminal_id", pa.int64()), ("date", pa.date32()),
                        ("label", pa.int32())] + [(name, pa.float64()) for name in FEATURES])
    return pa.Table.from_pylist(rows, schema=schema)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, moto_url, role_arn):
    base = tmp_path_factory.mktemp("sagemaker-jobs")
    features = base / "lake" / "features" / "transactions"
    features.mkdir(parents=True)
    pq.write_table(_feature_table(), features / "part-00000.parquet")  # one file, one partition
    conf = {
        "spark": {"master": "local[2]", "driver_memory": "2g", "shuffle_partitions": 2, "log_level": "ERROR",
                  "conf": {"spark.ui.enabled": "false"}},
        "storage": {"lake": str(base / "lake"), "format": "parquet"},
        "dataset": "transactions",
        "scoring": {"risk_method": "noisy_or", "anomaly_risk": 0.5},  # pinned: the test recomputes risk
        "train": {"rcf": {"num_trees": 50, "num_samples_per_tree": 64, "threshold_sigmas": SIGMAS}},
        "models": {"backend": "sagemaker",
                   "sagemaker": {"role_arn": role_arn, "s3_prefix": f"s3://{BUCKET}/sagemaker",
                                 "training_instance_type": "ml.m5.large", "volume_size_gb": 10}},
    }
    (base / "sagemaker.yaml").write_text(yaml.safe_dump(conf))
    return base


def _run_job(workdir: Path, moto_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **DUMMY_ENV, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "jobs", *args, "--conf", str(workdir / "sagemaker.yaml"),
           "--dataset", "transactions", "--set", "models.backend=sagemaker",
           "--set", f"aws.endpoint_url={moto_url}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    print(" ".join(cmd[2:]), "\n", proc.stdout, proc.stderr[-4000:], sep="")
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def trained(workdir, moto_url, clients):
    proc = _run_job(workdir, moto_url, "train")
    return proc


def _jobs(sagemaker) -> dict[str, dict]:
    names = [j["TrainingJobName"] for j in sagemaker.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]]
    return {name: sagemaker.describe_training_job(TrainingJobName=name) for name in names}


def test_train_runs_one_rcf_and_one_linear_learner_job_with_feature_dim(trained, clients):
    jobs = _jobs(clients["sagemaker"])
    images = sorted(job["AlgorithmSpecification"]["TrainingImage"].rsplit("/", 1)[-1] for job in jobs.values())
    assert images == ["linear-learner:1", "randomcutforest:1"]
    for job in jobs.values():
        assert job["TrainingJobStatus"] == "Completed"
        assert job["HyperParameters"]["feature_dim"] == str(len(FEATURES))
        assert job["ResourceConfig"]["InstanceType"] == "ml.m5.large"
        assert job["ResourceConfig"]["VolumeSizeInGB"] == 10
        assert job["RoleArn"].endswith(":role/fraud-anomaly-sagemaker-execution")
    rcf = next(j for j in jobs.values() if "randomcutforest" in j["AlgorithmSpecification"]["TrainingImage"])
    assert rcf["TrainingJobName"].startswith("fraud-rcf-")
    assert rcf["HyperParameters"]["num_trees"] == "50"
    assert rcf["HyperParameters"]["num_samples_per_tree"] == "64"
    logistic = next(j for j in jobs.values() if "linear-learner" in j["AlgorithmSpecification"]["TrainingImage"])
    assert logistic["HyperParameters"]["predictor_type"] == "binary_classifier"
    assert logistic["HyperParameters"]["binary_classifier_model_selection_criteria"] == "f_beta"
    assert logistic["HyperParameters"]["positive_example_weight_mult"] == "balanced"


def test_train_creates_no_endpoint(trained, clients):
    assert clients["sagemaker"].list_endpoints()["Endpoints"] == []
    assert clients["sagemaker"].list_models()["Models"] == []


def test_train_registers_sagemaker_kinds_with_pending_metrics(trained, workdir, clients):
    root = workdir / "lake" / "models" / "transactions"
    assert sorted(p.name for p in root.iterdir()) == ["sagemaker-logistic", "sagemaker-rcf"]  # no embedded kinds
    jobs = _jobs(clients["sagemaker"])
    for kind in ("sagemaker-rcf", "sagemaker-logistic"):
        info = json.loads((root / kind / "v0001" / "version.json").read_text())
        assert json.loads((root / kind / "champion.json").read_text())["version"] == "v0001"
        assert info["backend"] == "sagemaker" and info["metrics_status"] == "pending"
        assert info["metrics"]["average_precision"] is None
        params = info["params"]
        job = jobs[params["training_job_name"]]
        assert params["model_data_url"] == job["ModelArtifacts"]["S3ModelArtifacts"]
        assert params["image_uri"] == job["AlgorithmSpecification"]["TrainingImage"]
        assert params["hyperparameters"] == job["HyperParameters"]
        assert params["feature_cols"] == FEATURES
        assert info["data_window"]["train_from"] == str(START)
        saved = json.loads((root / kind / "v0001" / "model" / "sagemaker.json").read_text())
        assert saved["training_job_name"] == params["training_job_name"]


def _queue(moto_url: str, bodies: list[dict]) -> None:
    response = requests.post(
        f"{moto_url}/moto-api/static/sagemaker/endpoint-results",
        json={"account_id": ACCOUNT, "region": REGION,
              "results": [{"Body": json.dumps(body), "ContentType": "application/json"} for body in bodies]},
        timeout=10,
    )
    response.raise_for_status()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_score_maps_endpoint_scores_to_rows_and_leaves_no_endpoint(trained, workdir, moto_url, clients):
    day = DAYS - 1
    ids = [day * ROWS_PER_DAY + i for i in range(ROWS_PER_DAY)]
    sent = [tx for i, tx in enumerate(ids) if i != NULL_ROW]  # in file order
    rcf_scores = {tx: 1.0 + 0.01 * n for n, tx in enumerate(sent)}
    rcf_scores[sent[2]] = 5.0  # the RCF outlier
    probabilities = {tx: 0.02 * (n + 1) for n, tx in enumerate(sent)}
    probabilities[sent[7]] = 0.9  # the logistic hit
    _queue(moto_url, [
        {"scores": [{"score": rcf_scores[tx]} for tx in sent]},
        {"predictions": [{"score": probabilities[tx], "predicted_label": float(probabilities[tx] > 0.5)}
                         for tx in sent]},
    ])

    proc = _run_job(workdir, moto_url, "score", "--date", str(SCORE_DATE))

    assert "sagemaker-rcf/v0001" in proc.stdout and "deleted afterwards" in proc.stdout
    sm = clients["sagemaker"]
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []

    table = pq.read_table(workdir / "lake" / "scores" / "transactions").to_pylist()
    rows = {row["transaction_id"]: row for row in table}
    assert sorted(rows) == ids
    values = list(rcf_scores.values())
    mean = sum(values) / len(values)
    threshold = mean + SIGMAS * math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    for tx in sent:
        row = rows[tx]
        assert row["rcf_score"] == pytest.approx(rcf_scores[tx])
        assert row["logistic_score"] == pytest.approx(probabilities[tx])
        r_rcf = _sigmoid(4.0 * (rcf_scores[tx] / threshold - 1.0))
        risk = 1.0 - (1.0 - r_rcf) * (1.0 - probabilities[tx])  # logistic threshold 0.5: r_log = p
        assert row["risk"] == pytest.approx(risk, rel=1e-6)
        assert row["is_anomaly"] == (risk >= 0.5)
        assert row["rcf_version"] == "sagemaker-rcf/v0001"
        assert row["logistic_version"] == "sagemaker-logistic/v0001"
    assert rows[sent[2]]["reasons"] == ["rcf"] and rows[sent[2]]["is_anomaly"]
    assert rows[sent[7]]["reasons"] == ["logistic"] and rows[sent[7]]["is_anomaly"]
    assert rows[sent[0]]["reasons"] == [] and not rows[sent[0]]["is_anomaly"]
    skipped = rows[ids[NULL_ROW]]
    assert skipped["rcf_score"] is None and skipped["logistic_score"] is None
    # scoring.risk clips a null probability to 1e-12 before the logit: risk is ~0, not exactly 0.
    assert skipped["risk"] == pytest.approx(0.0, abs=1e-9) and not skipped["is_anomaly"]
    assert skipped["reasons"] == []
