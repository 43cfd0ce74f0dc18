"""The EMR steps of the deployment, as plain data: one definition for the stack's nightly schedule
(deploy/cdk/stack.py) and for the step files the config writer puts beside the config
(deploy/stack_config.py), so both call the same wrapper with the same config.

Each step runs ``fraud-submit`` (installed by the bootstrap action in deploy/bootstrap) with the
config the writer made from the stack's outputs and uploaded to ``<artifacts>/dist/conf/emr.yaml``.
Plain Python: the values may be CDK tokens (strings) or the deployed stack's real names.
"""
from __future__ import annotations

SUBMIT = "/usr/lib/fraud-anomaly/bin/fraud-submit"
STREAM_TRIGGER = "30 seconds"     # processing time: the aws-kinesis connector has no available-now
STREAM_RUN_SECONDS = 3300         # the stream step ends after this; the next one resumes from the checkpoint


def conf_uri(artifacts_uri: str) -> str:
    """Where the written config is uploaded: ``<artifacts>/dist/conf/emr.yaml`` (``make package`` layout)."""
    return f"{artifacts_uri}/dist/conf/emr.yaml"


def step_args(job: str, conf: str, dataset: str, *extra: str) -> list[str]:
    """The command-runner arguments of one step: the wrapper, the job file, the config, the options."""
    return [SUBMIT, job, conf, "--dataset", dataset, *extra]


def steps(artifacts_uri: str, dataset: str) -> dict[str, dict]:
    """Every step by file name, in the shape of EMR's AddJobFlowSteps ``Steps`` entries."""
    conf = conf_uri(artifacts_uri)
    jobs = {
        "features.json": ("features", "build_features", ()),
        "train.json": ("train (SageMaker)", "train", ("--model", "all")),
        "score-nightly.json": ("nightly score (SageMaker)", "score", ("--last-days", "1")),
        "stream.json": ("stream", "stream", ("--source", "kinesis", "--trigger", STREAM_TRIGGER,
                                             "--run-seconds", str(STREAM_RUN_SECONDS))),
    }
    return {name: {"Name": f"fraud-anomaly {title}", "ActionOnFailure": "CONTINUE",
                   "HadoopJarStep": {"Jar": "command-runner.jar", "Args": step_args(job, conf, dataset, *extra)}}
            for name, (title, job, extra) in jobs.items()}


def cli_steps(step: dict) -> list[dict]:
    """One step in the shape ``aws emr add-steps --steps file://...`` reads (CUSTOM_JAR, flat Args)."""
    return [{"Type": "CUSTOM_JAR", "Name": step["Name"], "ActionOnFailure": step["ActionOnFailure"],
             "Jar": step["HadoopJarStep"]["Jar"], "Args": step["HadoopJarStep"]["Args"]}]
