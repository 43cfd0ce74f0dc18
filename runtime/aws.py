"""AWS access for jobs: boto3 clients, the Java clients sagemaker-pyspark takes, and s3a setup.

Everything here takes plain values (an ``aws_conf`` dict, a region, an endpoint URL) so the same
code reaches real AWS on EMR and a local moto server in tests. ``aws_conf`` looks like::

    {"region": "us-east-1", "endpoint_url": None,
     "endpoints": {"s3": None, "sagemaker": None, "sts": None,
                   "sagemaker_runtime": None, "kinesis": None, "sns": None}}

A per-service entry in ``endpoints`` wins over ``endpoint_url``; ``None`` everywhere means the
real AWS endpoints of ``region``. Credentials are never read here: boto3 and the AWS Java SDK
both use their default provider chains (environment, profile, EMR instance profile).

Classpath facts (pyspark 3.5.9, Java 17, sagemaker_pyspark 1.4.5 installed with ``--no-deps``):
``sagemaker_jars()`` lists the jars that must be on the *driver JVM's launch classpath*
(``spark.driver.extraClassPath``) and shipped to executors (``spark.jars``). They must be set
before the first SparkContext of the Python process starts its JVM; adding them to a running
JVM does not make the classes visible to py4j.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import Any

#: protobuf-java for sagemaker-spark's RecordIO writer: its jars do not bundle it. Its generated
#: classes use protobuf 2.5's API (``GeneratedMessage``, ``Parser``), the version Hadoop puts on
#: EMR's classpath; ``make install`` resolves it from Maven Central into the Ivy cache.
PROTOBUF_PACKAGE = "com.google.protobuf:protobuf-java:2.5.0"

#: Debian's ``libprotobuf-java``, used when the Maven jar is in neither local cache.
PROTOBUF_JAR = "/usr/share/java/protobuf.jar"

#: boto3 service names for the keys of ``aws_conf["endpoints"]``.
_BOTO3_SERVICE = {"sagemaker_runtime": "sagemaker-runtime"}
_CONF_KEY = {v: k for k, v in _BOTO3_SERVICE.items()}

_SDK = "com.amazonaws"


class AwsConfigError(ValueError):
    """The ``aws`` config block is missing something a client needs."""


def endpoint_for(service: str, aws_conf: Mapping[str, Any]) -> str | None:
    """Endpoint URL override for ``service`` (boto3 or config spelling), or None for real AWS."""
    key = _CONF_KEY.get(service, service)
    endpoints = aws_conf.get("endpoints") or {}
    return endpoints.get(key) or aws_conf.get("endpoint_url") or None


def _region(aws_conf: Mapping[str, Any]) -> str:
    region = aws_conf.get("region")
    if not region:
        raise AwsConfigError("aws.region must be set (e.g. us-east-1)")
    return str(region)


def client(service: str, aws_conf: Mapping[str, Any], *, attempts: int | None = None,
           timeout_seconds: float | None = None):
    """A boto3 client for ``service`` (``s3``, ``sagemaker``, ``sagemaker_runtime``, ...).

    ``attempts`` (total, 1 = no retry by botocore) and ``timeout_seconds`` (connect and read)
    override botocore's defaults for callers that handle retries themselves.
    """
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {}
    if attempts is not None:
        options["retries"] = {"total_max_attempts": attempts, "mode": "standard"}
    if timeout_seconds is not None:
        options["connect_timeout"] = options["read_timeout"] = timeout_seconds
    boto_name = _BOTO3_SERVICE.get(service, service)
    return boto3.client(
        boto_name,
        region_name=_region(aws_conf),
        endpoint_url=endpoint_for(boto_name, aws_conf),
        **({"config": Config(**options)} if options else {}),
    )


# --------------------------------------------------------------------------- classpath


def _jar_rank(path: str) -> tuple[int, str]:
    # The 1.12.262 per-service SDK jars must shadow the older aws-java-sdk-bundle 1.11.901 that
    # hadoop-aws pulls in: sagemaker-spark is compiled against 1.12.x and the bundle also holds
    # (older) copies of the same classes. First on the classpath wins.
    name = os.path.basename(path)
    if name.startswith("sagemaker-spark"):
        return (0, name)
    if name.startswith("aws-java-sdk-") and "bundle" not in name:
        return (1, name)
    if name.startswith("hadoop-aws"):
        return (2, name)
    return (3, name)


def java_home_dir() -> str:
    """The home folder the JVM sees (``user.home``: the account's, from the password database,
    not ``$HOME``), under which Spark's Ivy keeps ``.ivy2`` and Maven ``.m2``.
    """
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return os.path.expanduser("~")


def protobuf_jar(home: str | None = None) -> str | None:
    """The protobuf-java jar of ``PROTOBUF_PACKAGE`` from the Ivy cache (where ``make install``
    puts it) or the Maven repository under ``home`` (default ``java_home_dir()``), else Debian's
    ``PROTOBUF_JAR``; None when none exists.
    """
    group, artifact, version = PROTOBUF_PACKAGE.split(":")
    home = home or java_home_dir()
    name = f"{artifact}-{version}.jar"
    candidates = (  # Ivy's cache keeps it under bundles/ (its Maven packaging) or jars/
        os.path.join(home, ".ivy2", "cache", group, artifact, "bundles", name),
        os.path.join(home, ".ivy2", "cache", group, artifact, "jars", name),
        os.path.join(home, ".ivy2", "jars", f"{group}_{name}"),
        os.path.join(home, ".m2", "repository", *group.split("."), artifact, version, name),
        PROTOBUF_JAR,
    )
    for path in candidates:
        if os.path.exists(path):
            return os.path.realpath(path)
    return None


def sagemaker_jars(include_protobuf: bool = True) -> list[str]:
    """Jar paths sagemaker-pyspark needs, in classpath order; [] if it is not installed.

    Ends with ``protobuf_jar()`` when ``include_protobuf`` and one is found.
    """
    try:
        import sagemaker_pyspark
    except ImportError:
        return []
    jar_dir = os.path.join(os.path.dirname(sagemaker_pyspark.__file__), "jars")
    # Globbing instead of sagemaker_pyspark.classpath_jars(): that one imports pkg_resources,
    # which is deprecated and missing from recent setuptools-less environments.
    jars = sorted(glob.glob(os.path.join(jar_dir, "*.jar")), key=_jar_rank)
    protobuf = protobuf_jar() if include_protobuf else None
    if protobuf:
        jars.append(protobuf)
    return jars


def sagemaker_spark_conf(jars: list[str] | None = None) -> dict[str, str]:
    """Spark settings that put ``jars`` (default ``sagemaker_jars()``) on driver and executors.

    ``spark.driver.extraClassPath`` makes the classes visible to py4j and keeps one copy of each
    class in local mode (the runtime-client setter below relies on that); ``spark.jars`` ships
    them to YARN executors. Empty dict when there are no jars.
    """
    jars = sagemaker_jars() if jars is None else jars
    if not jars:
        return {}
    return {
        "spark.driver.extraClassPath": os.pathsep.join(jars),
        "spark.executor.extraClassPath": os.pathsep.join(jars),
        "spark.jars": ",".join(jars),
    }


def has_sagemaker_classes(spark) -> bool:
    """True when the running JVM can load sagemaker-spark's classes."""
    try:
        spark._jvm.java.lang.Class.forName(
            "com.amazonaws.services.sagemaker.sparksdk.SageMakerEstimator",
            True,
            spark._jvm.java.lang.Thread.currentThread().getContextClassLoader(),
        )
        return True
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        return False


