"""The one SparkSession builder every job and test uses."""
from __future__ import annotations

from typing import Mapping

from pyspark.sql import SparkSession

from runtime.aws import endpoint_for, s3a_hadoop_conf, sagemaker_jars, sagemaker_spark_conf


def extra_jars(setting: str) -> list[str]:
    """Jars to put on the classpath for ``spark.extra_jars``.

    ``auto`` adds sagemaker-pyspark's jars in a working order (they bring hadoop-aws and the AWS
    SDK, so ``s3a://`` works, and the SageMaker estimators) plus Debian's protobuf-java, which
    its RecordIO writer needs, when they are installed. Anything else is a comma-separated list.
    """
    if not setting:
        return []
    if setting != "auto":
        return [part for part in setting.split(",") if part]
    return sagemaker_jars()


def s3a_settings(aws_conf: Mapping) -> dict[str, str]:
    """Spark settings that point ``s3a://`` at ``aws.endpoint_url`` (or ``aws.endpoints.s3``)."""
    conf = s3a_hadoop_conf(endpoint_for("s3", aws_conf), region=aws_conf["region"])
    return {f"spark.hadoop.{key}": value for key, value in conf.items()}


def delta_settings(package: str, fmt: str) -> dict[str, str]:
    """Spark settings for Delta Lake: the package Spark resolves through Ivy when the JVM starts
    (``make install`` fills the cache, so later sessions start offline; ``spark-submit`` ignores
    it: pass ``--packages`` there, or use the cluster's own Delta with ``package`` empty), the
    SQL extension and catalog (MERGE, time travel, OPTIMIZE, VACUUM). Empty when the tables are
    Parquet and no package is asked for, so a session without Delta jars still starts.
    """
    if not package and fmt != "delta":
        return {}
    settings = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # the default 50 runs a 50-task stage on every read of a table's log; our logs are small
        "spark.databricks.delta.snapshotPartitions": "2",
    }
    if package:
        settings["spark.jars.packages"] = package
    return settings


def session_settings(config: Mapping) -> dict[str, str]:
    """All Spark settings derived from the config (pure, so it can be tested without a JVM)."""
    spark_conf = config["spark"]
    settings = {
        "spark.app.name": spark_conf["app_name"],
        "spark.sql.shuffle.partitions": str(spark_conf["shuffle_partitions"]),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # The logistic model's closed form over many features makes a whole-stage method larger
        # than the 8000 bytecode bytes HotSpot compiles; Spark then falls back to per-expression
        # code instead of running that stage interpreted (3-4x slower scoring). spark.conf wins.
        "spark.sql.codegen.hugeMethodLimit": "8000",
        "spark.ui.showConsoleProgress": "false",
    }
    if spark_conf["master"]:
        settings["spark.master"] = spark_conf["master"]
    if spark_conf["driver_memory"]:
        settings["spark.driver.memory"] = spark_conf["driver_memory"]
    settings.update(sagemaker_spark_conf(extra_jars(spark_conf["extra_jars"])))
    settings.update(s3a_settings(config["aws"]))
    settings.update(delta_settings(spark_conf["delta_package"], config["storage"]["format"]))
    kinesis = config["stream"]["source"] == "kinesis" and config["stream"]["kinesis"]["connector"] != "aws"
    if spark_conf["kinesis_package"] and kinesis:   # the Maven Central connector (auto or qubole)
        settings["spark.jars.packages"] = ",".join(
            p for p in (settings.get("spark.jars.packages"), spark_conf["kinesis_package"]) if p)
    settings.update({str(k): str(v) for k, v in spark_conf["conf"].items()})
    return settings


def build_session(config: Mapping) -> SparkSession:
    """Create (or reuse) the SparkSession for ``config``."""
    builder = SparkSession.builder
    for key, value in session_settings(config).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config["spark"]["log_level"])
    return spark



def fetch_packages() -> None:
    """Resolve the configured Delta package (and its dependencies) into the Ivy cache now, so
    that later sessions, tests and ``make run`` start offline (``make install`` runs this).
    """
    from runtime.config import load_config

    config = load_config(overrides=["spark.master=local[1]", "spark.extra_jars=", "spark.log_level=ERROR",
                                    "stream.source=kinesis"])   # resolves spark.kinesis_package too
    package = config["spark"]["delta_package"]
    spark = build_session(config)
    try:
        spark.range(1).write.format("delta").mode("overwrite").save(_scratch_table())
        print(f"delta: {package} resolved into the Ivy cache and a table written with it")
    finally:
        spark.stop()


def _scratch_table() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="delta-check-") + "/t"


if __name__ == "__main__":
    fetch_packages()
