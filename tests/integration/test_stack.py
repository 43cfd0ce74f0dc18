"""The AWS stack (deploy/cdk) synthesised, linted, scanned and deployed into moto's CloudFormation,
then the pipeline run against what it created with every name read from the stack's outputs.

The stack, its deployment and the pipeline run are the shared S3 end-to-end fixture
(stack_fixture.py; test_s3a_lake.py checks what the jobs wrote on S3). Here: the template
(cfn-lint, the "*" scan, what moto cannot create), the deployed resources, the config written from
the outputs against the deployed policies, the nightly score in the stack's lake, and replay ->
stream -> alerts on the stack's stream and topic.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import subprocess
import sys
import time

import boto3
import pytest
from aws_local import REGION
from stack_fixture import ROOT, STACK, STREAM_EVENTS, stack_config
from test_stream import drain

# Resource types of the template moto's CloudFormation cannot create (README "Deploying to AWS").
MOTO_CANNOT_CREATE = {"AWS::KinesisFirehose::DeliveryStream", "AWS::Scheduler::Schedule",
                      "AWS::ApiGateway::Stage", "AWS::SNS::Subscription"}
CFN_LINT = "import sys; from cfnlint.runner import main; sys.exit(main())"   # the cfn-lint command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


@pytest.fixture
def template(stack_template):
    return stack_template


@pytest.fixture
def moto(stack_moto):
    return stack_moto


@pytest.fixture
def deployed(stack):
    return stack


@pytest.fixture
def pipeline(stack_pipeline):
    return stack_pipeline


def _statements(template: dict):
    """(resource, policy name, statement) of every inline policy of every role."""
    for logical, resource in template["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield logical, policy["PolicyName"], statement


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def stars(template: dict) -> list[tuple[str, str]]:
    """(role, Sid) of every statement with "*" as an action or a resource (or no Sid: "?")."""
    found = []
    for logical, _, statement in _statements(template):
        values = _listed(statement.get("Action", [])) + _listed(statement.get("Resource", []))
        if "*" in values or any(isinstance(v, str) and v.split(":")[-1] == "*" and ":" in v and "/" not in v
                                for v in _listed(statement.get("Action", []))):
            found.append((logical, statement.get("Sid", "?")))
    return found


def test_the_template_passes_cfn_lint(template):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CFN_LINT, str(template)], capture_output=True, text=True,
                          timeout=300)
    print(f"cfn-lint: {time.perf_counter() - started:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_star_actions_and_stars_only_where_the_api_has_no_resource(template):
    sys.path.insert(0, str(ROOT / "deploy/cdk"))
    from stack import STAR_STATEMENTS

    body = json.loads(template.read_text())
    found = stars(body)
    assert {sid for _, sid in found} == set(STAR_STATEMENTS), found
    for _, _, statement in _statements(body):
        assert "*" not in _listed(statement["Action"]), statement
        assert not any(a.endswith(":*") for a in _listed(statement["Action"])), statement
    readme = (ROOT / "README.md").read_text()
    for sid in STAR_STATEMENTS:
        assert f"`{sid}`" in readme, f"README does not justify the '*' of {sid}"


def test_the_star_scan_finds_a_star(template):
    body = json.loads(template.read_text())
    role = body["Resources"]["EmrEc2Role"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    role.append({"Sid": "Sloppy", "Effect": "Allow", "Action": "s3:*", "Resource": "*"})
    role.append({"Sid": "Worse", "Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b"})
    assert {"Sloppy", "Worse"} <= {sid for _, sid in stars(body)}


def test_the_lambda_runtime_and_environment_are_what_the_package_and_handler_use(template):
    sys.path.insert(0, str(ROOT / "scripts"))
    import lambda_package

    body = json.loads(template.read_text())
    runtime = body["Parameters"]["LambdaRuntime"]
    assert runtime["Default"] == lambda_package.RUNTIME == "python3.12"
    assert runtime["AllowedValues"] == [lambda_package.RUNTIME]   # the zip's cp312 wheels run on no other
    function = body["Resources"]["ApiFunction"]["Properties"]
    assert function["Runtime"] == {"Ref": "LambdaRuntime"}
    assert function["Handler"] == "serving.lambda_handler.handler"
    variables = function["Environment"]["Variables"]
    assert set(variables) == {"SERVING_BUNDLE"}          # the one variable serving/lambda_handler.py reads
    assert "SERVING_BUNDLE" in (ROOT / "serving/lambda_handler.py").read_text()
    uri = json.dumps(variables["SERVING_BUNDLE"])
    assert uri.startswith('{"Fn::Join": ["", ["s3://", {"Ref": "ArtifactBucket') and '"/serving/"' in uri
    statements = {st["Sid"]: st for role, _, st in _statements(body) if role == "ApiRole"}
    assert set(statements) == {"Logs", "ReadBundle", "ListBundle"}
    read = json.dumps(statements["ReadBundle"]["Resource"])
    assert statements["ReadBundle"]["Resource"]["Fn::Join"][1][-1] == "/bundle/*" and '"/serving/"' in read
    assert statements["ListBundle"]["Condition"]["StringLike"]["s3:prefix"][0]["Fn::Join"][1][-1] == "/bundle/*"


def test_the_cluster_has_the_bootstrap_action_and_delta_defaults(template):
    cluster = json.loads(template.read_text())["Resources"]["Cluster"]["Properties"]
    configurations = [{"Classification": c["Classification"], "Properties": c["ConfigurationProperties"]}
                      for c in cluster["Configurations"]]
    assert configurations == json.loads((ROOT / "deploy/emr-configurations.json").read_text())
    (action,) = cluster["BootstrapActions"]
    path = json.dumps(action["ScriptBootstrapAction"]["Path"])
    assert "/bootstrap/install-sagemaker-pyspark.sh" in path
    assert (ROOT / "deploy/bootstrap/install-sagemaker-pyspark.sh").is_file()
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in cluster["Tags"]


def test_both_buckets_are_encrypted_private_and_expire_staging(template):
    resources = json.loads(template.read_text())["Resources"]
    buckets = {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::S3::Bucket"}
    assert len(buckets) == 2
    for props in buckets.values():
        assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    lake = next(p for k, p in buckets.items() if k.startswith("LakeBucket"))
    expiring = {json.dumps(r["Prefix"]): r["ExpirationInDays"] for r in lake["LifecycleConfiguration"]["Rules"]
                if "ExpirationInDays" in r}
    assert any("training-input" in prefix for prefix in expiring) and any("/landing/" in p for p in expiring)
    assert {json.dumps(days) for days in expiring.values()} == {'{"Ref": "TrainingInputRetentionDays"}',
                                                               '{"Ref": "LandingRetentionDays"}'}


def test_the_types_moto_cannot_create_are_behind_the_switches(template):
    body = json.loads(template.read_text())
    for logical, resource in body["Resources"].items():
        if resource["Type"] in MOTO_CANNOT_CREATE:
            assert resource.get("Condition"), f"{logical} ({resource['Type']}) has no condition: moto cannot create it"


# --------------------------------------------------------------------------- moto deployment


def _policy(moto, role: str) -> dict:
    iam = boto3.client("iam", region_name=REGION, endpoint_url=moto)
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    # moto keeps a CloudFormation inline policy as the text of a Python dict
    return ast.literal_eval(document) if isinstance(document, str) else document


def _allowed(policy: dict, action: str, arn: str) -> bool:
    return any(fnmatch.fnmatchcase(action, a) and any(fnmatch.fnmatchcase(arn, r) for r in _listed(s["Resource"]))
               for s in policy["Statement"] for a in _listed(s["Action"]))


def _object_arn(uri: str, leaf: str = "part-0.parquet") -> str:
    return "arn:aws:s3:::" + uri.split("://", 1)[1].rstrip("/") + "/" + leaf


def test_the_deployed_stack_created_what_the_outputs_name(deployed, moto):
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto)
    for bucket in (deployed["Lake"], deployed["Artifacts"]):
        s3.head_bucket(Bucket=bucket)   # (moto's CloudFormation ignores their public access block and lifecycle)
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto)
    summary = kinesis.describe_stream_summary(StreamName=deployed["StreamName"])["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 1 and summary["StreamARN"] == deployed["StreamArn"]
    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto)
    assert sns.get_topic_attributes(TopicArn=deployed["AlertsTopicArn"])["Attributes"]["TopicArn"]
    emr = boto3.client("emr", region_name=REGION, endpoint_url=moto)
    cluster = emr.describe_cluster(ClusterId=deployed["ClusterId"])["Cluster"]
    assert cluster["Ec2InstanceAttributes"]["IamInstanceProfile"] == deployed["InstanceProfile"]
    assert "ApiUrl" not in deployed  # WithApi false


def test_the_config_from_the_outputs_is_what_the_deployed_policies_allow(deployed, moto, tmp_path):
    conf = tmp_path / "emr.yaml"
    stack_config.write(deployed, conf, STACK, steps_dir=tmp_path / "steps")
    sys.path.insert(0, str(ROOT))
    from runtime.config import load_config

    config = load_config(conf)
    emr = _policy(moto, deployed["InstanceProfile"])
    sm = config["models"]["sagemaker"]
    stream = config["stream"]
    region, account = config["aws"]["region"], sm["role_arn"].split(":")[4]
    stream_arn = f"arn:aws:kinesis:{region}:{account}:stream/{stream['kinesis']['stream_name']}"
    checks = [
        ("kinesis:GetRecords", stream_arn), ("kinesis:PutRecords",
                                             f"arn:aws:kinesis:{region}:{account}:stream/{stream['replay']['stream_name']}"),
        ("sns:Publish", stream["alerts"]["topic_arn"]), ("iam:PassRole", sm["role_arn"]),
        ("s3:PutObject", _object_arn(sm["s3_prefix"])),
        ("sagemaker:CreateTrainingJob", f"arn:aws:sagemaker:{region}:{account}:training-job/{sm['name_prefix']}-rcf-1-a"),
        ("sagemaker:CreateEndpoint", f"arn:aws:sagemaker:{region}:{account}:endpoint/{sm['name_prefix']}-rcf-t-v0001"),
    ]
    for key in ("stream.output", "stream.checkpoint", "stream.dead_letter", "features", "scores", "models"):
        checks.append(("s3:PutObject", _object_arn(config.path(key, config["dataset"]))))
    for name in ("features.json", "train.json", "score-nightly.json", "stream.json"):
        (step,) = json.loads((tmp_path / "steps" / name).read_text())
        checks.append(("s3:GetObject", _object_arn(step["Args"][2], "")))
        assert (ROOT / "jobs" / f"{step['Args'][1]}.py").is_file(), name
    denied = [(action, arn) for action, arn in checks if not _allowed(emr, action, arn.rstrip("/"))]
    assert denied == []
    sagemaker = _policy(moto, sm["role_arn"].rsplit("/", 1)[1])
    assert _allowed(sagemaker, "s3:GetObject", _object_arn(sm["s3_prefix"], "transactions/rcf/training-input/x"))
    # and the check can fail: another stream's name is not allowed
    assert not _allowed(emr, "kinesis:GetRecords", stream_arn + "-other")


def _keys(s3, bucket, prefix):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_the_nightly_score_wrote_the_scores_table_in_the_stacks_lake(pipeline, deployed, moto):
    done = pipeline["summaries"]
    assert done["score"]["status"] == "done" and done["score"]["rows_out"] > 0, done["score"]
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto)
    project, dataset = deployed["ProjectName"], deployed["DatasetName"]
    assert _keys(s3, deployed["Lake"], f"{project}/scores/{dataset}/_delta_log/00000000000000000000.json")
    assert _keys(s3, deployed["Lake"], f"{project}/models/{dataset}/")


def test_replay_stream_and_alerts_ran_on_the_stacks_stream_and_topic(pipeline, deployed, moto):
    assert pipeline["jobs"][-2:] == ["replay", "stream"]
    assert f"records sent {STREAM_EVENTS:,}, failed 0" in pipeline["stdout"]
    stream = pipeline["kinesis_stream"]
    assert stream["status"] == "done" and stream["rows_out"] == STREAM_EVENTS, stream
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto)
    project, dataset = deployed["ProjectName"], deployed["DatasetName"]
    assert _keys(s3, deployed["Lake"], f"{project}/stream/{dataset}/_delta_log/")
    assert _keys(s3, deployed["Lake"], f"{project}/checkpoints/stream/{dataset}/")
    alerted = [m["MessageAttributes"]["event_id"]["StringValue"] for m in drain(pipeline["sqs"], pipeline["queue_url"])]
    expected = {e["transaction_id"] for e in pipeline["events"] if e["amount"] > 250}
    assert expected and expected <= set(alerted), "every large amount is an anomaly for the test scorer"
    assert len(alerted) == len(set(alerted)) == stream["alerts"], stream
