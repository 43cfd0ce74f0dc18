"""Contract tests of the EMR packaging: what the job config, the EMR steps, the IAM policies, the
Kinesis source and the stream's command line promise each other, checked without AWS.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
import emr_steps  # noqa: E402  (deploy/emr_steps.py: the EMR steps)
import stack_config  # noqa: E402  (deploy/stack_config.py: the config from the stack's outputs)

from runtime.aws import endpoint_for  # noqa: E402
from runtime.config import load_config  # noqa: E402
from runtime.sources import (KinesisSettings, StreamConfigError, check_source_trigger,  # noqa: E402
                             kinesis_options, kinesis_source)

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- Kinesis source


class _RecordingReader:
    """Stands in for ``spark.readStream``: records the format and options the source sets."""

    def __init__(self):
        self.format_name, self.options = None, {}

    def format(self, name):
        self.format_name = name
        return self

    def option(self, key, value):
        assert key not in self.options, f"{key} set twice"
        self.options[key] = value
        return self

    def load(self):
        return self


class _FakeSpark:
    def __init__(self):
        self.readStream = _RecordingReader()


def test_kinesis_source_sets_the_regional_endpoint_and_signing_region_with_no_override():
    config = load_config(ROOT / "conf/emr.yaml")
    assert config["aws"]["endpoint_url"] is None and config["aws"]["endpoints"]["kinesis"] is None
    spark = _FakeSpark()
    kinesis_source(spark, KinesisSettings(stream_name="fraud-anomaly-transactions", region=config["aws"]["region"],
                                          endpoint_url=endpoint_for("kinesis", config["aws"]),
                                          starting_position="TRIM_HORIZON"))
    options = spark.readStream.options
    assert spark.readStream.format_name == "aws-kinesis"
    assert options["kinesis.endpointUrl"] == "https://kinesis.us-east-1.amazonaws.com"
    assert options["kinesis.kinesisRegion"] == "us-east-1"
    assert options["kinesis.region"] == "us-east-1"
    assert options["kinesis.streamName"] == "fraud-anomaly-transactions"


def test_kinesis_endpoint_override_wins_and_the_signing_region_stays_the_configured_one():
    options = kinesis_options(KinesisSettings(stream_name="s", region="eu-west-1",
                                              endpoint_url="http://127.0.0.1:4566", starting_position="LATEST"))
    assert options["kinesis.endpointUrl"] == "http://127.0.0.1:4566"
    assert options["kinesis.kinesisRegion"] == "eu-west-1"


def test_kinesis_refuses_available_now_but_landing_keeps_it():
    with pytest.raises(StreamConfigError, match="--trigger available-now.*Kinesis connector does not support"):
        check_source_trigger("kinesis", "available-now")
    assert check_source_trigger("kinesis", "30 seconds") == "30 seconds"
    assert check_source_trigger("landing", "available-now") == "available-now"


def _stream_job(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "jobs", "stream", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("trigger_args", [["--trigger", "available-now"], ["--set", "stream.trigger=available-now"]],
                         ids=["option", "config"])
def test_stream_with_kinesis_and_available_now_exits_2_naming_the_trigger(trigger_args):
    done = _stream_job("--conf", "conf/emr.yaml", "--source", "kinesis", "--no-alerts", *trigger_args)
    assert done.returncode == 2, done.stderr
    assert "available-now" in done.stderr
    assert "Kinesis connector does not support Trigger.AvailableNow" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- one source of names
# The names come from the stack's outputs (deploy/stack_config.py); tests/integration/test_stack.py
# deploys the stack into moto and checks that the deployed policies allow every name the written
# config uses. Here: the writer replaces exactly the names, and the steps call the wrapper.

OUTPUTS = {  # what a deployed stack's outputs look like (deploy/cdk/stack.py)
    "Region": "eu-west-1", "DatasetName": "transactions", "LakeUri": "s3a://acme-lake/fa",
    "LandingUri": "s3://acme-lake/fa/landing/transactions", "ArtifactsUri": "s3://acme-artifacts/fa",
    "ConfUri": "s3://acme-artifacts/fa/dist/conf/emr.yaml", "StreamName": "fa-transactions",
    "AlertsTopicArn": "arn:aws:sns:eu-west-1:210987654321:fa-alerts",
    "SageMakerRoleArn": "arn:aws:iam::210987654321:role/fa-sagemaker-execution",
    "SageMakerS3Prefix": "s3://acme-lake/fa/sagemaker", "SageMakerNames": "acme",
}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def test_the_config_writer_replaces_exactly_the_names_with_the_stack_outputs(tmp_path):
    written = tmp_path / "emr.yaml"
    stack_config.write(OUTPUTS, written, "fa", steps_dir=tmp_path / "steps")
    base, new = _flat(yaml.safe_load((ROOT / "conf/emr.yaml").read_text())), _flat(yaml.safe_load(written.read_text()))
    changed = {key: new[key] for key in new if base.get(key) != new[key]}
    assert changed == {
        "aws.region": "eu-west-1", "dataset": "transactions", "storage.lake": "s3a://acme-lake/fa",
        "models.sagemaker.role_arn": "arn:aws:iam::210987654321:role/fa-sagemaker-execution",
        "models.sagemaker.s3_prefix": "s3://acme-lake/fa/sagemaker", "models.sagemaker.name_prefix": "acme",
        "stream.kinesis.stream_name": "fa-transactions", "stream.replay.stream_name": "fa-transactions",
        "stream.alerts.topic_arn": "arn:aws:sns:eu-west-1:210987654321:fa-alerts",
        "stream.landing": "s3a://acme-lake/fa/landing/transactions/*/*/*/*"}
    assert set(base) <= set(new)
    config = load_config(written)   # a valid config
    assert config["stream"]["alerts"]["topic_arn"].endswith(":fa-alerts")
    (step,) = json.loads((tmp_path / "steps" / "score-nightly.json").read_text())
    assert step["Args"][2] == OUTPUTS["ConfUri"]


def test_the_config_writer_names_a_missing_output(tmp_path):
    outputs = {k: v for k, v in OUTPUTS.items() if k != "AlertsTopicArn"}
    with pytest.raises(stack_config.StackOutputsError, match="AlertsTopicArn"):
        stack_config.write(outputs, tmp_path / "emr.yaml", "fa")
    assert not (tmp_path / "emr.yaml").exists()


def _step_args() -> dict[str, list[str]]:
    return {name: step["HadoopJarStep"]["Args"]
            for name, step in emr_steps.steps(OUTPUTS["ArtifactsUri"], "transactions").items()}


def test_the_stream_step_uses_a_processing_time_trigger_and_ends():
    args = _step_args()["stream.json"]
    assert args[args.index("--source") + 1] == "kinesis"
    trigger = args[args.index("--trigger") + 1]
    assert trigger != "available-now"
    assert check_source_trigger("kinesis", trigger) == trigger
    assert float(args[args.index("--run-seconds") + 1]) > 0


def test_every_step_runs_the_wrapper_with_the_uploaded_config():
    steps = _step_args()
    assert set(steps) == {"features.json", "train.json", "score-nightly.json", "stream.json"}
    for name, args in steps.items():
        assert args[0] == "/usr/lib/fraud-anomaly/bin/fraud-submit", name
        assert args[2] == OUTPUTS["ConfUri"], name
        assert (ROOT / "jobs" / f"{args[1]}.py").exists(), f"{name}: no jobs/{args[1]}.py"