# --------------------------------------------------------------------------- Java SDK clients


def _java_builder(spark, builder_class: str, service: str, aws_conf: Mapping[str, Any]):
    jvm = spark._jvm
    builder = _jvm_path(jvm, builder_class).standard()
    region = _region(aws_conf)
    endpoint = endpoint_for(service, aws_conf)
    if endpoint:
        cfg = _jvm_path(jvm, f"{_SDK}.client.builder.AwsClientBuilder.EndpointConfiguration")
        builder = builder.withEndpointConfiguration(cfg(endpoint, region))
    else:
        builder = builder.withRegion(region)
    return builder


def _jvm_path(jvm, dotted: str):
    obj = jvm
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def java_sagemaker_client(spark, aws_conf: Mapping[str, Any]):
    """``com.amazonaws.services.sagemaker.AmazonSageMaker`` honouring the endpoint override."""
    return _java_builder(
        spark, f"{_SDK}.services.sagemaker.AmazonSageMakerClientBuilder", "sagemaker", aws_conf
    ).build()


def java_s3_client(spark, aws_conf: Mapping[str, Any]):
    """``com.amazonaws.services.s3.AmazonS3`` (path-style when pointed at an http endpoint)."""
    builder = _java_builder(spark, f"{_SDK}.services.s3.AmazonS3ClientBuilder", "s3", aws_conf)
    if endpoint_for("s3", aws_conf):
        builder = builder.withPathStyleAccessEnabled(True)
    return builder.build()


