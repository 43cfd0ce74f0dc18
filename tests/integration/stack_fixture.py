"""The S3 end-to-end fixture: the AWS stack (deploy/cdk) synthesised, deployed into moto's
CloudFormation, and the pipeline run once on what it created, with every name read from the
stack's outputs. test_stack.py checks the stack and the names; test_s3a_lake.py checks what the
jobs wrote on S3 (Delta logs, QuickSight, Athena, the stream's sink). One moto server (its own
process on a free loopback port) and one JVM serve both.

moto's CloudFormation cannot create Firehose delivery streams, EventBridge Scheduler schedules,
API Gateway stages or SNS subscriptions, so the deployment uses the stack's own switches
(WithFirehose, WithNightlySchedule, WithApi false; no AlertEmail) instead of faking them; the EMR
cluster is created (WithCluster true).

The pipeline, in one process: generate -> features -> train -> nightly score -> summary on the
stack's lake bucket; the stream job on landing files laid out as Firehose writes them (under the
stack's landing prefix, YYYY/MM/DD/HH/), with its sink under ``firehose_run/``; then a replay of a
small JSON file into the stack's Kinesis stream and the stream job on it, alerting to the stack's
topic, which an SQS queue subscribed here receives.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from aws_local import REGION, moto_server_process
from lakes import run_jobs_in_one_process
from test_stream import make_transactions

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
import stack_config  # noqa: E402  (deploy/stack_config.py, the config writer of make stack-conf)

STACK = "fraud-anomaly"
TEMPLATE = f"{STACK}.template.json"
# The switches a local CloudFormation needs (module docstring); the names are left to the stack.
MOTO_PARAMETERS = {"WithFirehose": "false", "WithNightlySchedule": "false", "WithApi": "false",
                   "WithCluster": "true", "ShardCount": "1"}
STREAM_EVENTS = 150             # replayed into Kinesis
LANDING_GOOD = 200              # valid events in the Firehose-shaped landing files (+ one bad line)
LANDING_DATE = "2018-05-01"     # the day after the lake's last date
FIREHOSE_RUN = "firehose_run"   # the landing stream's sink, dead letters and checkpoint, under storage.lake


@pytest.fixture(scope="session")
def stack_template(tmp_path_factory):
    out = tmp_path_factory.mktemp("cdk")
    started = time.perf_counter()
    env = {**os.environ, "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1",
           "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    done = subprocess.run([sys.executable, str(ROOT / "deploy/cdk/app.py"), "--outdir", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"synth failed (make install brings aws-cdk-lib):\n{done.stderr[-3000:]}"
    print(f"synth: {time.perf_counter() - started:.1f} s")
    return out / TEMPLATE


@pytest.fixture(scope="session")
def stack_moto():
    with moto_server_process() as url:
        yield url


@pytest.fixture(scope="session")
def stack(stack_template, stack_moto):
    """The deployed stack's outputs."""
    cloudformation = boto3.client("cloudformation", region_name=REGION, endpoint_url=stack_moto)
    started = time.perf_counter()
    cloudformation.create_stack(StackName=STACK, TemplateBody=stack_template.read_text(),
                                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in MOTO_PARAMETERS.items()],
                                Capabilities=["CAPABILITY_NAMED_IAM"])
    (deployed,) = cloudformation.describe_stacks(StackName=STACK)["Stacks"]
    assert deployed["StackStatus"] == "CREATE_COMPLETE", deployed.get("StackStatusReason")
    print(f"moto create_stack: {time.perf_counter() - started:.1f} s")
    return stack_config.stack_outputs(STACK, REGION, stack_moto)


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) and key != "conf" else value
    return out


def dotted(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys |= dotted(value, f"{prefix}{key}.") if isinstance(value, dict) and key != "conf" else {prefix + key}
    return keys


def local_settings(moto: str) -> dict:
    """What running on this machine changes: no resource names (the fixture checks)."""
    defaults = yaml.safe_load((ROOT / "runtime/defaults.yaml").read_text())
    return {
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "2g", "extra_jars": "auto",
                  "delta_package": defaults["spark"]["delta_package"], "conf": {"spark.ui.enabled": "false"}},
        "aws": {"endpoint_url": moto},
        "models": {"backend": "embedded"},
        "generate": {"partitions": 2, "transactions": {"customers": 120, "terminals": 240, "days": 30}},
        "train": {"test_days": 4, "rcf": {"num_trees": 50, "num_samples_per_tree": 64},
                  "logistic": {"reg_params": [0.001], "validation_days": 4}},
        "stream": {"kinesis": {"connector": "qubole", "max_fetch_records": 1000},
                   "allowed_lateness_seconds": 400 * 86400, "scorer": "test_stream:deterministic_scorer",
                   "alerts": {"rate_per_second": 1000}},
    }


