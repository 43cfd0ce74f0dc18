"""The replay job against a moto Kinesis stream (started here), and its retry logic."""
import json
import os

import pytest
from aws_local import local_aws

from runtime.producers import KinesisReplayer, LandingWriter, chunk_records

N_RECORDS = 1234


@pytest.fixture(scope="module")
def moto_endpoint():
    with local_aws() as url:
        yield url


def read_all_shards(kinesis, stream):
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            got = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(got["Records"])
            if not got["Records"]:
                break
            iterator = got.get("NextShardIterator")
    return records


def test_replay_puts_every_record_exactly_once(tmp_path, moto_endpoint, spark):
    import boto3

    from jobs.replay import main

    rows = [(f"tx{i:05d}", f"2026-03-01 00:{i // 60 % 60:02d}:{i % 60:02d}", f"c{i % 17}", f"k{i % 5}",
             float(i % 300) + 0.25, i % 2) for i in range(N_RECORDS)]
    df = spark.createDataFrame(rows, "transaction_id string, event_time string, customer_id string, "
                                     "terminal_id string, amount double, label int")
    df = df.withColumn("event_time", df["event_time"].cast("timestamp"))
    df.write.parquet(str(tmp_path / "dataset"))
    kinesis = boto3.client("kinesis", region_name="us-east-1", endpoint_url=moto_endpoint)
    kinesis.create_stream(StreamName="replay-test", ShardCount=3)

    code = main(["--conf", "conf/local.yaml", "--dataset", "transactions", "--input", str(tmp_path / "dataset"),
                 "--format", "parquet", "--mode", "kinesis", "--stream", "replay-test", "--batch-size", "200",
                 "--rate", "0", "--set", f"aws.endpoint_url={moto_endpoint}"])
    assert code == 0

    records = read_all_shards(kinesis, "replay-test")
    payloads = [json.loads(r["Data"]) for r in records]
    ids = [p["transaction_id"] for p in payloads]
    assert len(ids) == N_RECORDS and len(set(ids)) == N_RECORDS
    by_id = {p["transaction_id"]: (p, r["PartitionKey"]) for p, r in zip(payloads, records, strict=True)}
    sample, key = by_id["tx00061"]
    assert key == "c10" and sample["amount"] == 61.25 and sample["event_time"].startswith("2026-03-01T00:01:01")


class FlakyKinesis:
    """PutRecords that throttles the whole first call and fails every third record once."""

    def __init__(self):
        self.calls = 0
        self.stored = []
        self.failed_once = set()

    def put_records(self, StreamName, Records):
        self.calls += 1
        assert len(Records) <= 500 and sum(len(r["Data"]) + len(r["PartitionKey"]) for r in Records) <= 5 * 2 ** 20
        if self.calls == 1:
            from botocore.exceptions import ClientError
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "PutRecords")
        results = []
        for record in Records:
            data = record["Data"]
            if int(data) % 3 == 0 and data not in self.failed_once:
                self.failed_once.add(data)
                results.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"})
            else:
                self.stored.append(data)
                results.append({"SequenceNumber": str(len(self.stored)), "ShardId": "shardId-0"})
        return {"FailedRecordCount": sum(1 for r in results if "ErrorCode" in r), "Records": results}


def test_failed_and_throttled_records_are_retried_without_duplicates():
    client = FlakyKinesis()
    sleeps = []
    replayer = KinesisReplayer(client, "s", batch_size=100, max_retries=3, backoff_seconds=0.01, sleep=sleeps.append)
    report = replayer.send((str(i).encode(), "k") for i in range(1000))
    assert report.sent == 1000 and report.failed == 0
    assert sorted(int(d) for d in client.stored) == list(range(1000))
    assert sleeps and report.retried > 0


def test_records_that_always_fail_are_reported():
    class Refusing:
        def put_records(self, StreamName, Records):
            return {"FailedRecordCount": len(Records),
                    "Records": [{"ErrorCode": "InternalFailure"} for _ in Records]}

    report = KinesisReplayer(Refusing(), "s", max_retries=2, sleep=lambda s: None).send([(b"x", "k")] * 7)
    assert (report.sent, report.failed, report.errors) == (0, 7, {"InternalFailure": 7})


def test_put_records_calls_respect_the_count_and_size_limits():
    big = b"x" * (900 * 1024)
    chunks = list(chunk_records([(big, "k")] * 12 + [(b"y", "k")] * 1200, batch_size=500))
    assert all(len(c) <= 500 and sum(len(d) + 1 for d, _ in c) <= 5 * 2 ** 20 for c in chunks)
    assert sum(len(c) for c in chunks) == 1212


