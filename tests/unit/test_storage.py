"""runtime/storage.py: partitioned writes without the planned sort, per-column encodings, file listings."""
import datetime as dt

import pyarrow.parquet as pq
from pyspark.sql import functions as F

from runtime.storage import partition_files, write_table


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
