"""Write conf/emr.yaml, deploy/steps/*.json and deploy/iam/*.json from deploy/names.yaml.

One source of truth for the AWS resource names (stream, topic, roles, buckets, prefixes): the job
config, the EMR steps and the IAM policies are generated from the same values, so SNS publish,
Kinesis reads and lake writes are never denied because one file says ``zen-anomaly`` and another
``fraud-anomaly``.

    python deploy/render.py            # (make deploy-files) rewrite the generated files
    python deploy/render.py --check    # exit 1 naming the files that differ from what names.yaml gives

Plain Python + PyYAML; imports nothing of the project.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml

ROOT = Path(__file__).resolve().parent.parent
NAMES = ROOT / "deploy" / "names.yaml"
SUBMIT = "/usr/lib/fraud-anomaly/bin/fraud-submit"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]*$")


class NamesError(ValueError):
    """A value in deploy/names.yaml that cannot name an AWS resource."""


def load_names(path: Path = NAMES) -> dict[str, Any]:
    """deploy/names.yaml, checked: every key present, buckets and prefixes valid AWS names."""
    names = yaml.safe_load(path.read_text())
    required = ("region", "account_id", "project", "dataset", "buckets", "sagemaker_name_prefix",
                "algorithm_image_account", "stream_step")
    missing = [key for key in required if key not in (names or {})]
    if missing:
        raise NamesError(f"{path}: missing {', '.join(missing)}")
    for key in ("lake", "artifacts", "sagemaker"):
        bucket = str(names["buckets"].get(key) or "")
        if not _BUCKET.match(bucket):
            raise NamesError(f"{path}: buckets.{key} {bucket!r} is not a valid S3 bucket name")
    for key in ("project", "sagemaker_name_prefix", "dataset"):
        if not _NAME.match(str(names[key])):
            raise NamesError(f"{path}: {key} {names[key]!r} must be letters, digits and '-'")
    if not re.fullmatch(r"\d{12}", str(names["account_id"])):
        raise NamesError(f"{path}: account_id {names['account_id']!r} must be 12 digits")
    return names


def resources(names: Mapping[str, Any]) -> dict[str, str]:
    """Every resource name and ARN the deployment uses, derived from ``names``."""
    region, account, project = names["region"], str(names["account_id"]), names["project"]
    buckets = names["buckets"]
    artifacts = f"s3://{buckets['artifacts']}/{project}"
    return {
        "region": region,
        "account": account,
        "lake": f"s3a://{buckets['lake']}/{project}",
        "artifacts": artifacts,
        "conf_uri": f"{artifacts}/dist/conf/emr.yaml",
        "log_uri": f"{artifacts}/logs/",
        "sagemaker_prefix": f"s3://{buckets['sagemaker']}/{project}/sagemaker",
        "stream_name": f"{project}-{names['dataset']}",
        "stream_arn": f"arn:aws:kinesis:{region}:{account}:stream/{project}-{names['dataset']}",
        "topic_arn": f"arn:aws:sns:{region}:{account}:{project}-alerts",
        "sagemaker_role_arn": f"arn:aws:iam::{account}:role/{project}-sagemaker-execution",
        "emr_role": f"{project}-emr-ec2",
    }


def s3_arn(uri: str) -> str:
    """``arn:aws:s3:::bucket/key`` of an s3:// or s3a:// URI."""
    return "arn:aws:s3:::" + re.sub(r"^s3a?://", "", uri).rstrip("/")


def _bucket_arn(uri: str) -> str:
    return s3_arn(uri).split("/")[0]


