"""The stream job over a landing folder: exactly once across kills, alerts once, batch/stream parity.

A moto server (started here on a free port, dummy credentials) plays SNS; an SQS queue subscribed
to the topic counts the alerts that went out. The kill test runs `python -m jobs stream` in
subprocesses and kills them with SIGKILL at each fault point inside a micro-batch (right after the
sink's Delta commit, right after the alerts, at the end of the batch just before Spark commits it)
and once from outside while the query runs; a last run finishes cleanly with available-now.
"""
import datetime as dt
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from aws_local import local_aws
from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parents[2]
# Imported by the job subprocess as a top-level module (a site-packages "tests" package shadows ours).
SCORER = "test_stream:deterministic_scorer"
START = dt.datetime(2026, 3, 1)


# --------------------------------------------------------------------------- data and scorer


def make_transactions(n, seed=7):
    """n valid transactions in event-time order over ~10 days, 6 customers, 4 terminals."""
    rng = random.Random(seed)
    records, t = [], START
    for i in range(n):
        t += dt.timedelta(seconds=rng.randint(60, 3600))
        records.append({
            "transaction_id": f"tx{i:05d}", "event_time": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "customer_id": f"c{rng.randint(1, 6)}", "terminal_id": f"k{rng.randint(1, 4)}",
            "amount": round(rng.uniform(1, 300), 2), "label": int(rng.random() < 0.1),
        })
    return records


BAD_RECORDS = ["this is not json", json.dumps({"transaction_id": "bad1", "amount": 3.0}),
               json.dumps({"transaction_id": "bad2", "event_time": "2026-03-01T00:00:00Z", "customer_id": "c1",
                           "terminal_id": "k1", "amount": "three"})]


def deterministic_scorer(config):
    """A stand-in for the champion models: a pure function of the batch features."""
    def score(features_df):
        risk = F.least(F.lit(1.0), F.col("amount_vs_customer_avg_30d") / 3.0
                       + F.col("terminal_risk_7d") * 0.5 + F.col("customer_nb_tx_1d") * 0.01)
        return (features_df
                .withColumn("rcf_score", F.col("amount_vs_customer_avg_30d"))
                .withColumn("logistic_score", F.col("terminal_risk_7d"))
                .withColumn("risk", risk)
                # large amounts too, so every micro-batch has anomalies to alert on
                .withColumn("is_anomaly", (risk >= 0.8) | (F.col("amount") > 250))
                .withColumn("reasons", F.array(F.lit("amount above the customer's 30-day mean")))
                .withColumn("rcf_version", F.lit("test-rcf"))
                .withColumn("logistic_version", F.lit("test-logistic")))

    def score_frame(frame):
        """The same function on a pandas frame (the stream scores driver-local batches with it)."""
        out = frame.copy()
        total = (frame["amount_vs_customer_avg_30d"] / 3.0 + frame["terminal_risk_7d"] * 0.5
                 + frame["customer_nb_tx_1d"] * 0.01).to_numpy(np.float64)
        out["rcf_score"] = frame["amount_vs_customer_avg_30d"]
        out["logistic_score"] = frame["terminal_risk_7d"]
        out["risk"] = np.fmin(1.0, total)        # like least(): a null term is skipped
        out["is_anomaly"] = (out["risk"] >= 0.8).to_numpy() | (frame["amount"] > 250).to_numpy()
        out["reasons"] = [["amount above the customer's 30-day mean"]] * len(out)
        out["rcf_version"], out["logistic_version"] = "test-rcf", "test-logistic"
        return out

    score.pandas = score_frame
    return score


def write_landing(folder, lines, per_file):
    """Files with increasing modification times: the file source takes them in that order."""
    folder.mkdir(parents=True, exist_ok=True)
    base = time.time() - 1000
    for n in range(0, len(lines), per_file):
        path = folder / f"part-{n // per_file:04d}.json"
        tmp = folder / f".{path.name}.tmp"
        tmp.write_text("\n".join(lines[n:n + per_file]) + "\n")
        os.replace(tmp, path)
        os.utime(path, (base + n, base + n))


