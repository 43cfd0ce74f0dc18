"""One local SparkSession for the whole test run."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from runtime.aws import sagemaker_spark_conf
    from runtime.config import load_config
    from runtime.spark import delta_settings, launch_settings, prepare_local_launch

    # Python workers run this interpreter (the project .venv's under make), Spark binds to loopback
    # and logs through runtime/log4j2.properties, as the jobs' local sessions do.
    prepare_local_launch()
    builder = SparkSession.builder
    for key, value in launch_settings({}).items():
        builder = builder.config(key, value)
    # One JVM serves every test module, so it carries sagemaker-pyspark's jars (when installed)
    # for the SageMaker contract tests; classes cannot be added to a running JVM later.
    for key, value in sagemaker_spark_conf().items():
        builder = builder.config(key, value)
    defaults = load_config()
    for key, value in delta_settings(defaults["spark"]["delta_package"], defaults["storage"]["format"]).items():
        builder = builder.config(key, value)
    session = (
        builder.master("local[2]")
        .appName("tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