def java_sts_client(spark, aws_conf: Mapping[str, Any]):
    """``AWSSecurityTokenService`` honouring the endpoint override."""
    return _java_builder(
        spark,
        f"{_SDK}.services.securitytoken.AWSSecurityTokenServiceClientBuilder",
        "sts",
        aws_conf,
    ).build()


def java_clients(spark, aws_conf: Mapping[str, Any]) -> dict[str, Any]:
    """The three clients sagemaker-pyspark estimators take, as py4j Java objects.

    Returns ``{"sagemakerClient": ..., "s3Client": ..., "stsClient": ...}``: pass them as
    keyword arguments to ``SageMakerEstimator``/``LinearLearnerBinaryClassifier`` (its wrapper
    hands py4j objects through unchanged).
    """
    return {
        "sagemakerClient": java_sagemaker_client(spark, aws_conf),
        "s3Client": java_s3_client(spark, aws_conf),
        "stsClient": java_sts_client(spark, aws_conf),
    }


# --------------------------------------------------------------------------- s3a


def s3a_hadoop_conf(
    endpoint_url: str | None,
    *,
    region: str | None = None,
    credentials_provider: str | None = None,
) -> dict[str, str]:
    """Hadoop settings (without the ``spark.hadoop.`` prefix) for ``s3a://`` against an endpoint.

    ``endpoint_url=None`` leaves the AWS endpoint alone (only region/provider are set). An
    ``http://`` endpoint switches SSL off; any override turns on path-style access, which local
    servers need because bucket-name host names do not resolve.
    """
    conf: dict[str, str] = {
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        # Java SDK v1 default chain: env vars, -Daws.accessKeyId, profile, instance profile.
        "fs.s3a.aws.credentials.provider": credentials_provider
        or "com.amazonaws.auth.DefaultAWSCredentialsProviderChain",
    }
    if region:
        conf["fs.s3a.endpoint.region"] = region
    if endpoint_url:
        conf["fs.s3a.endpoint"] = endpoint_url
        conf["fs.s3a.path.style.access"] = "true"
        conf["fs.s3a.connection.ssl.enabled"] = str(endpoint_url.startswith("https://")).lower()
        # Local servers do not speak the v2 change-detection headers consistently.
        conf["fs.s3a.change.detection.mode"] = "none"
    return conf


def configure_s3a(spark, aws_conf: Mapping[str, Any]) -> dict[str, str]:
    """Apply ``s3a_hadoop_conf`` for ``aws_conf`` to the running session's Hadoop conf.

    Returns the settings applied. Builders can pass the same dict, prefixed with
    ``spark.hadoop.``, at session build time instead.
    """
    conf = s3a_hadoop_conf(endpoint_for("s3", aws_conf), region=aws_conf.get("region"))
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in conf.items():
        hadoop_conf.set(key, value)
    return conf
