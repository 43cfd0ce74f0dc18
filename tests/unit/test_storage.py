"""runtime/storage.py: partitioned writes without the planned sort, per-column encodings, file listings,
the Delta commit of files written outside Spark, replaceWhere retries after a conflict."""
import datetime as dt

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from runtime.storage import StorageError, partition_files, write_table


def rows(spark, days=3, per_day=50):
    data = [(f"e{d}-{i}", dt.date(2026, 1, 1 + d), float(i) / 7, i % 3)
            for d in range(days) for i in range(per_day)]
    return spark.createDataFrame(data, "event_id string, date date, score double, bucket int")


def test_open_files_write_leaves_the_same_rows_and_restores_the_session(spark, tmp_path):
    df = rows(spark).repartition(2)  # every task holds every date: open files, no sort
    before = {k: spark.conf.get(k, None) for k in ("spark.sql.optimizer.plannedWrite.enabled",
                                                   "spark.sql.maxConcurrentOutputFileWriters")}
    write_table(df, str(tmp_path / "t"), partition_by=["date"], open_files=4, plain_columns=["event_id", "score"])
    after = {k: spark.conf.get(k, None) for k in before}
    assert after == before
    back = spark.read.parquet(str(tmp_path / "t"))
    assert sorted(map(tuple, back.select("event_id", "date", "score", "bucket").collect())) == \
        sorted(map(tuple, df.collect()))
    # the plain columns are written without a dictionary, the others keep theirs
    one = next((tmp_path / "t").glob("date=*/*.parquet"))
    chunk = pq.ParquetFile(one).metadata.row_group(0)
    encodings = {chunk.column(j).path_in_schema: chunk.column(j).encodings for j in range(chunk.num_columns)}
    assert not any("DICTIONARY" in e for e in encodings["event_id"] + encodings["score"])
    assert any("DICTIONARY" in e for e in encodings["bucket"])


def test_partition_files_name_each_file_with_its_partition_value(spark, tmp_path):
    rows(spark).write.partitionBy("date").parquet(str(tmp_path / "t"))
    files = partition_files(spark.read.parquet(str(tmp_path / "t")), "date")
    assert {value for _, value in files} == {"2026-01-01", "2026-01-02", "2026-01-03"}
    for path, value in files:
        assert f"/date={value}/" in path and path.endswith(".parquet")
    assert sum(pq.ParquetFile(p.removeprefix("file:")).metadata.num_rows for p, _ in files) == 150
    # not partitioned by that column: None (the caller reads through Spark)
    assert partition_files(spark.read.parquet(str(tmp_path / "t")), "bucket") is None
    flat = tmp_path / "flat"
    rows(spark).withColumn("date", F.col("date").cast("string")).write.parquet(str(flat))
    assert partition_files(spark.read.parquet(str(flat)), "date") is None


def _schema():
    import pyarrow as pa

    return pa.schema([("event_id", pa.string()), ("risk", pa.float64()), ("date", pa.date32())])


def _write(root, day, ids):
    """A Parquet file of ``ids`` in the table's folder of ``day``, not committed: (path, day, bytes, rows)."""
    import os
    import uuid

    import pyarrow as pa

    relative = f"date={day}/part-{uuid.uuid4().hex}.parquet"
    os.makedirs(root / f"date={day}", exist_ok=True)
    pq.write_table(pa.table({"event_id": ids, "risk": [0.5] * len(ids)}), root / relative)
    return relative, day, (root / relative).stat().st_size, len(ids)


def _ids_per_date(path):
    from deltalake import DeltaTable

    frame = DeltaTable(str(path)).to_pandas()
    return {str(day): sorted(ids) for day, ids in frame.groupby("date")["event_id"]}


