"""Delta writes beyond a plain save (MERGE, replaceWhere) and the facts of a Delta table (exists, last commit).

MERGE needs Delta's transaction log: there is no upsert into a Parquet folder. A MERGE is one
commit: readers see the table before it or after it, never half of it.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

from pyspark.sql import DataFrame, SparkSession


class Commit(NamedTuple):
    """One entry of a Delta table's history."""

    version: int
    operation: str
    metrics: dict[str, int]


def is_delta(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` holds a Delta table (False for a missing path or a Parquet folder)."""
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def last_commit(spark: SparkSession, path: str) -> Commit | None:
    """The latest commit of the Delta table at ``path`` (its operation metrics as numbers), or
    None when ``path`` holds no Delta table.
    """
    from delta.tables import DeltaTable

    if not is_delta(spark, path):
        return None
    row = DeltaTable.forPath(spark, path).history(1).first()
    metrics = {key: int(value) for key, value in (row["operationMetrics"] or {}).items()
               if str(value).lstrip("-").isdigit()}
    return Commit(int(row["version"]), str(row["operation"]), metrics)


def merge_rows(spark: SparkSession, source_df: DataFrame, path: str, *, keys: Sequence[str],
               update: Mapping[str, str], update_when: str | None = None, insert: bool = True,
               where: str | None = None) -> Commit:
    """MERGE ``source_df`` (alias ``s``) into the Delta table at ``path`` (alias ``t``) on equal
    ``keys``, in one commit, and return that commit.

    A matched row for which ``update_when`` holds (SQL over ``t.`` and ``s.``; None: always)
    gets ``update`` (target column -> SQL expression); with ``insert`` an unmatched source row
    is inserted whole (the table's columns taken from ``s`` by name). With ``insert`` a missing
    table is created first with ``source_df``'s schema (its own commit, version 0); without it
    the table must exist. ``where`` (SQL over ``t.``, e.g. ``t.date IN (DATE'2026-01-31')``)
    narrows the target rows looked at, so a table partitioned by it is read only there.
    ``source_df`` must hold at most one row per key (Delta refuses a MERGE where two source rows
    match one target row). Every source row is looked at, and Delta rewrites the files of the
    matched rows even where ``update_when`` leaves them as they are: give it only the rows that
    change, and no MERGE at all when none does (then no table version is written).
    """
    from delta.tables import DeltaTable

    if insert:
        (DeltaTable.createIfNotExists(spark).location(path).addColumns(source_df.schema).execute())
    table = DeltaTable.forPath(spark, path)
    on = " AND ".join(f"t.`{key}` = s.`{key}`" for key in keys) + (f" AND ({where})" if where else "")
    merge = (table.alias("t").merge(source_df.alias("s"), on)
             .whenMatchedUpdate(condition=update_when, set=dict(update)))
    if insert:
        merge = merge.whenNotMatchedInsertAll()
    merge.execute()
    commit = last_commit(spark, path)
    assert commit is not None  # the table exists: it was merged into
    return commit


def replace_where(df: DataFrame, path: str, condition: str, *, merge_schema: bool = False) -> None:
    """Replace the rows of the Delta table at ``path`` for which ``condition`` (SQL) holds with
    ``df``, in one commit (the table is created when missing). Every row of ``df`` must meet
    ``condition`` (Delta refuses the write otherwise). ``merge_schema``: columns of ``df`` the
    table lacks are added to it.
    """
    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", condition)
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    writer.save(path)


def sql_string(value: str) -> str:
    """``value`` as a Spark SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
