"""Scoring's faster path (the Python workers read and write the tables' files by their local
paths, the driver commits them from its own disk) is for one machine only: under a cluster
master the nightly run reads through Spark, and says why."""
from types import SimpleNamespace

import pytest

from runtime.errors import InputError
from scoring.nightly import one_machine_problem, window_files

FILES = ["file:/lake/features/date=2026-01-01/part-0.parquet", "file:/lake/features/date=2026-01-02/part-0.parquet"]


def fake(master):
    spark = SimpleNamespace(sparkContext=SimpleNamespace(master=master))
    table = SimpleNamespace(inputFiles=lambda: list(FILES))
    return spark, table


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local-cluster[2,1,1024]"])
def test_a_local_master_is_one_machine(master):
    spark, table = fake(master)
    assert one_machine_problem(spark) is None
    files, why = window_files(spark, table, "/lake/features", "parquet", "auto", "2026-01-02", "2026-01-02")
    assert (files, why) == ([(FILES[1], "2026-01-02")], None)


@pytest.mark.parametrize("master", ["spark://127.0.0.1:7077", "yarn", "k8s://https://h:443"])
def test_a_cluster_master_reads_local_tables_through_spark_with_the_reason(master):
    spark, table = fake(master)
    files, why = window_files(spark, table, "/lake/features", "parquet", "auto", "2026-01-01", "2026-01-02")
    assert files is None
    assert why == f"master {master}: executors may not share the driver's disk"


def test_the_arrow_reader_refuses_a_cluster_master_naming_it():
    spark, table = fake("spark://127.0.0.1:7077")
    with pytest.raises(InputError, match="master spark://127.0.0.1:7077: executors may not share"):
        window_files(spark, table, "/lake/features", "parquet", "arrow", "2026-01-01", "2026-01-02")


def test_a_table_on_s3_is_read_by_spark_whatever_the_master():
    spark, _ = fake("local[2]")
    table = SimpleNamespace(inputFiles=lambda: ["s3a://b/lake/features/date=2026-01-01/part-0.parquet"])
    files, why = window_files(spark, table, "s3a://b/lake/features", "parquet", "auto", "2026-01-01", "2026-01-01")
    assert files is None and why == "s3a://b/lake/features is not a local parquet table partitioned by date"