def landing_lines() -> list[str]:
    """LANDING_GOOD valid transactions on LANDING_DATE, 6 customers and 4 terminals, then a line that is not JSON."""
    lines = []
    for i in range(LANDING_GOOD):
        lines.append(json.dumps({
            "transaction_id": f"live{i:04d}", "event_time": f"{LANDING_DATE}T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
            "customer_id": f"c{i % 6}", "terminal_id": f"k{i % 4}", "amount": 5.0 + (i * 37) % 200,
            "label": 0}))
    return lines + ["this is not json"]


def summaries(stdout: str) -> list[tuple[str, dict]]:
    """(job, its JSON summary) in run order: the last JSON line before each ``@@ <job> exit 0``."""
    out, last = [], None
    for line in stdout.splitlines():
        if line.startswith("{"):
            last = json.loads(line)
        elif line.startswith("@@ "):
            out.append((line.split()[1], last))
    return out


@pytest.fixture(scope="session")
def stack_pipeline(stack, stack_moto, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack_pipeline")
    written = tmp / "emr.yaml"
    stack_config.write(stack, written, STACK)
    local = local_settings(stack_moto)
    overlap = {k for k in dotted(local) if k in stack_config.NAME_KEYS or k == "stream.landing"}
    assert overlap == set(), f"local settings must not name resources: {overlap}"
    conf = tmp / "local.yaml"
    config = merge(yaml.safe_load(written.read_text()), local)
    conf.write_text(yaml.safe_dump(config))
    lake = config["storage"]["lake"]
    # the alerts: an SQS queue subscribed to the stack's topic (raw delivery: the message attributes)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=stack_moto)
    queue_url = sqs.create_queue(QueueName="stack-alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name=REGION, endpoint_url=stack_moto).subscribe(
        TopicArn=stack["AlertsTopicArn"], Protocol="sqs", Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"})
    # landing files as Firehose lays them out under the stack's landing prefix (two files)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=stack_moto)
    bucket, prefix = stack["LandingUri"][len("s3://"):].split("/", 1)
    lines = landing_lines()
    half = len(lines) // 2
    for n, part in enumerate((lines[:half], lines[half:])):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{LANDING_DATE.replace('-', '/')}/00/part-{n}.json",
                      Body="\n".join(part) + "\n")
    events = make_transactions(STREAM_EVENTS, seed=21)
    (tmp / "events.json").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    common = ["--conf", str(conf), "--json"]
    firehose_run = [f"--output={lake}/{FIREHOSE_RUN}/stream", f"--checkpoint={lake}/{FIREHOSE_RUN}/checkpoint",
                    f"--dead-letter={lake}/{FIREHOSE_RUN}/dead_letter"]
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as env:
        # moto answers JSON, not CBOR: the stream job turns CBOR off for a local endpoint when it
        # starts the JVM, but here the JVM is the batch jobs' (runtime.sources.kinesis_session_settings)
        env.setenv("AWS_CBOR_DISABLE", "true")
        stdout = run_jobs_in_one_process([
            ["generate", *common], ["features", *common], ["train", *common, "--model", "all"],
            ["score", *common, "--last-days", "2"], ["summary", *common],
            ["stream", *common, "--source", "landing", "--trigger", "available-now", "--no-alerts", *firehose_run],
            ["replay", *common, "--mode", "kinesis", "--input", str(tmp / "events.json"), "--format", "json",
             "--rate", "0"],
            ["stream", *common, "--source", "kinesis", "--trigger", "3 seconds", "--alerts", "--stop-when-idle", "8",
             "--run-seconds", "300"],
        ], tmp, timeout=1200, pythonpath=[str(Path(__file__).parent)])
    print(f"pipeline on the stack: {time.perf_counter() - started:.1f} s")
    print("\n".join(line for line in stdout.splitlines() if line.startswith(("@@", "{"))))
    ran = summaries(stdout)
    return {"summaries": dict(ran[:5] + ran[6:7]), "landing_stream": ran[5][1], "kinesis_stream": ran[7][1],
            "jobs": [job for job, _ in ran], "events": events, "sqs": sqs, "queue_url": queue_url,
            "stdout": stdout, "tmp": tmp, "lake": lake, "config": config}
