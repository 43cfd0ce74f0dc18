"""runtime/storage.py: partitioned writes without the planned sort, per-column encodings, file listings,
the partition swap of files written outside Spark."""
import datetime as dt

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from runtime.storage import StorageError, partition_files, replace_partitions, write_table


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


def _table(tmp_path, partitions):
    """A folder table with one file per partition value, holding the value's name."""
    root = tmp_path / "scores"
    for value in partitions:
        (root / f"date={value}").mkdir(parents=True)
        (root / f"date={value}" / "part-0.parquet").write_text(f"old {value}")
    return root


def _stage(root, name, files):
    staging = root / name
    staged = {}
    for value, content in files.items():
        folder = staging / "task-1" / f"date={value}"
        folder.mkdir(parents=True)
        (folder / "part-new.parquet").write_text(content)
        staged[value] = [str(folder / "part-new.parquet")]
    return staging, staged


def test_replace_partitions_swaps_the_staged_values_and_leaves_the_others(tmp_path):
    root = _table(tmp_path, ["2026-01-01", "2026-01-02"])
    staging, staged = _stage(root, "_scoring-1", {"2026-01-02": "new 2", "2026-01-03": "new 3"})
    replace_partitions(str(root), "date", staged, str(staging))
    assert (root / "date=2026-01-01" / "part-0.parquet").read_text() == "old 2026-01-01"
    assert [p.name for p in (root / "date=2026-01-02").iterdir()] == ["part-new.parquet"]
    assert (root / "date=2026-01-02" / "part-new.parquet").read_text() == "new 2"
    assert (root / "date=2026-01-03" / "part-new.parquet").read_text() == "new 3"
    assert (root / "_SUCCESS").exists()
    assert not staging.exists()


def test_replace_partitions_that_fails_before_the_swap_leaves_the_table(tmp_path):
    root = _table(tmp_path, ["2026-01-01", "2026-01-02"])
    staging, staged = _stage(root, "_scoring-2", {"2026-01-02": "new 2"})
    staged["2026-01-01"] = [str(staging / "task-9" / "gone.parquet")]  # a file a task never wrote
    with pytest.raises(StorageError, match="cannot swap the new partitions"):
        replace_partitions(str(root), "date", staged, str(staging))
    for value in ("2026-01-01", "2026-01-02"):
        assert [p.name for p in (root / f"date={value}").iterdir()] == ["part-0.parquet"]
    assert not staging.exists()


def test_replace_partitions_refuses_a_staging_folder_readers_would_see(tmp_path):
    root = _table(tmp_path, ["2026-01-01"])
    staging, staged = _stage(root, "scoring-3", {"2026-01-01": "new"})
    with pytest.raises(StorageError, match="must be a '_scoring-...' folder directly inside"):
        replace_partitions(str(root), "date", staged, str(staging))
    assert (root / "date=2026-01-01" / "part-0.parquet").read_text() == "old 2026-01-01"


def test_partition_values_that_need_escaping_are_refused(tmp_path):
    root = _table(tmp_path, [])
    staging = root / "_scoring-4"
    staging.mkdir(parents=True)
    with pytest.raises(StorageError, match="needs escaping"):
        replace_partitions(str(root), "site", {"a/b": []}, str(staging))


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic-exchange", "two-renames"])
def test_a_failed_swap_puts_back_every_partition_it_had_swapped(tmp_path, monkeypatch, exchange):
    import runtime.storage as storage

    root = _table(tmp_path, ["2026-01-01", "2026-01-02"])
    staging, staged = _stage(root, "_scoring-5", {"2026-01-01": "new 1", "2026-01-03": "new 3",
                                                  "2026-01-02": "new 2"})
    if not exchange:
        monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    swap, calls = storage._swap_in, []

    def fail_third(new, final, old):
        calls.append(final)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", final)
        return swap(new, final, old)

    monkeypatch.setattr(storage, "_swap_in", fail_third)
    with pytest.raises(StorageError, match="No space left on device"):
        replace_partitions(str(root), "date", staged, str(staging))
    assert len(calls) == 3
    assert sorted(p.name for p in root.iterdir()) == ["date=2026-01-01", "date=2026-01-02"]
    for value in ("2026-01-01", "2026-01-02"):
        assert (root / f"date={value}" / "part-0.parquet").read_text() == f"old {value}"
        assert [p.name for p in (root / f"date={value}").iterdir()] == ["part-0.parquet"]
    assert not staging.exists()


def test_sweep_puts_back_a_partition_a_dead_run_left_missing_and_removes_old_staging(tmp_path):
    import os

    from runtime.storage import sweep_staging

    root = _table(tmp_path, ["2026-01-01"])
    dead = root / "_scoring-dead" / "old" / "date=2026-01-02"  # killed between its two renames
    dead.mkdir(parents=True)
    (dead / "part-0.parquet").write_text("old 2026-01-02")
    (root / "_scoring-dead" / "old" / "date=2026-01-01").mkdir()  # its partition is in place: left
    running = root / "_scoring-running"
    running.mkdir()
    os.utime(root / "_scoring-dead", (0, 0))
    done = sweep_staging(str(root), "date")
    assert (root / "date=2026-01-02" / "part-0.parquet").read_text() == "old 2026-01-02"
    assert (root / "date=2026-01-01" / "part-0.parquet").read_text() == "old 2026-01-01"
    assert not (root / "_scoring-dead").exists() and running.exists()
    assert len(done) == 2 and "put back date=2026-01-02" in done[0] and "_scoring-dead" in done[1]


def test_local_table_path_is_absolute_on_the_local_file_system_only(spark, tmp_path):
    import os

    from runtime.storage import local_table_path

    # relative to the JVM's working directory, where Spark's own writer would put the table
    jvm_cwd = spark._jvm.java.lang.System.getProperty("user.dir")
    assert local_table_path(spark, "lake/scores") == os.path.join(jvm_cwd, "lake", "scores")
    assert local_table_path(spark, f"file://{tmp_path}/a b") == f"{tmp_path}/a b"
    assert local_table_path(spark, "s3a://bucket/scores") is None
    assert local_table_path(spark, "hdfs://namenode:8020/scores") is None
