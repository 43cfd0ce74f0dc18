"""The one SparkSession builder every job and test uses."""
from __future__ import annotations

import os
import sys
from typing import Mapping

from pyspark import SparkContext
from pyspark.sql import SparkSession

from runtime.aws import endpoint_for, s3a_hadoop_conf, sagemaker_jars, sagemaker_spark_conf


def extra_jars(setting: str) -> list[str]:
    """Jars to put on the classpath for ``spark.extra_jars``.

    ``auto`` adds sagemaker-pyspark's jars in a working order (they bring hadoop-aws and the AWS
    SDK, so ``s3a://`` works, and the SageMaker estimators) plus protobuf-java, which its RecordIO
    writer needs (``runtime.aws.protobuf_jar``), when they are installed. Anything else is a
    comma-separated list.
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


#: Our log4j2 configuration: Spark's defaults without the start-up notices (native-hadoop, the
#: shell's "Setting default log level" banner, which Spark prints only with its own defaults).
LOG4J2_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")


def is_local_master(master: str | None) -> bool:
    """True for ``local``/``local[N]``/``local[*]``, and for no master at all (outside
    ``spark-submit`` Spark then runs locally).
    """
    return not master or master == "local" or master.startswith("local[")


def launch_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """Settings for a driver JVM that this Python process starts itself (``python -m jobs``, the
    tests), added to ``settings``: our log4j2 file before any ``spark.driver.extraJavaOptions``
    already there. Under ``spark-submit`` the driver runs already and its own logging applies.
    """
    options = f"-Dlog4j.configurationFile=file:{LOG4J2_CONF}"
    given = settings.get("spark.driver.extraJavaOptions", "")
    return {"spark.driver.extraJavaOptions": f"{options} {given}".strip()}


def prepare_local_launch() -> None:
    """Environment for a local-mode JVM this process starts: Python workers run this process's
    interpreter (a project virtualenv's, not whatever ``python3`` is first on PATH) and Spark binds
    to the loopback address instead of warning that the hostname resolves to one. Values already
    in the environment win.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def starts_jvm() -> bool:
    """True when the next session will launch the JVM from this process (none was started yet, and
    we are not a ``spark-submit`` child, which gets its JVM through ``PYSPARK_GATEWAY_PORT``). A
    JVM outlives ``spark.stop()``: a later session in the process reuses it as it is.
    """
    return SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ


def packages_manifest() -> str:
    """The file where ``make install`` records the jars Ivy resolved for each ``spark.jars.packages``
    value, beside those jars (``~/.ivy2/jars``).
    """
    from runtime.aws import java_home_dir

    return os.path.join(java_home_dir(), ".ivy2", "jars", "zen-anomaly-packages.json")


def _read_manifest() -> dict[str, list[str]]:
    import json

    try:
        with open(packages_manifest()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def record_package_jars(packages: str, jars: list[str]) -> None:
    """Remember that Ivy resolved ``packages`` to the local ``jars`` (see ``cached_packages``)."""
    import json

    manifest = _read_manifest()
    manifest[packages] = jars
    os.makedirs(os.path.dirname(packages_manifest()), exist_ok=True)
    with open(packages_manifest(), "w") as f:
        json.dump(manifest, f, indent=1)


def cached_packages(settings: Mapping[str, str]) -> list[str] | None:
    """The local jars ``make install`` resolved for ``settings``' ``spark.jars.packages`` when every
    one of them is still on disk, else None (and Spark resolves the packages through Ivy).

    Ivy resolves the same jars from its cache on every session start, but prints a screenful of
    resolution report while doing it; the local jars in ``spark.jars`` give the same classpath.
    """
    packages = settings.get("spark.jars.packages", "")
    jars = _read_manifest().get(packages) if packages else None
    if not jars or not all(os.path.isfile(jar) for jar in jars):
        return None
    return jars


def build_session(config: Mapping) -> SparkSession:
    """Create (or reuse) the SparkSession for ``config``."""
    return _session(session_settings(config), config["spark"]["master"], config["spark"]["log_level"])


def _session(settings: dict[str, str], master: str | None, log_level: str, resolve: bool = False) -> SparkSession:
    """The session for ``settings``; when this process starts the JVM, with ``launch_settings``,
    the packages' cached jars unless ``resolve`` (see ``cached_packages``), and for a local master
    ``prepare_local_launch``'s environment.
    """
    if starts_jvm():
        settings.update(launch_settings(settings))
        jars = None if resolve else cached_packages(settings)
        if jars:
            del settings["spark.jars.packages"]
            settings["spark.jars"] = ",".join([jar for jar in settings.get("spark.jars", "").split(",") if jar] + jars)
        if is_local_master(master):
            prepare_local_launch()
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    return spark


def fetch_packages() -> None:
    """Resolve the configured Delta package and protobuf-java (``runtime.aws.PROTOBUF_PACKAGE``,
    which the SageMaker backend puts on the classpath), with their dependencies, from Maven
    Central into the Ivy cache now, so that later sessions, tests and ``make run`` start offline
    (``make install`` runs this). Fails when either is missing afterwards.
    """
    from runtime.aws import PROTOBUF_JAR, PROTOBUF_PACKAGE, protobuf_jar
    from runtime.config import load_config

    config = load_config(overrides=["spark.master=local[1]", "spark.extra_jars=", "spark.log_level=ERROR",
                                    "stream.source=kinesis"])   # resolves spark.kinesis_package too
    delta, kinesis = config["spark"]["delta_package"], config["spark"]["kinesis_package"]
    # One JVM start resolves all three through Ivy (not from the manifest). protobuf-java and the
    # Kinesis connector depend on nothing and are retrieved as group_artifact-version.jar; Delta's
    # jars are the rest. The manifest gets an entry per packages value a session asks for: Delta
    # alone (every job) and Delta with the connector (a Kinesis stream, runtime/sources.py).
    def retrieved(package: str) -> str:
        return "{}_{}-{}.jar".format(*package.split(":"))

    singles = {retrieved(p) for p in (kinesis, PROTOBUF_PACKAGE) if p}
    settings = {**session_settings(config),
                "spark.jars.packages": ",".join(p for p in (delta, kinesis, PROTOBUF_PACKAGE) if p)}
    spark = _session(settings, config["spark"]["master"], config["spark"]["log_level"], resolve=True)
    try:
        resolved = [uri.removeprefix("file://") for uri in spark.sparkContext.getConf().get("spark.jars", "").split(",")
                    if uri]
        spark.range(1).write.format("delta").mode("overwrite").save(_scratch_table())
        delta_jars = [jar for jar in resolved if os.path.basename(jar) not in singles]
        kinesis_jars = [jar for jar in resolved if kinesis and os.path.basename(jar) == retrieved(kinesis)]
        if kinesis and not kinesis_jars:
            raise SystemExit(f"kinesis: {kinesis} was not among the jars Ivy resolved: {resolved}")
        if delta:
            record_package_jars(delta, delta_jars)
        if kinesis:
            record_package_jars(",".join(p for p in (delta, kinesis) if p), delta_jars + kinesis_jars)
        print(f"delta: {delta} resolved into the Ivy cache ({len(delta_jars)} jars) and a table written with it")
        if kinesis:
            print(f"kinesis: {kinesis} resolved into the Ivy cache")
    finally:
        spark.stop()
    jar = protobuf_jar()
    if jar is None or jar == os.path.realpath(PROTOBUF_JAR):
        raise SystemExit(f"protobuf-java: {PROTOBUF_PACKAGE} is in neither ~/.ivy2 nor ~/.m2 after resolving it")
    print(f"protobuf-java: {PROTOBUF_PACKAGE} at {jar}")


def _scratch_table() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="delta-check-") + "/t"


if __name__ == "__main__":
    fetch_packages()
