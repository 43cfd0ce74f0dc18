"""The whole AWS deployment as one CloudFormation stack (AWS CDK, Python).

Buckets, Kinesis stream, Firehose delivery to the landing prefix, SNS alerts topic, the roles the
jobs, SageMaker, EMR, Firehose, the scheduler and the scoring API run as, the EMR cluster, the
nightly score schedule and the scoring API (Lambda + API Gateway). Every name is built here once,
from the stack's parameters, and published as a stack output; ``deploy/stack_config.py`` writes the
job config from those outputs, so the config and the IAM policies cannot disagree.

The policies name the resources the jobs touch, with the paths the jobs use (runtime/defaults.yaml
``paths`` and ``stream``; models.sagemaker's ``<s3_prefix>/<dataset>/<kind>/training-{input,output}``
and ``<name_prefix>-...`` job and endpoint names). The statements whose API allows no narrower
resource than ``*`` are listed in STAR_STATEMENTS (README "Deploying to AWS", tests).

Four parts are switched by parameters: the cluster and the API need artifacts in the artifact
bucket (bootstrap script, wheel, config, Lambda zip) that exist only after a first deployment, and
a local CloudFormation (moto) cannot create Firehose, Scheduler or API Gateway stages.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_emr as emr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from constructs import Construct

DEPLOY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(DEPLOY))
import emr_steps  # noqa: E402  (deploy/emr_steps.py: the steps, shared with the config writer)

DATASETS = ("transactions", "telemetry")
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 180, 365)   # values CloudWatch Logs accepts (a subset)
MODEL_KINDS = ("rcf", "logistic")   # the SageMaker backend's training kinds (sagemaker_backend/stage.py)
EMR_CONFIGURATIONS = DEPLOY / "emr-configurations.json"
BOOTSTRAP_SCRIPT = "install-sagemaker-pyspark.sh"
LAMBDA_HANDLER = "serving.lambda_handler.handler"
# The scoring API's zip carries CPython 3.12 wheels (scripts/lambda_package.py RUNTIME; a test checks they
# agree): another runtime needs another zip. python3.11: Lambda stops creating it (cfn-lint E2533).
LAMBDA_RUNTIMES = ("python3.12",)
# (Sid, why) of every statement whose Resource is "*": the API has no resource-level permission.
STAR_STATEMENTS = {
    "SageMakerList": "sagemaker:ListEndpoints and ListTrainingJobs are list calls: no resource type",
    "PullBuiltInAlgorithmImages": "ecr:GetAuthorizationToken is account-wide: no resource type",
    "Metrics": "cloudwatch:PutMetricData has no resource type (limited by a cloudwatch:namespace condition)",
}


def _when(construct: Construct, condition: cdk.CfnCondition) -> None:
    """Put every CloudFormation resource under ``construct`` behind ``condition``."""
    for child in construct.node.find_all():
        if isinstance(child, cdk.CfnResource):
            child.cfn_options.condition = condition


def _switch(stack: cdk.Stack, name: str, default: str, description: str) -> cdk.CfnCondition:
    param = cdk.CfnParameter(stack, name, type="String", default=default, allowed_values=["true", "false"],
                             description=description)
    return cdk.CfnCondition(stack, f"{name}Enabled", expression=cdk.Fn.condition_equals(param.value_as_string, "true"))


class FraudAnomalyStack(cdk.Stack):
    """The stack; see the module docstring."""

    def __init__(self, scope: Construct, construct_id: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.template_options.description = (
            "zen-anomaly fraud/anomaly pipeline: lake, stream, alerts, roles, EMR, schedule, scoring API")
        p = self._parameters()
        region = cdk.Aws.REGION
        project, dataset = p["project"], p["dataset"]

        lake, artifacts = self._buckets(p)
        lake_uri = f"s3a://{lake.bucket_name}/{project}"
        artifacts_uri = f"s3://{artifacts.bucket_name}/{project}"
        sagemaker_prefix = f"s3://{lake.bucket_name}/{project}/sagemaker"
        lake_objects = lake.arn_for_objects(f"{project}/*")

        stream = kinesis.CfnStream(self, "EventStream", name=f"{project}-{dataset}", shard_count=p["shards"],
                                   retention_period_hours=24,
                                   stream_encryption=kinesis.CfnStream.StreamEncryptionProperty(
                                       encryption_type="KMS", key_id="alias/aws/kinesis"))
        stream_arn = stream.attr_arn
        topic = sns.CfnTopic(self, "AlertsTopic", topic_name=f"{project}-alerts")
        email = sns.CfnSubscription(self, "AlertsEmail", topic_arn=topic.ref, protocol="email",
                                    endpoint=p["email"])
        email.cfn_options.condition = cdk.CfnCondition(
            self, "HasAlertEmail", expression=cdk.Fn.condition_not(cdk.Fn.condition_equals(p["email"], "")))

        sagemaker_role = self._sagemaker_role(p, lake, lake.arn_for_objects(f"{project}/sagemaker/*"))
        emr_ec2_role, profile = self._emr_ec2_role(p, lake, artifacts, lake_objects, stream_arn, topic.ref,
                                                   sagemaker_role.attr_arn)
        self._firehose(p, lake, stream_arn)
        cluster = self._cluster(p, artifacts, emr_ec2_role, profile)
        conf_uri = emr_steps.conf_uri(artifacts_uri)
        self._schedule(p, cluster, artifacts_uri)
        api, bundle_uri = self._api(p, artifacts)

        outputs = {
            "Region": (region, "aws.region"),
            "ProjectName": (project, "the prefix of every name"),
            "DatasetName": (dataset, "dataset: what the stream carries and the steps run"),
            "Lake": (lake.bucket_name, "the lake bucket"),
            "LakeUri": (lake_uri, "storage.lake"),
            "LandingUri": (f"s3://{lake.bucket_name}/{project}/landing/{dataset}",
                           "Firehose delivers here, under YYYY/MM/DD/HH/ (stream.landing: this + /*/*/*/*)"),
            "Artifacts": (artifacts.bucket_name, "the artifact bucket"),
            "ArtifactsUri": (artifacts_uri, "make package output goes to <this>/dist/, "
                             "the bootstrap script to <this>/bootstrap/"),
            "ConfUri": (conf_uri, "the config the EMR steps read (written by make stack-conf)"),
            "StreamName": (stream.ref, "stream.kinesis.stream_name and stream.replay.stream_name"),
            "StreamArn": (stream_arn, "the Kinesis stream"),
            "AlertsTopicArn": (topic.ref, "stream.alerts.topic_arn"),
            "SageMakerRoleArn": (sagemaker_role.attr_arn, "models.sagemaker.role_arn"),
            "SageMakerS3Prefix": (sagemaker_prefix, "models.sagemaker.s3_prefix"),
            "SageMakerNames": (p["name_prefix"], "models.sagemaker.name_prefix"),
            "InstanceProfile": (profile.ref, "the EMR nodes' instance profile"),
            "LambdaCode": (p["lambda_key"], "the scoring API's zip in the artifact bucket"),
            "ServingBundleUri": (bundle_uri, "the scoring API's bundle (serve --write-bundle DIR; aws s3 sync DIR "
                                 "<this>): the Lambda's SERVING_BUNDLE"),
        }
        for key, (value, description) in outputs.items():
            cdk.CfnOutput(self, key, value=value, description=description)
        if cluster is not None:
            out = cdk.CfnOutput(self, "ClusterId", value=cluster.ref, description="the EMR cluster (aws emr add-steps)")
            out.condition = cluster.cfn_options.condition
        out = cdk.CfnOutput(self, "ApiUrl", value=api.url,
                            description="the scoring API's base URL (stage v1; the Lambda serves every path under it)")
        out.condition = self._api_condition

    # ------------------------------------------------------------------ parameters

    def _parameters(self) -> dict:
        def param(name, description, default=None, **kw):
            return cdk.CfnParameter(self, name, description=description, default=default, **kw)

        project = param("Project", "Prefix of every resource name: stream <Project>-<Dataset>, topic <Project>-alerts, "
                        "roles <Project>-..., S3 prefixes <Project>/", "fraud-anomaly", type="String",
                        allowed_pattern="^[a-z][a-z0-9-]{1,30}[a-z0-9]$", min_length=3, max_length=32)
        dataset = param("Dataset", "The data set the stream carries and the EMR steps run", "transactions",
                        type="String", allowed_values=list(DATASETS))
        lake = param("LakeBucketName", "Lake bucket (Delta tables, checkpoints, SageMaker training data); "
                     "empty: CloudFormation picks a unique name", "", type="String",
                     allowed_pattern="^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
        artifacts = param("ArtifactBucketName", "Artifact bucket (wheel, config, bootstrap script, Lambda zip, "
                          "EMR logs); empty: CloudFormation picks a unique name", "", type="String",
                          allowed_pattern="^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
        shards = param("ShardCount", "Shards of the Kinesis stream (each about 1 MB/s or 1000 records/s in)", 2,
                       type="Number", min_value=1, max_value=64)
        email = param("AlertEmail", "E-mail address subscribed to the alerts topic; empty: none", "", type="String")
        name_prefix = param("SageMakerNamePrefix", "SageMaker training jobs, models and endpoints are named "
                            "<this>-...", "fraud", type="String", allowed_pattern="^[a-zA-Z0-9][a-zA-Z0-9-]{0,19}$")
        image_account = param("AlgorithmImageAccount", "ECR account of the built-in RCF and Linear Learner images "
                              "in this region (sagemaker.image_uris.retrieve; us-east-1: 382416733822)",
                              "382416733822", type="String", allowed_pattern=r"^\d{12}$")
        retention = param("TrainingInputRetentionDays", "Days SageMaker training input (RecordIO) is kept", 7,
                          type="Number", min_value=1)
        landing_days = param("LandingRetentionDays", "Days Firehose's landing files are kept (staging: the "
                             "stream has read them)", 14, type="Number", min_value=1)
        log_days = param("LogRetentionDays", "Days EMR and Lambda logs are kept", "30", type="Number",
                         allowed_values=[str(d) for d in LOG_RETENTION_DAYS])
        lambda_key = param("LambdaCodeKey", "Key of the scoring API's zip in the artifact bucket", "lambda/scoring-api.zip",
                           type="String", min_length=1)
        runtime = param("LambdaRuntime", "Python of the scoring API's Lambda (the zip's wheels must match it: "
                        "make lambda-package builds for python3.12)", LAMBDA_RUNTIMES[0], type="String",
                        allowed_values=list(LAMBDA_RUNTIMES))
        release = param("EmrReleaseLabel", "EMR release (7.1+: Python 3.11 and aws-kinesis; 7.11+: Delta 3.3.2)",
                        "emr-7.12.0", type="String", allowed_pattern=r"^emr-7\.\d+\.\d+$")
        instance_type = param("EmrInstanceType", "EC2 type of the EMR primary and core nodes", "m5.xlarge", type="String")
        core_nodes = param("EmrCoreNodes", "EMR core nodes", 2, type="Number", min_value=1, max_value=50)
        subnet = param("EmrSubnetId", "Subnet of the EMR cluster; empty: the default VPC", "", type="String")
        schedule = param("NightlyScheduleExpression", "When the nightly score step is added to the cluster (UTC)",
                         "cron(0 2 * * ? *)", type="String")
        self._cluster_condition = _switch(self, "WithCluster", "false",
                                          "true: the EMR cluster and its nightly score schedule (upload dist/ and "
                                          "the bootstrap script to ArtifactsUri first)")
        self._schedule_condition = _switch(self, "WithNightlySchedule", "true",
                                           "true (with WithCluster): EventBridge Scheduler adds the nightly score step")
        self._api_condition = _switch(self, "WithApi", "false",
                                      "true: the scoring API, Lambda + API Gateway (upload LambdaCodeKey first)")
        self._firehose_condition = _switch(self, "WithFirehose", "true",
                                           "true: Firehose copies the stream to the landing prefix")
        return {"project": project.value_as_string, "dataset": dataset.value_as_string,
                "lake_bucket": lake.value_as_string, "artifact_bucket": artifacts.value_as_string,
                "shards": shards.value_as_number, "email": email.value_as_string,
                "name_prefix": name_prefix.value_as_string, "image_account": image_account.value_as_string,
                "retention": retention.value_as_number, "landing_days": landing_days.value_as_number,
                "log_days": log_days.value_as_number, "lambda_key": lambda_key.value_as_string,
                "lambda_runtime": runtime.value_as_string,
                "release": release.value_as_string, "instance_type": instance_type.value_as_string,
                "core_nodes": core_nodes.value_as_number, "subnet": subnet.value_as_string,
                "schedule": schedule.value_as_string}

    def _name_or_generated(self, value: str, condition_id: str) -> str:
        has = cdk.CfnCondition(self, condition_id, expression=cdk.Fn.condition_not(cdk.Fn.condition_equals(value, "")))
        return cdk.Fn.condition_if(has.logical_id, value, cdk.Aws.NO_VALUE).to_string()

    # ------------------------------------------------------------------ storage

    def _buckets(self, p: dict) -> tuple[s3.Bucket, s3.Bucket]:
        project = p["project"]
        abort = s3.LifecycleRule(id="AbortIncompleteUploads", abort_incomplete_multipart_upload_after=cdk.Duration.days(7))
        training_input = [
            s3.LifecycleRule(id=f"TrainingInput-{ds}-{kind}",
                             prefix=f"{project}/sagemaker/{ds}/{kind}/training-input/",
                             expiration=cdk.Duration.days(1))
            for ds in DATASETS for kind in MODEL_KINDS]
        landing = s3.LifecycleRule(id="LandingStaging", prefix=f"{project}/landing/", expiration=cdk.Duration.days(1))
        lake = s3.Bucket(self, "LakeBucket", bucket_name=self._name_or_generated(p["lake_bucket"], "HasLakeBucketName"),
                         encryption=s3.BucketEncryption.S3_MANAGED,
                         block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                         lifecycle_rules=[abort, *training_input, landing],
                         removal_policy=cdk.RemovalPolicy.RETAIN)
        logs_rule = s3.LifecycleRule(id="EmrLogs", prefix=f"{project}/logs/", expiration=cdk.Duration.days(1))
        artifacts = s3.Bucket(self, "ArtifactBucket",
                              bucket_name=self._name_or_generated(p["artifact_bucket"], "HasArtifactBucketName"),
                              encryption=s3.BucketEncryption.S3_MANAGED,
                              block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                              lifecycle_rules=[abort, logs_rule],
                              removal_policy=cdk.RemovalPolicy.RETAIN)
        # CDK takes whole days only: the retention parameters replace the placeholder day counts.
        cfn_lake = lake.node.default_child
        for i, rule in enumerate([abort, *training_input, landing]):
            if rule.expiration is not None:
                days = p["retention"] if rule.id.startswith("TrainingInput") else p["landing_days"]
                cfn_lake.add_property_override(f"LifecycleConfiguration.Rules.{i}.ExpirationInDays", days)
        artifacts.node.default_child.add_property_override("LifecycleConfiguration.Rules.1.ExpirationInDays",
                                                           p["log_days"])
        # CDK's validator reads both empty defaults as one name ''; an empty name means a generated one
        cdk.Validations.of(self).acknowledge(cdk.Acknowledgment(id="CloudFormation-Validate::E3019",
                                             reason="empty bucket name parameters mean generated, unique names"))
        return lake, artifacts

    # ------------------------------------------------------------------ roles

    def _role(self, logical_id: str, name: str, service: str, statements: list[iam.PolicyStatement],
              **trust_conditions) -> iam.CfnRole:
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole",
             **({"Condition": trust_conditions["condition"]} if trust_conditions else {})}]}
        return iam.CfnRole(self, logical_id, role_name=name, assume_role_policy_document=trust,
                           policies=[iam.CfnRole.PolicyProperty(
                               policy_name=name, policy_document=iam.PolicyDocument(statements=statements))])

    def _sagemaker_role(self, p: dict, lake: s3.Bucket, training_objects: str) -> iam.CfnRole:
        """The role SageMaker assumes: the training prefix, the two built-in images, logs, metrics."""
        ecr = f"arn:{cdk.Aws.PARTITION}:ecr:{cdk.Aws.REGION}:{p['image_account']}:repository"
        s = iam.PolicyStatement
        return self._role("SageMakerExecutionRole", f"{p['project']}-sagemaker-execution", "sagemaker.amazonaws.com", [
            s(sid="TrainingDataAndArtifacts", actions=["s3:GetObject", "s3:PutObject"], resources=[training_objects]),
            s(sid="ListTrainingBucket", actions=["s3:ListBucket", "s3:GetBucketLocation"], resources=[lake.bucket_arn]),
            s(sid="PullBuiltInAlgorithmImages", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            s(sid="PullBuiltInAlgorithmLayers",
              actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
              resources=[f"{ecr}/randomcutforest", f"{ecr}/linear-learner"]),
            s(sid="Logs", actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                   "logs:DescribeLogStreams"],
              resources=[f"arn:{cdk.Aws.PARTITION}:logs:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/*"]),
            s(sid="Metrics", actions=["cloudwatch:PutMetricData"], resources=["*"],
              conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}}),
        ])

    def _emr_ec2_role(self, p, lake, artifacts, lake_objects, stream_arn, topic_arn, sagemaker_role_arn):
        """The EMR nodes' role (what the jobs run as): the lake, the artifacts and the log prefix, the
        SageMaker names of ``SageMakerNamePrefix``, the stream and the topic.
        """
        project, prefix = p["project"], p["name_prefix"]
        sm = f"arn:{cdk.Aws.PARTITION}:sagemaker:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}"
        s = iam.PolicyStatement
        role = self._role("EmrEc2Role", f"{project}-emr-ec2", "ec2.amazonaws.com", [
            s(sid="LakeAndArtifactsList", actions=["s3:ListBucket", "s3:GetBucketLocation"],
              resources=[lake.bucket_arn, artifacts.bucket_arn]),
            s(sid="LakeReadWrite", actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
              resources=[lake_objects]),
            s(sid="ArtifactsRead", actions=["s3:GetObject"],
              resources=[artifacts.arn_for_objects(f"{project}/dist/*"),
                         artifacts.arn_for_objects(f"{project}/bootstrap/*")]),
            s(sid="EmrLogsWrite", actions=["s3:PutObject"], resources=[artifacts.arn_for_objects(f"{project}/logs/*")]),
            s(sid="SageMakerTrainingAndHosting",
              actions=["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                       "sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel",
                       "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig",
                       "sagemaker:DeleteEndpointConfig", "sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint",
                       "sagemaker:DeleteEndpoint", "sagemaker:InvokeEndpoint"],
              resources=[f"{sm}:training-job/{prefix}-rcf-*", f"{sm}:training-job/{prefix}-logistic-*",
                         f"{sm}:model/{prefix}-*", f"{sm}:endpoint-config/{prefix}-*", f"{sm}:endpoint/{prefix}-*"]),
            s(sid="SageMakerList", actions=["sagemaker:ListEndpoints", "sagemaker:ListTrainingJobs"], resources=["*"]),
            s(sid="PassOnlyTheExecutionRole", actions=["iam:PassRole"], resources=[sagemaker_role_arn],
              conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
            s(sid="StreamRead", actions=["kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
                                         "kinesis:GetShardIterator", "kinesis:GetRecords", "kinesis:ListShards"],
              resources=[stream_arn]),
            s(sid="ReplayWrite", actions=["kinesis:PutRecords", "kinesis:PutRecord"], resources=[stream_arn]),
            s(sid="Alerts", actions=["sns:Publish"], resources=[topic_arn]),
        ])
        profile = iam.CfnInstanceProfile(self, "EmrInstanceProfile", instance_profile_name=f"{project}-emr-ec2",
                                         roles=[role.ref])
        return role, profile

    # ------------------------------------------------------------------ delivery

    def _firehose(self, p: dict, lake: s3.Bucket, stream_arn: str) -> None:
        """Firehose copies every stream record to ``<project>/landing/<dataset>/`` as JSON lines (one
        record a line), the landing source's input; a newline is appended to each record.
        """
        project, dataset = p["project"], p["dataset"]
        s = iam.PolicyStatement
        role = self._role("FirehoseRole", f"{project}-firehose", "firehose.amazonaws.com", [
            s(sid="ReadStream", actions=["kinesis:DescribeStream", "kinesis:GetShardIterator", "kinesis:GetRecords",
                                         "kinesis:ListShards"], resources=[stream_arn]),
            s(sid="LandingBucket", actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
              resources=[lake.bucket_arn]),
            s(sid="LandingWrite", actions=["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
              resources=[lake.arn_for_objects(f"{project}/landing/*")]),
        ], condition={"StringEquals": {"sts:ExternalId": cdk.Aws.ACCOUNT_ID}})
        delivery = firehose.CfnDeliveryStream(
            self, "LandingDelivery", delivery_stream_name=f"{project}-{dataset}-landing",
            delivery_stream_type="KinesisStreamAsSource",
            kinesis_stream_source_configuration=firehose.CfnDeliveryStream.KinesisStreamSourceConfigurationProperty(
                kinesis_stream_arn=stream_arn, role_arn=role.attr_arn),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=lake.bucket_arn, role_arn=role.attr_arn,
                prefix=f"{project}/landing/{dataset}/", error_output_prefix=f"{project}/landing-errors/{dataset}/",
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(interval_in_seconds=60, size_in_m_bs=16),
                compression_format="UNCOMPRESSED",
                processing_configuration=firehose.CfnDeliveryStream.ProcessingConfigurationProperty(
                    enabled=True, processors=[firehose.CfnDeliveryStream.ProcessorProperty(type="AppendDelimiterToRecord")])))
        role.cfn_options.condition = self._firehose_condition
        delivery.cfn_options.condition = self._firehose_condition

    # ------------------------------------------------------------------ EMR

    def _cluster(self, p: dict, artifacts: s3.Bucket, ec2_role: iam.CfnRole, profile: iam.CfnInstanceProfile):
        """A long-running EMR cluster: Spark, the bootstrap action, EMR's Delta (delta-defaults)."""
        project = p["project"]
        artifacts_uri = f"s3://{artifacts.bucket_name}/{project}"
        service_role = iam.CfnRole(
            self, "EmrServiceRole", role_name=f"{project}-emr-service",
            assume_role_policy_document={"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "elasticmapreduce.amazonaws.com"},
                 "Action": "sts:AssumeRole"}]},
            managed_policy_arns=[f"arn:{cdk.Aws.PARTITION}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"],
            policies=[iam.CfnRole.PolicyProperty(policy_name=f"{project}-emr-service", policy_document=iam.PolicyDocument(
                statements=[iam.PolicyStatement(sid="PassTheNodeRole", actions=["iam:PassRole"], resources=[ec2_role.attr_arn],
                                                conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}})]))])
        configurations = [emr.CfnCluster.ConfigurationProperty(classification=c["Classification"],
                                                               configuration_properties=c["Properties"])
                          for c in json.loads(EMR_CONFIGURATIONS.read_text())]
        has_subnet = cdk.CfnCondition(self, "HasEmrSubnet",
                                      expression=cdk.Fn.condition_not(cdk.Fn.condition_equals(p["subnet"], "")))
        group = emr.CfnCluster.InstanceGroupConfigProperty
        cluster = emr.CfnCluster(
            self, "Cluster", name=f"{project}-{p['dataset']}", release_label=p["release"],
            applications=[emr.CfnCluster.ApplicationProperty(name=n) for n in ("Hadoop", "Spark")],
            job_flow_role=profile.ref, service_role=service_role.ref, visible_to_all_users=True,
            log_uri=f"{artifacts_uri}/logs/",
            bootstrap_actions=[emr.CfnCluster.BootstrapActionConfigProperty(
                name="fraud-anomaly runtime", script_bootstrap_action=emr.CfnCluster.ScriptBootstrapActionConfigProperty(
                    path=f"{artifacts_uri}/bootstrap/{BOOTSTRAP_SCRIPT}", args=[artifacts_uri]))],
            configurations=configurations,
            instances=emr.CfnCluster.JobFlowInstancesConfigProperty(
                master_instance_group=group(instance_count=1, instance_type=p["instance_type"], market="ON_DEMAND",
                                            name="primary"),
                core_instance_group=group(instance_count=p["core_nodes"], instance_type=p["instance_type"],
                                          market="ON_DEMAND", name="core"),
                ec2_subnet_id=cdk.Fn.condition_if(has_subnet.logical_id, p["subnet"], cdk.Aws.NO_VALUE).to_string(),
                keep_job_flow_alive_when_no_steps=True, termination_protected=False),
            tags=[cdk.CfnTag(key="for-use-with-amazon-emr-managed-policies", value="true"),
                  cdk.CfnTag(key="project", value=project)])
        for resource in (service_role, cluster):
            resource.cfn_options.condition = self._cluster_condition
        return cluster

    def _schedule(self, p: dict, cluster: emr.CfnCluster, artifacts_uri: str) -> None:
        """EventBridge Scheduler adds the nightly score step to the cluster (AddJobFlowSteps)."""
        project = p["project"]
        condition = cdk.CfnCondition(self, "NightlyScheduleEnabled", expression=cdk.Fn.condition_and(
            self._cluster_condition, self._schedule_condition))
        cluster_arn = (f"arn:{cdk.Aws.PARTITION}:elasticmapreduce:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}"
                       f":cluster/{cluster.ref}")
        role = self._role("SchedulerRole", f"{project}-nightly-score", "scheduler.amazonaws.com", [
            iam.PolicyStatement(sid="AddTheNightlyStep", actions=["elasticmapreduce:AddJobFlowSteps"],
                                resources=[cluster_arn])],
            condition={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}})
        step = emr_steps.steps(artifacts_uri, p["dataset"])["score-nightly.json"]
        schedule = scheduler.CfnSchedule(
            self, "NightlyScore", name=f"{project}-nightly-score", schedule_expression=p["schedule"],
            schedule_expression_timezone="UTC", flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn="arn:aws:scheduler:::aws-sdk:emr:addJobFlowSteps", role_arn=role.attr_arn,
                input=self.to_json_string({"JobFlowId": cluster.ref, "Steps": [step]})))
        for resource in (role, schedule):
            resource.cfn_options.condition = condition

    # ------------------------------------------------------------------ scoring API

    def _api(self, p: dict, artifacts: s3.Bucket) -> tuple[apigw.LambdaRestApi, str]:
        """(the scoring API, its bundle's S3 URI): a Lambda (code: LambdaCodeKey in the artifact
        bucket, built by scripts/lambda_package.py for LambdaRuntime) behind a REST API proxy. The
        handler (serving/lambda_handler.py) reads one thing, the bundle named by ``SERVING_BUNDLE``
        (champions, history, config: ``python -m jobs serve --write-bundle``), copied to /tmp at a
        cold start; its role may list and read exactly that prefix and writes nothing.
        """
        project = p["project"]
        function_name = f"{project}-scoring-api"
        bundle_prefix = f"{project}/serving/{p['dataset']}/bundle"
        bundle_uri = f"s3://{artifacts.bucket_name}/{bundle_prefix}"
        s = iam.PolicyStatement
        log_group = logs.CfnLogGroup(self, "ApiLogs", log_group_name=f"/aws/lambda/{function_name}",
                                     retention_in_days=30)
        role = self._role("ApiRole", function_name, "lambda.amazonaws.com", [
            s(sid="Logs", actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[f"{log_group.attr_arn}"]),
            s(sid="ReadBundle", actions=["s3:GetObject"], resources=[artifacts.arn_for_objects(f"{bundle_prefix}/*")]),
            s(sid="ListBundle", actions=["s3:ListBucket"], resources=[artifacts.bucket_arn],
              conditions={"StringLike": {"s3:prefix": [f"{bundle_prefix}/*"]}}),
        ])
        function = lambda_.CfnFunction(
            self, "ApiFunction", function_name=function_name, role=role.attr_arn, handler=LAMBDA_HANDLER,
            runtime=p["lambda_runtime"], memory_size=1024, timeout=30, architectures=["x86_64"],
            code=lambda_.CfnFunction.CodeProperty(s3_bucket=artifacts.bucket_name, s3_key=p["lambda_key"]),
            environment=lambda_.CfnFunction.EnvironmentProperty(variables={"SERVING_BUNDLE": bundle_uri}))
        function.node.add_dependency(log_group)
        fn = lambda_.Function.from_function_attributes(self, "ApiFunctionRef", function_arn=function.attr_arn,
                                                       same_environment=True)
        api = apigw.LambdaRestApi(self, "ScoringApi", handler=fn, proxy=True, rest_api_name=function_name,
                                  cloud_watch_role=False, deploy_options=apigw.StageOptions(stage_name="v1"))
        api.node.try_remove_child("Endpoint")   # its own output, unconditional: ApiUrl replaces it
        _when(api, self._api_condition)
        for resource in (log_group, role, function):
            resource.cfn_options.condition = self._api_condition
        log_group.add_property_override("RetentionInDays", p["log_days"])
        return api, bundle_uri