def emr_role_policy(names: Mapping[str, Any]) -> dict:
    """The EMR EC2 instance profile's policy: the lake, the artifacts and EMR's log prefix, the
    SageMaker training and hosting names of ``sagemaker_name_prefix``, the stream and the topic.
    """
    r = resources(names)
    sm = f"arn:aws:sagemaker:{r['region']}:{r['account']}"
    prefix = names["sagemaker_name_prefix"]
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "LakeAndArtifactsList", "Effect": "Allow",
         "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": sorted({_bucket_arn(r["lake"]), _bucket_arn(r["artifacts"]), _bucket_arn(r["sagemaker_prefix"])})},
        {"Sid": "LakeReadWrite", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
         "Resource": [s3_arn(r["lake"]) + "/*", s3_arn(r["sagemaker_prefix"]) + "/*"]},
        {"Sid": "ArtifactsRead", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [s3_arn(r["artifacts"]) + "/dist/*", s3_arn(r["artifacts"]) + "/bootstrap/*"]},
        {"Sid": "EmrLogsWrite", "Effect": "Allow", "Action": ["s3:PutObject"],
         "Resource": [s3_arn(r["log_uri"]) + "/*"]},
        {"Sid": "SageMakerTrainingAndHosting", "Effect": "Allow",
         "Action": ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                    "sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel",
                    "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig",
                    "sagemaker:DeleteEndpointConfig", "sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint",
                    "sagemaker:DeleteEndpoint", "sagemaker:InvokeEndpoint"],
         "Resource": [f"{sm}:training-job/{prefix}-rcf-*", f"{sm}:training-job/{prefix}-logistic-*",
                      f"{sm}:model/{prefix}-*", f"{sm}:endpoint-config/{prefix}-*", f"{sm}:endpoint/{prefix}-*"]},
        {"Sid": "SageMakerList", "Effect": "Allow",
         "Action": ["sagemaker:ListEndpoints", "sagemaker:ListTrainingJobs"], "Resource": "*"},
        {"Sid": "PassOnlyTheExecutionRole", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": r["sagemaker_role_arn"],
         "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
        {"Sid": "CallerIdentity", "Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"},
        {"Sid": "StreamRead", "Effect": "Allow",
         "Action": ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetShardIterator",
                    "kinesis:GetRecords", "kinesis:ListShards"],
         "Resource": r["stream_arn"]},
        {"Sid": "ReplayWrite", "Effect": "Allow", "Action": ["kinesis:PutRecords", "kinesis:PutRecord"],
         "Resource": r["stream_arn"]},
        {"Sid": "Alerts", "Effect": "Allow", "Action": "sns:Publish", "Resource": r["topic_arn"]},
    ]}