def sink_commits(table):
    """(batch id, rows written) of each commit of a local Delta table, oldest first, read from its log
    (Spark's writer names the row count numOutputRows, delta-rs num_added_rows)."""
    out = []
    for path in sorted((Path(table) / "_delta_log").glob("*.json")):
        for line in path.read_text().splitlines():
            info = json.loads(line).get("commitInfo")
            if info and info.get("userMetadata"):
                metrics = info["operationMetrics"]
                out.append((json.loads(info["userMetadata"])["batch_id"],
                            int(metrics.get("numOutputRows", metrics.get("num_added_rows")))))
    return out


# --------------------------------------------------------------------------- moto


@pytest.fixture(scope="module")
def moto_endpoint():
    with local_aws() as url:
        yield url


def topic_with_queue(endpoint):
    import boto3

    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=endpoint)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    topic = sns.create_topic(Name=f"alerts-{time.time_ns()}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"alerts-{time.time_ns()}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    return topic, sqs, queue_url


def drain(sqs, queue_url):
    messages = []
    empty = 0
    while empty < 2:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            empty += 1
            continue
        messages.extend(got)
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
    return messages


# --------------------------------------------------------------------------- the kill test


def stream_cmd(tmp_path, endpoint, topic, trigger, kill_at=None):
    """The stream job's command; ``kill_at`` (point, batch id): killed there (stream_with_fault.py)."""
    job = ([str(Path(__file__).parent / "stream_with_fault.py"), kill_at[0], str(kill_at[1])] if kill_at
           else ["-m", "jobs", "stream"])
    return [sys.executable, *job, "--conf", str(ROOT / "conf" / "local.yaml"),
            "--dataset", "transactions", "--input", str(tmp_path / "landing"), "--output", str(tmp_path / "sink"),
            "--checkpoint", str(tmp_path / "ckpt"), "--dead-letter", str(tmp_path / "dead"),
            "--trigger", trigger, "--alerts",
            "--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g", "--set", "spark.shuffle_partitions=1",
            "--set", "spark.extra_jars=", "--set", "spark.conf={spark.ui.enabled: 'false'}",
            "--set", f"aws.endpoint_url={endpoint}", "--set", f"stream.alerts.topic_arn={topic}",
            "--set", "stream.alerts.rate_per_second=200", "--set", "stream.max_files_per_trigger=1",
            "--set", f"stream.scorer={SCORER}"]


def run_stream(cmd, env_extra=None, kill_when=None, timeout=420):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(Path(__file__).parent)]), **(env_extra or {}))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    if kill_when is not None:
        while time.time() < deadline and proc.poll() is None and not kill_when():
            time.sleep(0.2)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    try:
        out, _ = proc.communicate(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out


@pytest.mark.timeout(2400)   # five Spark subprocesses: minutes when the shared machine is loaded
def test_stream_scores_every_event_once_across_kills_and_alerts_once(tmp_path, moto_endpoint, spark):
    records = make_transactions(120)
    lines = [json.dumps(r) for r in records]
    lines[30:30] = BAD_RECORDS
    write_landing(tmp_path / "landing", lines, per_file=25)      # 5 files: 5 micro-batches
    topic, sqs, queue_url = topic_with_queue(moto_endpoint)
    ckpt, sink = tmp_path / "ckpt", tmp_path / "sink"

    def committed():
        """The micro-batches Spark has committed (its own commit log)."""
        return sorted(int(p.name) for p in (ckpt / "commits").glob("[0-9]*")) if (ckpt / "commits").exists() else []

    def alerted(batch_id):
        return list((ckpt / "alerts_sent" / str(batch_id)).glob("*.json"))

    def killed_at(point, batch_id):
        code, out = run_stream(stream_cmd(tmp_path, moto_endpoint, topic, "available-now", kill_at=(point, batch_id)))
        assert code == -signal.SIGKILL, out[-3000:]
        assert batch_id not in committed(), f"killed at {point}: Spark must not have committed batch {batch_id}"

    # 1. killed right after batch 0's sink commit (before its dead letters and alerts)
    killed_at("after-sink", 0)
    assert [b for b, _ in sink_commits(sink)] == [0] and not alerted(0)
    # 2. batch 0 again: Delta skips the sink write; killed right after its alerts went out
    killed_at("after-alerts", 0)
    assert [b for b, _ in sink_commits(sink)] == [0], "the re-run batch is not committed twice"
    assert alerted(0), "batch 0 sent no alerts, so the next run would not test that they are not sent again"
    # 3. kill -9 from outside once Spark has committed a micro-batch (wherever the next one is)
    code, out = run_stream(stream_cmd(tmp_path, moto_endpoint, topic, "available-now"),
                           kill_when=lambda: bool(committed()))
    assert code == -signal.SIGKILL, out[-3000:]
    # 4. killed at the end of the next batch, after everything but Spark's own commit
    next_batch = committed()[-1] + 1
    assert next_batch <= 4, "the outside kill came too late: no batch left to kill"
    killed_at("before-commit", next_batch)
    assert next_batch in [b for b, _ in sink_commits(sink)]
    # 5. a clean run to the end: batch next_batch is re-run by Spark, its rows and alerts are not repeated
    code, out = run_stream(stream_cmd(tmp_path, moto_endpoint, topic, "available-now"))
    assert code == 0, out[-3000:]
    assert f"batch {next_batch}:" in out and "sink already committed" in out, out[-3000:]
    assert "events scored" in out and "event-to-sink latency" in out
    assert "Delta table" in out

    commits = sink_commits(sink)   # a restarted available-now run may take several files in one batch
    assert [b for b, _ in commits] == list(range(len(commits))), f"one Delta commit per micro-batch: {commits}"
    table = spark.read.format("delta").load(str(sink))
    ids = [r["transaction_id"] for r in table.select("transaction_id").collect()]
    assert len(ids) == len(records), "every event in the sink"
    assert len(set(ids)) == len(ids), "no event twice"
    assert sum(n for _, n in commits) == len(records)
    assert {"date", "hour", "batch_id"} <= set(table.columns)
    dead = spark.read.format("delta").load(str(tmp_path / "dead"))
    assert dead.count() == len(BAD_RECORDS)
    assert set(dead.toPandas()["payload"]) == set(BAD_RECORDS)

    expected_alerts = {r["transaction_id"] for r in table.where("is_anomaly").select("transaction_id").collect()}
    assert expected_alerts, "the data should raise some alerts"
    messages = drain(sqs, queue_url)
    alerted_ids = [m["MessageAttributes"]["event_id"]["StringValue"] for m in messages]
    assert sorted(alerted_ids) == sorted(expected_alerts), "each anomaly alerted exactly once"
    body = messages[0]["Body"]
    assert "customer_id" in body and "terminal_id" in body and "Risk:" in body and "Why:" in body


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("engine", ["incremental", "incremental-spark-scorer", "spark"])
def test_the_stream_gives_every_event_its_batch_features_and_score(tmp_path, spark, engine):
    """incremental: features from driver state, scored and written on the driver (the scorer's pandas
    twin, pyarrow sink files); incremental-spark-scorer: the same features scored by a Spark-only
    scorer; spark: the batch feature function over a history snapshot.

    Warm start: the batch feature table holds all 300 events, the stream sees the last 200 - from
    its first event on, each gets the features and score the batch job gives it."""
    from features.incremental import TransactionStreamFeatures
    from features.transactions import build_transaction_features, lookback_days
    from ingest.validation import validate_transactions
    from ingest.decode import payloads_from_text
    from runtime.config import load_config
    from runtime.sources import landing_source, write_stream
    from streaming.batch import StreamSettings
    from streaming.processor import MicroBatchProcessor

    config = load_config(ROOT / "conf" / "local.yaml", ["dataset=transactions"])
    feats = config["features"]["transactions"]
    records = make_transactions(300, seed=11)
    write_landing(tmp_path / "landing", [json.dumps(r) for r in records[100:]], per_file=100)

    def transform(df):
        return build_transaction_features(df, windows_days=feats["windows_days"], delay_days=feats["delay_days"])

    # The batch path: the same records as the features job reads them (JSON lines), its feature table, scores.
    (tmp_path / "raw.json").write_text("\n".join(json.dumps(r) for r in records))
    raw = spark.read.json(str(tmp_path / "raw.json"))
    validated = validate_transactions(raw, columns=config["schema"]["transactions"]["columns"])
    transform(validated.valid).write.format("delta").partitionBy("date").save(str(tmp_path / "features"))
    batch = deterministic_scorer(config)(spark.read.format("delta").load(str(tmp_path / "features")))

    settings = StreamSettings(dataset="transactions", schema_conf=config["schema"]["transactions"],
                              output=str(tmp_path / "sink"), checkpoint=str(tmp_path / "ckpt"),
                              dead_letter=str(tmp_path / "dead"), warm_from=str(tmp_path / "features"),
                              history_seconds=lookback_days(feats["windows_days"], feats["delay_days"]) * 86400)
    incremental = TransactionStreamFeatures(**feats) if engine.startswith("incremental") else None

    def spark_only():
        score = deterministic_scorer(config)
        return lambda df: score(df)       # no pandas twin: the Spark scoring and sink path

    factory = spark_only if engine == "incremental-spark-scorer" else (lambda: deterministic_scorer(config))
    processor = MicroBatchProcessor(settings, transform=transform, scorer_factory=factory, incremental=incremental)
    source = landing_source(spark, str(tmp_path / "landing"), max_files_per_trigger=1)
    query = write_stream(payloads_from_text(source),
                         checkpoint=str(tmp_path / "ckpt"), trigger="available-now", process_batch=processor)
    query.awaitTermination()
    assert len(processor.reports) == 2 and sum(r.scored for r in processor.reports) == 200

    stream = spark.read.format("delta").load(str(tmp_path / "sink"))
    compared = [c for c in batch.columns if c in stream.columns]
    assert dict(stream.dtypes) == {**dict(stream.dtypes), **{c: t for c, t in batch.dtypes if c in compared}}, \
        "the sink's column types are the batch path's"
    assert {"risk", "customer_nb_tx_7d", "terminal_risk_7d", "seconds_since_prev_tx"} <= set(compared)
    stream_rows = {r["transaction_id"]: r.asDict() for r in stream.select(*compared).collect()}
    batch_rows = {r["transaction_id"]: r.asDict() for r in batch.select(*compared).collect()
                  if r["transaction_id"] in stream_rows}
    assert stream_rows.keys() == batch_rows.keys() and len(batch_rows) == 200
    differing = [(tid, col, stream_rows[tid][col], batch_rows[tid][col])
                 for tid in batch_rows for col in compared
                 if not _same(stream_rows[tid][col], batch_rows[tid][col])]
    assert not differing, differing[:10]


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def test_write_stream_refuses_a_batch_frame(spark):
    from runtime.sources import StreamConfigError, write_stream

    with pytest.raises(StreamConfigError, match="streaming DataFrame"):
        write_stream(spark.range(3), checkpoint="/tmp/x", trigger="5 seconds", process_batch=lambda df, i: None)
    with pytest.raises(StreamConfigError, match="trigger"):
        from runtime.sources import check_trigger
        check_trigger("soon")


# --------------------------------------------------------------------------- alerts


class MemoryStore:
    def __init__(self):
        self.files = {}

    def list_files(self, folder):
        return sorted(p for p in self.files if p.startswith(folder.rstrip("/") + "/"))

    def read_text(self, path):
        return self.files[path]

    def write_text(self, path, text):
        self.files[path] = text

    def delete(self, path):
        self.files.pop(path, None)


def test_alerts_are_batched_rate_limited_and_never_sent_twice(moto_endpoint):
    import boto3

    from streaming.alerts import SentLedger, SnsAlerter

    topic, sqs, queue_url = topic_with_queue(moto_endpoint)
    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=moto_endpoint)
    calls = []
    original = sns.publish_batch

    def counting_publish_batch(**kwargs):
        calls.append(len(kwargs["PublishBatchRequestEntries"]))
        return original(**kwargs)

    sns.publish_batch = counting_publish_batch
    sleeps, now = [], [0.0]

    def fake_sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    store = MemoryStore()
    alerter = SnsAlerter(sns, topic, SentLedger(store, "ckpt/alerts_sent"), dataset="transactions",
                         rate_per_second=10.0, sleep=fake_sleep, clock=lambda: now[0])
    events = [{"transaction_id": f"t{i}", "customer_id": "c1", "terminal_id": "k9", "amount": 500.0,
               "event_time": "2026-03-01 10:00:00", "risk": 0.97, "rcf_score": 3.2, "logistic_score": 0.91,
               "rcf_version": "v3", "logistic_version": "v2", "reasons": ["rcf:amount", "logistic:terminal_risk_7d"]}
              for i in range(25)]
    report = alerter.publish(events, scope="7")
    assert (report.sent, report.skipped, report.failed) == (25, 0, 0)
    assert calls == [10, 10, 5] and sum(sleeps) == pytest.approx(1.5, abs=0.2)   # 25 at 10/s, burst 10
    again = SnsAlerter(sns, topic, SentLedger(store, "ckpt/alerts_sent"), dataset="transactions",
                       sleep=fake_sleep, clock=lambda: now[0]).publish(events, scope="7")  # restart re-runs batch 7
    assert (again.sent, again.skipped) == (0, 25) and calls == [10, 10, 5]
    messages = drain(sqs, queue_url)
    assert len(messages) == 25
    body = messages[0]["Body"]
    for expected in ("customer_id c1", "terminal_id k9", "Risk:  0.970", "rcf_score 3.200", "rcf:amount"):
        assert expected in body, body