def test_landing_mode_writes_whole_files_at_the_rate(tmp_path):
    fake_now = [0.0]
    writer = LandingWriter(str(tmp_path / "landing"), batch_size=10, rate=100.0,
                           sleep=lambda s: fake_now.__setitem__(0, fake_now[0] + s))
    writer.pacer.clock = lambda: fake_now[0]
    writer.pacer.start = 0.0
    report = writer.send(json.dumps({"i": i}).encode() for i in range(95))
    files = sorted(p for p in os.listdir(tmp_path / "landing"))
    assert report.sent == 95 and len(files) == 10 and not any(f.startswith(".") for f in files)
    lines = [json.loads(line) for f in files for line in (tmp_path / "landing" / f).read_text().splitlines()]
    assert sorted(x["i"] for x in lines) == list(range(95))
    assert fake_now[0] == pytest.approx(0.9)    # 90 records before the last file, at 100/s


def test_replayed_csv_records_carry_the_ids_the_batch_job_reads(tmp_path, spark):
    """Ids such as 007, 0042 and 1e3 reach the stream as the text the batch validator reads; the
    default order and partition key follow the column mapping."""
    from features.datasets import dataset
    from jobs.replay import main
    from runtime.config import load_config
    from runtime.storage import read_strict

    source = tmp_path / "tx.csv"
    source.write_text("TX_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_FRAUD\n"
                      "1e3,2026-03-01 00:00:03,1.0,7,1e3,0\n"
                      "007,2026-03-01 00:00:01,0042,1e3,1000,0\n"
                      "0042,2026-03-01 00:00:02,007,00,12.50,1\n")
    mapping = ["schema.transactions.columns.transaction_id=TX_ID", "schema.transactions.columns.event_time=TX_DATETIME",
               "schema.transactions.columns.customer_id=CUSTOMER_ID",
               "schema.transactions.columns.terminal_id=TERMINAL_ID",
               "schema.transactions.columns.amount=TX_AMOUNT", "schema.transactions.columns.label=TX_FRAUD"]
    code = main(["--conf", "conf/local.yaml", "--dataset", "transactions", "--input", str(source),
                 "--mode", "landing", "--output", str(tmp_path / "landing"), "--rate", "0",
                 *[arg for item in mapping for arg in ("--set", item)]])
    assert code == 0
    text = "".join((tmp_path / "landing" / f).read_text() for f in sorted(os.listdir(tmp_path / "landing")))
    lines = [json.loads(line) for line in text.splitlines()]

    config = load_config("conf/local.yaml", overrides=["dataset=transactions", *mapping])
    batch = dataset("transactions").validate(read_strict(spark, str(source), "csv"),
                                             config["schema"]["transactions"]).valid
    want = sorted((r.transaction_id, r.customer_id, r.terminal_id) for r in batch.collect())
    assert len(want) == 3
    assert sorted((x["TX_ID"], x["CUSTOMER_ID"], x["TERMINAL_ID"]) for x in lines) == want
    # in TX_DATETIME order; the amount a JSON number with the file's digits (the stream wants a number)
    assert [x["TX_ID"] for x in lines] == ["007", "0042", "1e3"]
    assert [x["TX_AMOUNT"] for x in lines] == [1000, 12.5, 1000.0]
    assert '"TX_AMOUNT":1e3' in text and '"TX_ID":"007"' in text


def test_replayed_json_lines_are_the_source_lines(tmp_path, spark):
    from jobs.replay import main

    source = tmp_path / "tx.jsonl"
    lines = ['{"transaction_id": "007", "event_time": "2026-03-01 00:00:02", "customer_id": "c", "amount": 1e3}',
             '{"transaction_id": "0042", "event_time": "2026-03-01 00:00:01", "customer_id": "c", "amount": 12.50}']
    source.write_text("\n".join(lines) + "\n\n")
    code = main(["--conf", "conf/local.yaml", "--dataset", "transactions", "--input", str(source),
                 "--mode", "landing", "--output", str(tmp_path / "landing"), "--order-by", "event_time",
                 "--rate", "0"])
    assert code == 0
    sent = [line for f in sorted(os.listdir(tmp_path / "landing"))
            for line in (tmp_path / "landing" / f).read_text().splitlines()]
    assert sent == [lines[1], lines[0]]
