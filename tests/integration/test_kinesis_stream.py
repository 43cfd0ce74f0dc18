"""The stream job reading a real Kinesis API: moto's server (one process for the module, on a free
loopback port) plays Kinesis and SNS, the replay job fills the stream, and `python -m jobs stream
--source kinesis` reads it through the Maven Central connector (stream.kinesis.connector qubole).

Exactly once is proven the way test_stream.py proves it for the landing source: the stream job is
killed with SIGKILL at each fault point of a micro-batch (after the sink's Delta commit, after the
alerts, just before Spark's commit) and restarted from its checkpoint; a last run reads to the end.
Every record put is then in the sink or the dead letters once, and every anomaly alerted once.
Unlike a landing folder, Kinesis gives a re-run batch more records when more arrived after the
crash (the connector decides a batch's end while reading): the kill test puts most of its records
after the first kill, so the re-run of batch 0 holds more than its first attempt and the sinks top
it up (streaming/sink.py).
A second test reshards the stream (UpdateShardCount 2 -> 4) while the stream job reads it.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aws_local import moto_server_process
from test_stream import BAD_RECORDS, drain, make_transactions, sink_commits, topic_with_queue

from runtime.producers import KinesisReplayer

ROOT = Path(__file__).resolve().parents[2]
SCORER = "test_stream:deterministic_scorer"
N_EVENTS = 3000
FIRST_PUT = 300              # put before the first run: under PER_SHARD on either shard
PER_SHARD = 400              # stream.kinesis.max_fetch_records: <= 800 records per micro-batch on 2 shards
LATENESS = 200 * 86400       # shards are read side by side: an event behind another shard's newest is not late

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def moto():
    with moto_server_process() as url:
        yield url


def kinesis_client(endpoint):
    import boto3

    return boto3.client("kinesis", region_name="us-east-1", endpoint_url=endpoint)


def common_args(endpoint):
    return ["--conf", str(ROOT / "conf" / "local.yaml"), "--dataset", "transactions",
            "--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g", "--set", "spark.shuffle_partitions=1",
            "--set", "spark.extra_jars=", "--set", "spark.conf={spark.ui.enabled: 'false'}",
            "--set", f"aws.endpoint_url={endpoint}"]


def stream_cmd(tmp_path, endpoint, stream, topic, kill_at=None, idle=8):
    job = ([str(Path(__file__).parent / "stream_with_fault.py"), kill_at[0], str(kill_at[1])] if kill_at
           else ["-m", "jobs", "stream"])
    return [sys.executable, *job, *common_args(endpoint), "--source", "kinesis", "--input", stream,
            "--output", str(tmp_path / "sink"), "--checkpoint", str(tmp_path / "ckpt"),
            "--dead-letter", str(tmp_path / "dead"), "--trigger", "3 seconds", "--alerts",
            "--stop-when-idle", str(idle), "--run-seconds", "400",
            "--set", "stream.kinesis.connector=qubole", "--set", f"stream.kinesis.max_fetch_records={PER_SHARD}",
            "--set", f"stream.allowed_lateness_seconds={LATENESS}",
            "--set", f"stream.alerts.topic_arn={topic}", "--set", "stream.alerts.rate_per_second=1000",
            "--set", f"stream.scorer={SCORER}"]


def job_env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(Path(__file__).parent)]))


def run(cmd, timeout=600):
    done = subprocess.run(cmd, cwd=ROOT, env=job_env(), capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def committed(ckpt):
    """The micro-batches Spark has committed (its own commit log)."""
    return sorted(int(p.name) for p in (ckpt / "commits").glob("[0-9]*")) if (ckpt / "commits").exists() else []


def check_sink_and_alerts(spark, tmp_path, put_ids, bad, sqs, queue_url):
    """Every record put in the sink or the dead letters once; every anomaly alerted once."""
    table = spark.read.format("delta").load(str(tmp_path / "sink"))
    ids = [r["transaction_id"] for r in table.select("transaction_id").collect()]
    assert len(ids) == len(set(ids)), "no event twice in the sink"
    assert set(ids) == set(put_ids), f"missing {len(set(put_ids) - set(ids))}, unexpected {len(set(ids) - set(put_ids))}"
    dead = spark.read.format("delta").load(str(tmp_path / "dead")).toPandas() if bad else None
    if bad:
        assert sorted(dead["payload"]) == sorted(bad), "each bad record dead-lettered once"
    flagged = {r["transaction_id"] for r in table.where("is_anomaly").select("transaction_id").collect()}
    assert flagged, "the data should raise some alerts"
    alerted = [m["MessageAttributes"]["event_id"]["StringValue"] for m in drain(sqs, queue_url)]
    assert sorted(alerted) == sorted(flagged), "each anomaly alerted exactly once"
    return table


def batch_sizes(out):
    """{batch id: records} from the job's batch lines."""
    return {int(m.group(1)): int(m.group(2).replace(",", ""))
            for m in re.finditer(r"batch (\d+): ([\d,]+) records", out)}