def test_commit_partitions_creates_the_table_then_replaces_only_the_partitions_named(spark, tmp_path):
    from deltalake import DeltaTable

    from runtime.storage import commit_partitions

    root = tmp_path / "scores"
    commit_partitions(str(root), "date", ["2026-01-01", "2026-01-02"],
                      [_write(root, "2026-01-01", ["a1", "a2"]), _write(root, "2026-01-02", ["b1"])], _schema())
    leftover = _write(root, "2026-01-02", ["never committed"])  # a dead run's file: no reader sees it
    assert _ids_per_date(root) == {"2026-01-01": ["a1", "a2"], "2026-01-02": ["b1"]}
    commit_partitions(str(root), "date", ["2026-01-02", "2026-01-03"],
                      [_write(root, "2026-01-02", ["c1", "c2"]), _write(root, "2026-01-03", ["d1"])], _schema())
    assert DeltaTable(str(root)).version() == 1  # one transaction per call
    expected = {"2026-01-01": ["a1", "a2"], "2026-01-02": ["c1", "c2"], "2026-01-03": ["d1"]}
    assert _ids_per_date(root) == expected
    # delta-spark reads what delta-rs committed, the uncommitted file not
    back = spark.read.format("delta").load(str(root))
    assert {(str(r.date), r.event_id) for r in back.collect()} == {(d, i) for d, ids in expected.items() for i in ids}
    assert not any(uri.endswith(leftover[0]) for uri in back.inputFiles())
    # a date named without files is emptied, as replaceWhere would
    commit_partitions(str(root), "date", ["2026-01-01"], [], _schema())
    assert set(_ids_per_date(root)) == {"2026-01-02", "2026-01-03"}


@pytest.mark.parametrize("before", ["2026-01-01", "2026-01-02"], ids=["date-had-rows", "date-was-empty"])
def test_a_commit_that_loses_a_race_is_made_again_on_the_new_snapshot(tmp_path, monkeypatch, before):
    """Two runs replace 2026-01-01 at once; the other commits between our read and our commit.
    When the date had no rows before (the CI failure of 2026-12-07), delta-rs's own rebase let
    both runs' rows stand side by side."""
    from deltalake import DeltaTable

    import runtime.storage as storage

    root = tmp_path / "scores"
    storage.commit_partitions(str(root), "date", [before], [_write(root, before, ["old"])], _schema())
    real, raced = DeltaTable.create_write_transaction, []

    def add_of(written):
        import json

        from deltalake.transaction import AddAction

        relative, day, size, rows = written
        return [AddAction(relative, size, {"date": day}, 0, True, json.dumps({"numRecords": rows}))]

    def concurrent_run_first(table, *args, **kwargs):
        if not raced:  # another run replaces the same date after this one read the table
            raced.append(True)
            real(DeltaTable(str(root)), add_of(_write(root, "2026-01-01", ["other"])), mode="overwrite",
                 schema=table.schema(), partition_by=["date"], partition_filters=[("date", "in", ["2026-01-01"])])
        return real(table, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", concurrent_run_first)
    monkeypatch.setattr("time.sleep", lambda s: None)
    heard = []
    storage.commit_partitions(str(root), "date", ["2026-01-01"], [_write(root, "2026-01-01", ["ours"])], _schema(),
                              notify=heard.append)
    expected = {"2026-01-01": ["ours"]} if before == "2026-01-01" else {before: ["old"], "2026-01-01": ["ours"]}
    assert _ids_per_date(root) == expected  # the other run's rows replaced, not mixed
    assert DeltaTable(str(root)).version() == 2
    assert len(heard) == 1 and "a concurrent writer committed first" in heard[0]


def test_a_commit_that_keeps_losing_fails_naming_the_table(tmp_path, monkeypatch):
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    import runtime.storage as storage

    root = tmp_path / "scores"
    storage.commit_partitions(str(root), "date", ["2026-01-01"], [_write(root, "2026-01-01", ["old"])], _schema())

    def always_lose(table, *args, **kwargs):
        raise CommitFailedError("Commit failed: a concurrent transaction deleted data this operation read.")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", always_lose)
    monkeypatch.setattr("time.sleep", lambda s: None)
    with pytest.raises(StorageError, match=f"cannot commit the new files to {root}: Commit failed"):
        storage.commit_partitions(str(root), "date", ["2026-01-01"], [_write(root, "2026-01-01", ["new"])],
                                  _schema(), retries=2)
    assert _ids_per_date(root) == {"2026-01-01": ["old"]}


def test_commit_partitions_refuses_a_table_of_other_columns_or_partitions(tmp_path):
    import pyarrow as pa

    from runtime.storage import commit_partitions, delta_writable

    root = tmp_path / "scores"
    commit_partitions(str(root), "date", ["2026-01-01"], [_write(root, "2026-01-01", ["a"])], _schema())
    other = pa.schema([("event_id", pa.string()), ("risk", pa.string()), ("date", pa.date32())])
    with pytest.raises(StorageError, match="columns differ from the scores' in risk"):
        commit_partitions(str(root), "date", ["2026-01-01"], [_write(root, "2026-01-01", ["b"])], other)
    assert _ids_per_date(root) == {"2026-01-01": ["a"]}
    assert "is partitioned by date, not site" in delta_writable(str(root), "site")
    assert delta_writable(str(tmp_path / "new"), "date") is None  # created on the first commit


class _Writer:
    """A DataFrameWriter stand-in whose saves fail with ``errors`` in turn, then succeed."""

    def __init__(self, errors):
        self.errors, self.saves, self.options = list(errors), 0, {}

    def format(self, fmt):
        return self

    def mode(self, mode):
        return self

    def option(self, key, value):
        self.options[key] = value
        return self

    def partitionBy(self, *columns):  # noqa: N802 - Spark's name
        return self

    def save(self, path):
        self.saves += 1
        if self.errors:
            raise self.errors.pop(0)


def test_replace_where_writes_again_after_a_delta_conflict_only(monkeypatch):
    from types import SimpleNamespace

    from runtime.storage import delta_conflict, replace_where

    monkeypatch.setattr("time.sleep", lambda s: None)
    conflict = RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added to partition "
                            "[date=2026-01-01] by a concurrent update.")
    writer = _Writer([conflict, conflict])
    heard = []
    replace_where(SimpleNamespace(write=writer), "/lake/scores", "date IN ('2026-01-01')", partition_by=["date"],
                  notify=heard.append)
    assert writer.saves == 3 and writer.options == {"replaceWhere": "date IN ('2026-01-01')"}
    assert len(heard) == 2 and "ConcurrentAppendException" in heard[0]
    # another error is not retried; a conflict that persists is raised after the retries
    writer = _Writer([OSError("disk full")])
    with pytest.raises(OSError, match="disk full"):
        replace_where(SimpleNamespace(write=writer), "/lake/scores", "date = '2026-01-01'")
    assert writer.saves == 1
    writer = _Writer([conflict] * 3)
    with pytest.raises(RuntimeError, match="ConcurrentAppendException"):
        replace_where(SimpleNamespace(write=writer), "/lake/scores", "date = '2026-01-01'", retries=2)
    assert writer.saves == 3
    assert delta_conflict(OSError("disk full")) is None