def test_both_engines_reject_the_same_records_for_the_same_reasons(tmp_path, spark):
    """Duplicates in a batch (clean and garbled copies), replays of an earlier batch, late events, an
    event within the allowed lateness and one from the far future: the incremental engine (decoding
    clean records on the driver) and the Spark engine keep the same copy of every event and
    dead-letter the same records with the same reasons. The far-future event (dated 2999, arriving
    now) is dead-lettered and never moves the watermark, so the next batch is scored."""
    from ingest.decode import payloads_from_text
    from features.incremental import TransactionStreamFeatures
    from features.transactions import build_transaction_features, lookback_days
    from runtime.config import load_config
    from runtime.sources import landing_source, write_stream
    from streaming.batch import StreamSettings
    from streaming.processor import MicroBatchProcessor

    config = load_config(ROOT / "conf" / "local.yaml", ["dataset=transactions"])
    feats = config["features"]["transactions"]
    first = make_transactions(45, seed=3)
    later = make_transactions(85, seed=3)[45:]          # 40 more, plus 5 special records: 2 files of 45
    dup_late = dict(later[5], event_time=later[9]["event_time"], amount=1.25)      # same id, later time: dropped
    dup_early = dict(later[12], event_time=later[11]["event_time"], amount=2.5)    # same id, earlier time: kept
    garbled = dict(later[20], amount="lots")                                        # bad copy: never displaces
    replayed = first[-1]              # already processed (at the watermark itself: not late)
    late = dict(later[30], transaction_id="late1", event_time=first[0]["event_time"])   # before the watermark
    newest = dt.datetime.strptime(first[-1]["event_time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    within = dict(later[31], transaction_id="ooo1",      # 30 min before batch 1's newest: within the lateness
                  event_time=(newest - dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    far = dict(first[20], transaction_id="far1", event_time="2999-12-31T00:00:00Z")
    batch1 = [json.dumps(r) for r in first] + [json.dumps(far)]
    batch2 = [json.dumps(r) for r in later] + [json.dumps(r) for r in (dup_late, dup_early, garbled, replayed, late,
                                                                        within)]
    batch2.insert(0, batch2.pop(-5))          # the early copy comes first in the input
    write_landing(tmp_path / "landing", batch1 + batch2, per_file=len(batch1))

    def transform(df):
        return build_transaction_features(df, windows_days=feats["windows_days"], delay_days=feats["delay_days"])

    results = {}
    for engine in ("incremental", "spark"):
        root = tmp_path / engine
        settings = StreamSettings(dataset="transactions", schema_conf=config["schema"]["transactions"],
                                  output=str(root / "sink"), checkpoint=str(root / "ckpt"),
                                  dead_letter=str(root / "dead"), allowed_lateness_seconds=3600, max_event_skew_seconds=300,
                                  history_seconds=lookback_days(feats["windows_days"], feats["delay_days"]) * 86400)
        incremental = TransactionStreamFeatures(**feats) if engine == "incremental" else None
        processor = MicroBatchProcessor(settings, transform=transform, incremental=incremental,
                                        scorer_factory=lambda: deterministic_scorer(config))
        source = landing_source(spark, str(tmp_path / "landing"), max_files_per_trigger=1)
        write_stream(payloads_from_text(source), checkpoint=str(root / "ckpt"), trigger="available-now",
                     process_batch=processor).awaitTermination()
        sink = {r["transaction_id"]: (r["amount"], r["risk"]) for r in
                spark.read.format("delta").load(str(root / "sink")).select("transaction_id", "amount", "risk").collect()}
        dead = sorted((r["payload"], r["reason"])
                      for r in spark.read.format("delta").load(str(root / "dead")).collect())
        results[engine] = (sink, dead, [r.dead_reasons for r in processor.reports])
    sink, dead, reasons = results["incremental"]
    assert len(processor.reports) == 2
    assert len(sink) == 86 and "ooo1" in sink and "far1" not in sink
    assert sink[dup_early["transaction_id"]][0] == 2.5 and sink[later[5]["transaction_id"]][0] != 1.25
    assert sink[garbled["transaction_id"]][0] == later[20]["amount"] and "late1" not in sink
    by_reason = {}
    for payload, reason in dead:
        by_reason.setdefault(reason.split(" (")[0], []).append(json.loads(payload)["transaction_id"])
    assert sorted(by_reason.pop("duplicate transaction_id")) == sorted([later[5]["transaction_id"],
                                                                         later[12]["transaction_id"], replayed["transaction_id"]])
    assert by_reason.pop("late") == ["late1"]
    assert by_reason.pop("future") == ["far1"]
    assert list(by_reason.values()) == [[garbled["transaction_id"]]]
    assert results["spark"][0].keys() == sink.keys()
    assert all(math.isclose(results["spark"][0][k][1], sink[k][1], rel_tol=1e-9) for k in sink)
    assert [(p, r.split(" (")[0]) for p, r in results["spark"][1]] == [(p, r.split(" (")[0]) for p, r in dead]
    assert results["spark"][2] == reasons


def test_a_micro_batch_of_only_bad_records_commits_an_empty_batch(tmp_path, spark):
    """The driver-local path with nothing to score: no rows in the sink, every record a dead letter."""
    from ingest.decode import payloads_from_text
    from features.incremental import TransactionStreamFeatures
    from runtime.config import load_config
    from runtime.sources import landing_source, write_stream
    from streaming.batch import StreamSettings
    from streaming.processor import MicroBatchProcessor

    config = load_config(ROOT / "conf" / "local.yaml", ["dataset=transactions"])
    feats = config["features"]["transactions"]
    good = [json.dumps(r) for r in make_transactions(20, seed=9)]
    write_landing(tmp_path / "landing", good + BAD_RECORDS * 2 + ["{}"] * 14, per_file=20)
    settings = StreamSettings(dataset="transactions", schema_conf=config["schema"]["transactions"],
                              output=str(tmp_path / "sink"), checkpoint=str(tmp_path / "ckpt"),
                              dead_letter=str(tmp_path / "dead"), history_seconds=40 * 86400)
    processor = MicroBatchProcessor(settings, transform=lambda df: df, incremental=TransactionStreamFeatures(**feats),
                                    scorer_factory=lambda: deterministic_scorer(config))
    source = landing_source(spark, str(tmp_path / "landing"), max_files_per_trigger=1)
    write_stream(payloads_from_text(source), checkpoint=str(tmp_path / "ckpt"), trigger="available-now",
                 process_batch=processor).awaitTermination()
    assert [(r.scored, r.dead_letters) for r in processor.reports] == [(20, 0), (0, 20)]
    assert sink_commits(tmp_path / "sink") == [(0, 20), (1, 0)], "batch 1 is a Delta commit of no rows"
    assert spark.read.format("delta").load(str(tmp_path / "sink")).count() == 20
    assert sink_commits(tmp_path / "dead") == [(1, 20)]
    assert spark.read.format("delta").load(str(tmp_path / "dead")).count() == 20


def test_the_sink_commits_a_batch_once_through_delta_rs_and_spark_alike(tmp_path, spark, monkeypatch):
    """The driver-side write (delta-rs on local paths, Spark's Delta writer elsewhere) and the Spark
    frame write share one txn scheme: a repeated batch is skipped whichever writer committed it."""
    import pandas as pd

    from streaming import sink as sink_module
    from streaming.engines import arrow_table
    from streaming.sink import DeltaSink

    def batch(n):
        events = pd.DataFrame({"transaction_id": [f"b{n}-{i}" for i in range(4)],
                               "event_time": pd.to_datetime([f"2026-03-01 1{i}:00:00" for i in range(4)], utc=True),
                               "amount": [1.5, 2.5, None, 4.0], "reasons": [["a"], [], ["b", "c"], ["a"]]})
        events["date"] = events["event_time"].dt.tz_convert(None).to_numpy().astype("datetime64[D]")
        events["hour"] = events["event_time"].dt.hour.astype("int32")
        events["batch_id"] = n
        return arrow_table(events)

    rust = DeltaSink(spark, str(tmp_path / "rust"), "app-1", partition_by=("date", "hour"))
    assert rust.write_arrow(batch(0), 0, extra={"max_seen_us": 7})["skipped"] is False
    assert rust.write_arrow(batch(0), 0)["skipped"] is True
    # batch 1 through Spark's writer (what write_arrow does on s3a://), into the table delta-rs made
    assert rust.write(spark.createDataFrame(batch(1).to_pandas(), schema=rust.rows().schema), 1)["skipped"] is False
    again = DeltaSink(spark, str(tmp_path / "rust"), "app-1", partition_by=("date", "hour"))   # after a restart
    assert again.write_arrow(batch(1), 1)["skipped"] is True, "delta-rs sees the txn Spark's writer recorded"
    assert again.commit_before(1)["max_seen_us"] == 7 and again.last_batch() == 1
    assert sink_commits(tmp_path / "rust") == [(0, 4), (1, 4)]

    monkeypatch.setattr(sink_module.fs, "local_path", lambda path: None)     # as for an s3a:// table
    via_spark = DeltaSink(spark, str(tmp_path / "spark"), "app-1", partition_by=("date", "hour"))
    assert [via_spark.write_arrow(batch(n), n)["skipped"] for n in (0, 1, 1)] == [False, False, True]
    monkeypatch.undo()
    assert sink_commits(tmp_path / "spark") == [(0, 4), (1, 4)]
    rows = {r["transaction_id"]: r.asDict() for r in rust.rows().collect()}
    assert rows == {r["transaction_id"]: r.asDict() for r in via_spark.rows().collect()}
    assert rows["b0-2"]["amount"] is None and rows["b1-2"]["reasons"] == ["b", "c"] and rows["b0-1"]["reasons"] == []
    assert dict(rust.rows().dtypes)["hour"] == "int" and dict(rust.rows().dtypes)["date"] == "date"


def test_the_stream_refuses_an_output_folder_that_is_not_a_delta_table(tmp_path, spark):
    from runtime.sources import StreamConfigError
    from streaming.sink import check_sink_target

    spark.range(3).write.parquet(str(tmp_path / "old_sink" / "date=2026-03-01"))
    with pytest.raises(StreamConfigError, match=r"old_sink holds files but is not a Delta table.*CONVERT TO DELTA"):
        check_sink_target(spark, str(tmp_path / "old_sink"), "output")
    spark.range(3).write.format("delta").save(str(tmp_path / "delta_sink"))
    for fine in (tmp_path / "delta_sink", tmp_path / "not_yet"):
        check_sink_target(spark, str(fine), "output")