@pytest.mark.timeout(2400)
def test_kinesis_stream_scores_every_record_once_across_kills(tmp_path, moto, spark):
    records = make_transactions(N_EVENTS, seed=24)
    # batch 0's first attempt reads all there is (under PER_SHARD per shard); the rest is put after it
    (tmp_path / "raw.json").write_text("\n".join(json.dumps(r) for r in records[:FIRST_PUT]))
    started = time.monotonic()
    code, out = run([sys.executable, "-m", "jobs", "replay", *common_args(moto), "--mode", "kinesis",
                     "--stream", "tx", "--shards", "2", "--input", str(tmp_path / "raw.json"), "--format", "json",
                     "--rate", "0", "--order-by", "event_time"])
    assert code == 0, out[-3000:]
    assert f"records sent {FIRST_PUT:,}, failed 0" in out and "created Kinesis stream tx with 2 shards" in out
    kinesis = kinesis_client(moto)
    assert len(kinesis.list_shards(StreamName="tx")["Shards"]) == 2
    put = kinesis.put_records(StreamName="tx", Records=[{"Data": b.encode(), "PartitionKey": "bad"} for b in BAD_RECORDS])
    assert put["FailedRecordCount"] == 0
    topic, sqs, queue_url = topic_with_queue(moto)
    ckpt, sink = tmp_path / "ckpt", tmp_path / "sink"

    def killed_at(point, batch_id):
        code, out = run(stream_cmd(tmp_path, moto, "tx", topic, kill_at=(point, batch_id)))
        assert code == -signal.SIGKILL, out[-3000:]
        assert batch_id not in committed(ckpt), f"killed at {point}: Spark must not have committed batch {batch_id}"
        return out

    killed_at("after-sink", 0)
    assert [b for b, _ in sink_commits(sink)] == [0]
    first_attempt = sink_commits(sink)[0][1] + len(BAD_RECORDS)   # its dead letters were not written yet
    assert first_attempt == FIRST_PUT + len(BAD_RECORDS), "batch 0's first attempt read the whole stream"
    assert not (ckpt / "alerts_sent" / "0").exists() or not list((ckpt / "alerts_sent" / "0").glob("*.json"))
    # records arriving while the stream is down: the re-run of batch 0 reads some of them
    rest = [(json.dumps(r).encode(), r["customer_id"]) for r in records[FIRST_PUT:]]
    assert KinesisReplayer(kinesis, "tx").send(rest).sent == len(rest)
    killed_at("after-alerts", 0)
    batch0 = [n for b, n in sink_commits(sink) if b == 0]
    assert len(batch0) == 2 and batch0[1] > 0, f"the re-run batch 0 is topped up once with the new records: {batch0}"
    assert list((ckpt / "alerts_sent" / "0").glob("*.json")), "batch 0 sent its alerts before the kill"
    out = killed_at("before-commit", 1)
    rerun = batch_sizes(out)[0]
    assert rerun > first_attempt, f"the re-run batch 0 holds more records than its first attempt: {out[-3000:]}"
    # its third run adds what the second did not hold (nothing when both read PER_SHARD per shard)
    new_events = rerun - len(BAD_RECORDS) - sum(batch0)
    assert f"(sink already committed: {new_events:,} new events and 0 new dead letters topped up" in out, out[-3000:]
    assert [b for b, _ in sink_commits(sink)] == [0, 0] + [0] * (new_events > 0) + [1]

    code, out = run(stream_cmd(tmp_path, moto, "tx", topic))
    assert code == 0, out[-3000:]
    assert "batch 1:" in out and "sink already committed" in out, out[-3000:]
    assert "kinesis (qubole connector" in out and "event-to-sink latency" in out
    commits = sink_commits(sink)
    batches = [b for b, _ in commits]
    assert batches == sorted(batches) and sorted(set(batches)) == list(range(max(batches) + 1)), commits
    assert len(set(batches)) >= 4, commits
    per_batch = {b: sum(n for c, n in commits if c == b) for b in batches}
    assert all(n <= 2 * PER_SHARD for n in per_batch.values()), f"max_fetch_records bounds a batch: {commits}"
    check_sink_and_alerts(spark, tmp_path, [r["transaction_id"] for r in records], BAD_RECORDS, sqs, queue_url)
    print(f"kinesis kill test: {time.monotonic() - started:.0f} s; batch 0: first attempt {first_attempt} records, "
          f"third run {rerun}; sink commits {commits}")


@pytest.mark.timeout(1800)
def test_kinesis_stream_loses_nothing_when_the_stream_is_resharded(tmp_path, moto, spark):
    kinesis = kinesis_client(moto)
    kinesis.create_stream(StreamName="reshard", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="reshard", WaiterConfig={"Delay": 0.5})
    records = make_transactions(2000, seed=5)
    payload = [(json.dumps(r).encode(), r["customer_id"]) for r in records]
    sender = KinesisReplayer(kinesis, "reshard")
    assert sender.send(payload[:1000]).sent == 1000
    topic, sqs, queue_url = topic_with_queue(moto)
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(stream_cmd(tmp_path, moto, "reshard", topic, idle=15), cwd=ROOT, env=job_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while not committed(ckpt) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(ckpt), "the stream committed no batch"
        kinesis.update_shard_count(StreamName="reshard", TargetShardCount=4, ScalingType="UNIFORM_SCALING")
        kinesis.get_waiter("stream_exists").wait(StreamName="reshard", WaiterConfig={"Delay": 0.5})
        shards = kinesis.list_shards(StreamName="reshard")["Shards"]
        open_shards = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
        assert len(open_shards) == 4
        assert sender.send(payload[1000:]).sent == 1000
        out, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    table = check_sink_and_alerts(spark, tmp_path, [r["transaction_id"] for r in records], [], sqs, queue_url)
    # parents before children: per partition key, no record put after the reshard is in an earlier
    # micro-batch than one put before it
    batch_of = {r["transaction_id"]: r["batch_id"] for r in table.select("transaction_id", "batch_id").collect()}
    for key in {r["customer_id"] for r in records}:
        before = [batch_of[r["transaction_id"]] for r in records[:1000] if r["customer_id"] == key]
        after = [batch_of[r["transaction_id"]] for r in records[1000:] if r["customer_id"] == key]
        assert max(before) <= min(after), f"key {key}: a child shard was read before its parent"
