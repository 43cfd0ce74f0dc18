"""Contract tests of the EMR packaging: what the job config, the EMR steps, the IAM policies, the
Kinesis source and the stream's command line promise each other, checked without AWS.
"""
from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
import render  # noqa: E402  (deploy/render.py, a script beside the files it writes)

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


def _policy(name: str) -> dict:
    return json.loads((ROOT / "deploy/iam" / name).read_text())


def _resources(policy: dict, sid: str) -> list[str]:
    (statement,) = [s for s in policy["Statement"] if s["Sid"] == sid]
    resource = statement["Resource"]
    return [resource] if isinstance(resource, str) else resource


def _allowed(arn: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(arn, pattern) for pattern in patterns)


def _s3_object(uri: str, leaf: str = "part-0000.parquet") -> str:
    return "arn:aws:s3:::" + re.sub(r"^s3a?://", "", uri).rstrip("/") + "/" + leaf


def _step_args() -> dict[str, list[str]]:
    out = {}
    for path in sorted((ROOT / "deploy/steps").glob("*.json")):
        (step,) = json.loads(path.read_text())
        out[path.name] = step["Args"]
    return out


def disagreements(conf: dict, steps: dict[str, list[str]], emr_policy: dict, sm_policy: dict,
                  readme: str) -> list[str]:
    """What the config, steps, IAM policies and README's create-cluster disagree on (empty: none)."""
    problems = []
    with tempfile.TemporaryDirectory() as folder:
        conf_file = Path(folder) / "emr.yaml"
        conf_file.write_text(yaml.safe_dump(conf))
        config = load_config(conf_file)
    region = config["aws"]["region"]
    sm = config["models"]["sagemaker"]
    account = sm["role_arn"].split(":")[4]
    stream = config["stream"]
    lake_rw = _resources(emr_policy, "LakeReadWrite")
    checks = [
        (f"arn:aws:kinesis:{region}:{account}:stream/{stream['kinesis']['stream_name']}",
         _resources(emr_policy, "StreamRead"), "stream.kinesis.stream_name vs StreamRead"),
        (f"arn:aws:kinesis:{region}:{account}:stream/{stream['replay']['stream_name']}",
         _resources(emr_policy, "ReplayWrite"), "stream.replay.stream_name vs ReplayWrite"),
        (stream["alerts"]["topic_arn"], _resources(emr_policy, "Alerts"), "stream.alerts.topic_arn vs Alerts"),
        (sm["role_arn"], _resources(emr_policy, "PassOnlyTheExecutionRole"), "role_arn vs PassRole"),
        (_s3_object(sm["s3_prefix"]), lake_rw, "s3_prefix vs LakeReadWrite"),
        (_s3_object(sm["s3_prefix"]), _resources(sm_policy, "TrainingDataAndArtifacts"),
         "s3_prefix vs the SageMaker execution role"),
        (f"arn:aws:sagemaker:{region}:{account}:training-job/{sm['name_prefix']}-rcf-20260131-120000-abcdef",
         _resources(emr_policy, "SageMakerTrainingAndHosting"), "name_prefix vs training-job patterns"),
        (f"arn:aws:sagemaker:{region}:{account}:endpoint/{sm['name_prefix']}-rcf-transactions-v0001",
         _resources(emr_policy, "SageMakerTrainingAndHosting"), "name_prefix vs endpoint patterns"),
    ]
    for key in ("stream.output", "stream.checkpoint", "stream.dead_letter", "features", "scores", "models"):
        checks.append((_s3_object(config.path(key, "transactions")), lake_rw, f"{key} vs LakeReadWrite"))
    for name, args in steps.items():
        conf_uri = args[2]
        checks.append((_s3_object(conf_uri, ""), _resources(emr_policy, "ArtifactsRead"),
                       f"{name}'s config {conf_uri} vs ArtifactsRead"))
    cluster = re.search(r"aws emr create-cluster(?:.*\\\n)*.*", readme)
    if not cluster:
        problems.append("README: no `aws emr create-cluster` command")
    else:
        words = shlex.split(cluster.group(0).replace("\\\n", " "))
        log_uri = words[words.index("--log-uri") + 1]
        checks.append((_s3_object(log_uri, "j-ABC/node/i-1/applications/spark.gz"),
                       _resources(emr_policy, "EmrLogsWrite"), f"README --log-uri {log_uri} vs EmrLogsWrite"))
        bootstrap = re.search(r"Path=(s3://[^,]+)", cluster.group(0)).group(1)
        checks.append((_s3_object(bootstrap, ""), _resources(emr_policy, "ArtifactsRead"),
                       f"README bootstrap {bootstrap} vs ArtifactsRead"))
        for required in ("--configurations", "file://deploy/emr-configurations.json",
                         "for-use-with-amazon-emr-managed-policies=true"):
            if required not in words:
                problems.append(f"README create-cluster lacks {required}")
    for arn, patterns, what in checks:
        if not _allowed(arn.rstrip("/"), patterns):
            problems.append(f"{what}: {arn} not in {patterns}")
    return problems


def _shipped():
    return (yaml.safe_load((ROOT / "conf/emr.yaml").read_text()), _step_args(), _policy("emr-role-policy.json"),
            _policy("sagemaker-execution-role-policy.json"), (ROOT / "README.md").read_text())


def test_generated_deploy_files_match_deploy_names_yaml():
    assert render.stale() == [], "run `make deploy-files` after editing deploy/names.yaml"


def test_config_steps_iam_and_readme_agree_on_every_name():
    assert disagreements(*_shipped()) == []


def test_the_agreement_check_catches_the_old_zen_anomaly_names():
    conf, steps, emr_policy, sm_policy, readme = _shipped()
    old = copy.deepcopy(conf)
    old["stream"]["kinesis"]["stream_name"] = "zen-anomaly-events"
    old["stream"]["alerts"]["topic_arn"] = "arn:aws:sns:us-east-1:123456789012:zen-anomaly-alerts"
    old["storage"]["lake"] = "s3a://my-bucket/zen-anomaly"
    found = "\n".join(disagreements(old, steps, emr_policy, sm_policy, readme))
    assert "stream.kinesis.stream_name vs StreamRead" in found
    assert "stream.alerts.topic_arn vs Alerts" in found
    assert "stream.checkpoint vs LakeReadWrite" in found
    no_logs = copy.deepcopy(emr_policy)
    no_logs["Statement"] = [s for s in no_logs["Statement"] if s["Sid"] != "EmrLogsWrite"] + [
        {"Sid": "EmrLogsWrite", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": []}]
    assert any("--log-uri" in p for p in disagreements(conf, steps, no_logs, sm_policy, readme))


def test_the_stream_step_uses_a_processing_time_trigger_and_ends():
    args = _step_args()["stream.json"]
    assert args[args.index("--source") + 1] == "kinesis"
    trigger = args[args.index("--trigger") + 1]
    assert trigger != "available-now"
    assert check_source_trigger("kinesis", trigger) == trigger
    assert float(args[args.index("--run-seconds") + 1]) > 0


def test_every_step_runs_the_wrapper_with_the_generated_config():
    for name, args in _step_args().items():
        assert args[0] == "/usr/lib/fraud-anomaly/bin/fraud-submit", name
        assert args[2].endswith("/dist/conf/emr.yaml"), name
        assert (ROOT / "jobs" / f"{args[1]}.py").exists(), f"{name}: no jobs/{args[1]}.py"