def test_python_readers_refuse_delta_tables_with_deletion_vectors_or_column_mapping(spark, tmp_path):
    from runtime.storage import delta_layout_problem

    df = rows(spark, days=2, per_day=5)
    df.write.format("delta").partitionBy("date").save(str(tmp_path / "plain"))
    assert delta_layout_problem(spark, str(tmp_path / "plain")) is None
    files = partition_files(spark.read.format("delta").load(str(tmp_path / "plain")), "date")
    assert {value for _, value in files} == {"2026-01-01", "2026-01-02"}
    for name, properties, problem in (
            ("dv", "'delta.enableDeletionVectors' = 'true'", "has deletion vectors"),
            ("cm", "'delta.columnMapping.mode' = 'name', 'delta.minReaderVersion' = '2', 'delta.minWriterVersion' = '5'",
             "uses column mapping")):
        path = str(tmp_path / name)
        df.write.format("delta").partitionBy("date").save(path)
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({properties})")
        assert delta_layout_problem(spark, path) == f"{path} {problem}"


def test_local_table_path_is_absolute_on_the_local_file_system_only(spark, tmp_path):
    import os

    from runtime.storage import local_table_path

    # relative to the JVM's working directory, where Spark's own writer would put the table
    jvm_cwd = spark._jvm.java.lang.System.getProperty("user.dir")
    assert local_table_path(spark, "lake/scores") == os.path.join(jvm_cwd, "lake", "scores")
    assert local_table_path(spark, f"file://{tmp_path}/a b") == f"{tmp_path}/a b"
    assert local_table_path(spark, "s3a://bucket/scores") is None
    assert local_table_path(spark, "hdfs://namenode:8020/scores") is None