def sagemaker_execution_policy(names: Mapping[str, Any]) -> dict:
    """The role SageMaker assumes: the training prefix, the two built-in images, logs, metrics."""
    r = resources(names)
    ecr = f"arn:aws:ecr:{r['region']}:{names['algorithm_image_account']}:repository"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "TrainingDataAndArtifacts", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": s3_arn(r["sagemaker_prefix"]) + "/*"},
        {"Sid": "ListTrainingBucket", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": _bucket_arn(r["sagemaker_prefix"])},
        {"Sid": "PullBuiltInAlgorithmImages", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"],
         "Resource": "*"},
        {"Sid": "PullBuiltInAlgorithmLayers", "Effect": "Allow",
         "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
         "Resource": [f"{ecr}/randomcutforest", f"{ecr}/linear-learner"]},
        {"Sid": "Logs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": f"arn:aws:logs:{r['region']}:{r['account']}:log-group:/aws/sagemaker/*"},
        {"Sid": "Metrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}}},
    ]}


SAGEMAKER_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def _step(name: str, job: str, conf_uri: str, *args: str) -> list[dict]:
    return [{"Type": "CUSTOM_JAR", "Name": f"fraud-anomaly {name}", "ActionOnFailure": "CONTINUE",
             "Jar": "command-runner.jar", "Args": [SUBMIT, job, conf_uri, *args]}]


def steps(names: Mapping[str, Any]) -> dict[str, list[dict]]:
    """The EMR steps: each runs fraud-submit with the generated conf/emr.yaml (uploaded with dist/),
    which carries the names; the steps add only what differs per run.
    """
    r = resources(names)
    dataset = ("--dataset", names["dataset"])
    stream = names["stream_step"]
    return {
        "features.json": _step("features", "build_features", r["conf_uri"], *dataset),
        "train.json": _step("train (SageMaker)", "train", r["conf_uri"], *dataset, "--model", "all"),
        "score-nightly.json": _step("nightly score (SageMaker)", "score", r["conf_uri"], *dataset, "--last-days", "1"),
        "stream.json": _step("stream", "stream", r["conf_uri"], *dataset, "--source", "kinesis",
                             "--trigger", str(stream["trigger"]), "--run-seconds", str(stream["run_seconds"])),
    }


EMR_CONF = """\
# GENERATED from deploy/names.yaml by `make deploy-files` (deploy/render.py): edit that file, not this
# one (tests/integration/test_emr_contract.py fails when they differ).
#
# Amazon EMR 7.1 or later (Python 3.11 and the aws-kinesis connector; 7.11+ ships Delta 3.3.2, the
# version tested locally): YARN decides the master; data in S3; the SageMaker backend; Delta tables
# with EMR's own Delta (create the cluster with deploy/emr-configurations.json: the delta-defaults
# classification, delta.enabled=true). On S3 never run two writers on one table at once unless the
# S3DynamoDBLogStore is configured (README, "Delta Lake on EMR"). The sagemaker-pyspark jars must
# be on the driver's launch classpath: the bootstrap action in deploy/bootstrap and its
# fraud-submit wrapper put them there (see "Running on EMR with SageMaker" in the README).
spark:
  master: null
  driver_memory: ""
  shuffle_partitions: 400
  extra_jars: ""                # set by the submit wrapper, not by the job
  delta_package: ""             # EMR's own Delta (delta-defaults classification delta.enabled=true)
aws:
  region: "{region}"
storage:
  lake: "{lake}"
  format: "delta"
models:
  backend: "sagemaker"
  sagemaker:
    role_arn: "{sagemaker_role_arn}"   # the execution role SageMaker assumes
    s3_prefix: "{sagemaker_prefix}"    # training data and model output
    name_prefix: "{name_prefix}"       # training jobs, models, endpoints (the IAM policy allows these)
stream:
  source: "kinesis"
  kinesis:
    stream_name: "{stream_name}"
  alerts:
    topic_arn: "{topic_arn}"
  replay:
    stream_name: "{stream_name}"
"""


def emr_conf(names: Mapping[str, Any]) -> str:
    """conf/emr.yaml's text."""
    return EMR_CONF.format(name_prefix=names["sagemaker_name_prefix"], **resources(names))


def _json(value) -> str:
    return json.dumps(value, indent=2) + "\n"


def rendered(names: Mapping[str, Any]) -> dict[Path, str]:
    """Every generated file (path relative to the repository root) and its text."""
    files = {Path("conf/emr.yaml"): emr_conf(names),
             Path("deploy/iam/emr-role-policy.json"): _json(emr_role_policy(names)),
             Path("deploy/iam/sagemaker-execution-role-policy.json"): _json(sagemaker_execution_policy(names)),
             Path("deploy/iam/sagemaker-execution-role-trust.json"): _json(SAGEMAKER_TRUST)}
    for name, step in steps(names).items():
        files[Path("deploy/steps") / name] = _json(step)
    return files


def stale(root: Path = ROOT, names_file: Path = NAMES) -> list[Path]:
    """The generated files under ``root`` whose text differs from what ``names_file`` gives."""
    return [path for path, text in rendered(load_names(names_file)).items()
            if not (root / path).exists() or (root / path).read_text() != text]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ (exit 1 if any)")
    parser.add_argument("--names", type=Path, default=NAMES, help="the names file (default deploy/names.yaml)")
    args = parser.parse_args(argv)
    try:
        names = load_names(args.names)
    except NamesError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    if args.check:
        bad = stale(ROOT, args.names)
        for path in bad:
            print(f"render: {path} is stale: run `make deploy-files`", file=sys.stderr)
        return 1 if bad else 0
    for path, text in rendered(names).items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text)
        print(f"render: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
