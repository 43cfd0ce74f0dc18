"""Reading and writing tables on local paths or s3a:// URIs (Parquet, Delta, CSV, JSON lines)."""
from __future__ import annotations

from typing import Sequence

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

RAW_FORMATS = ("parquet", "csv", "json", "delta")


class StorageError(RuntimeError):
    """A location that cannot be read or written; the message names it."""


def read_raw(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    """A user's raw input. CSV columns stay text and unparseable JSON lines are kept in
    ``_corrupt_record``, so validation sees every row as it was.
    """
    if fmt not in RAW_FORMATS:
        raise StorageError(f"unknown input format {fmt!r} for {path} (use one of {', '.join(RAW_FORMATS)})")
    reader = spark.read
    if fmt == "csv":
        reader = reader.option("header", "true").option("inferSchema", "false").option("mode", "PERMISSIVE")
    elif fmt == "json":
        reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", "_corrupt_record")
    try:
        df = reader.format(fmt).load(path)
        df.schema  # noqa: B018 - forces Spark to open the files now, so a bad file is named here
    except Exception as exc:  # AnalysisException, or a py4j error from a corrupt file
        raise StorageError(f"cannot read {fmt} input {path}: {first_line(exc)}") from None
    return df


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_table(spark: SparkSession, path: str, fmt: str = "parquet") -> DataFrame:
    """A table this project wrote (Parquet or Delta)."""
    try:
        return spark.read.format(fmt).load(path)
    except AnalysisException as exc:
        raise StorageError(f"cannot read {fmt} table {path}: {first_line(exc)}") from None


def write_table(df: DataFrame, path: str, fmt: str = "parquet", *, partition_by: Sequence[str] = (),
                mode: str = "overwrite") -> None:
    """Write ``df``. With partitions and mode overwrite only the partitions present in ``df`` are
    replaced (dynamic partition overwrite), so rebuilding one date leaves the others alone.
    """
    writer = df.write.format(fmt).mode(mode)
    if fmt == "csv":
        writer = writer.option("header", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
        if fmt == "delta" and mode == "overwrite":
            writer = writer.option("partitionOverwriteMode", "dynamic")
    writer.save(path)
