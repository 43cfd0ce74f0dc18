"""Stream benchmark: records/s and event-to-sink latency of the stream path on this machine, from a
landing folder and from Kinesis (moto's server on a loopback port), measured in one run so that
their ratios can be compared on a shared machine.

Landing source (in this process): a producer process writes JSON-lines transaction files into a
landing folder at --rate events/s for --seconds (the replay job's landing writer), each event
stamped with the time it is made (a live feed: event time moves with the wall clock, so a
micro-batch covers seconds of event time and the per-entity history grows for the whole run); the
stream (landing source, the transaction features of the chosen engine, the champion models of
--models-lake when it has them (else a stand-in formula, which has a pandas twin like the
champions), the Delta sink, no alerts) runs with a --trigger interval until every file is
processed. Latency per event = the batch's Delta commit time (from the table's history) - the
file's modification time (when the event became readable).
``sustained_events_per_s`` = events / (end of the last batch - producer start), so it includes
draining the last batch; ``kept_up_with_offered_rate`` says whether every micro-batch that
started while the producer ran finished within one trigger interval (the backlog never grew).
The producer runs on the same 2 cores as the stream.

Kinesis source (before the landing run, one Spark process at a time), for each shard count of
--kinesis-shards, on a freshly reset moto server:
  1. moto's ceiling: --kinesis-records records put with PutRecords (the replay job's producer,
     ``runtime.producers.KinesisReplayer``, as fast as it takes them) into a new stream, with no
     stream job running and no Spark on the machine;
  2. the replay job, ``python -m jobs replay --mode kinesis --shards N --rate 0``, putting the
     same records from a JSON-lines file into another new stream (its own records/s line; no
     stream job running);
  3. ``python -m jobs stream --source kinesis`` (the Maven Central connector, the same trigger,
     engine, scorer and Spark settings as the landing run, no alerts) reading a third stream:
     --kinesis-warmup records put before it starts are scored first (not measured), then the
     bench puts --kinesis-records live records (stamped like the landing ones, with the replay
     job's producer: the replay job itself would start a second Spark process on this machine)
     while the job reads them; the job stops itself --stop-when-idle seconds after the last one.
     ``put_records_per_s`` is the producer's rate beside the stream job, ``sustained_records_per_s``
     = records / (end of the batch that completes them - producer start), from the job's own
     batch lines, ``processing_records_per_s`` = records / the seconds of those batches, and the
     latency per record = its batch's Delta commit time - its Kinesis arrival time
     (``approximateArrivalTimestamp``, when moto accepted it), read from the sink like the
     landing run's; ``batch_lines_p95_max_s`` is the worst batch p95 the job itself printed.
     Shards are read side by side, so an event can be older than another shard's newest: the
     runs allow --kinesis-lateness seconds of lateness (dead letters are counted either way).

    python bench/bench_stream.py [--rate 25000] [--seconds 60] [--trigger "5 seconds"]
                                 [--kinesis-shards 1,4] [--kinesis-records 30000]

Prints a table (ratios against the landing run) and writes bench/results/stream.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shutil
import sys
import tempfile
import multiprocessing
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def events(n, *, customers=200_000, terminals=50_000, seed=1, prefix="b"):
    """n transactions stamped with the wall-clock time at which the producer makes them (a live feed).

    The producer shares the stream's 2 cores (in production it runs elsewhere), so it is kept
    cheap: the JSON is formatted directly (the same document json.dumps makes) and the clock is
    read every 100 events (at 20,000 events/s, event times lag real time by at most about 5 ms).
    """
    rng = random.Random(seed)
    stamp = ""
    for i in range(n):
        if i % 100 == 0:
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        yield (f'{{"transaction_id": "{prefix}{i:09d}", "event_time": "{stamp}", '
               f'"customer_id": "c{rng.randrange(customers)}", "terminal_id": "k{rng.randrange(terminals)}", '
               f'"amount": {round(rng.lognormvariate(3.5, 0.8), 2)!r}, "label": {int(rng.random() < 0.01)}}}').encode()


def produce(folder, file_records, rate, total):
    """The producer process: ``total`` events into ``folder`` at ``rate`` a second."""
    from runtime.producers import LandingWriter

    LandingWriter(folder, batch_size=file_records, rate=rate).send(events(total))


def scorer(_config=None):
    """The stand-in: a formula over two features, on Spark frames and (``score.pandas``) on the driver."""
    import numpy as np
    from pyspark.sql import functions as F

    def score(df):
        risk = F.least(F.lit(1.0), F.col("amount_vs_customer_avg_30d") / 5.0 + F.col("terminal_risk_7d"))
        return (df.withColumn("rcf_score", F.col("amount_vs_customer_avg_30d"))
                .withColumn("logistic_score", F.col("terminal_risk_7d")).withColumn("risk", risk)
                .withColumn("is_anomaly", risk >= 0.9).withColumn("reasons", F.array(F.lit("bench")))
                .withColumn("rcf_version", F.lit("bench")).withColumn("logistic_version", F.lit("bench")))

    def score_frame(frame):
        out = frame.copy()
        out["rcf_score"], out["logistic_score"] = frame["amount_vs_customer_avg_30d"], frame["terminal_risk_7d"]
        out["risk"] = np.fmin(1.0, (frame["amount_vs_customer_avg_30d"] / 5.0 + frame["terminal_risk_7d"]).to_numpy())
        out["is_anomaly"] = out["risk"] >= 0.9
        out["reasons"] = [["bench"]] * len(out)
        out["rcf_version"], out["logistic_version"] = "bench", "bench"
        return out

    score.pandas = score_frame
    return score


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


BATCH_LINE = re.compile(r"\[stream\] batch (\d+): ([\d,]+) records, ([\d,]+) events scored.*?([\d,]+) dead letters, "
                        r"event-to-sink latency (?:p50 ([\d.]+) s, p95 ([\d.]+) s, max ([\d.]+) s|n/a), "
                        r"batch took ([\d.]+) s")
REPLAY_LINE = re.compile(r"records sent ([\d,]+), failed ([\d,]+) \(.*?([\d,]+) records/s\)")
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1"}


def num(text):
    return int(text.replace(",", ""))


def parse_batch_line(line):
    """A stream job batch line -> dict (None for any other line)."""
    m = BATCH_LINE.search(line)
    if not m:
        return None
    return {"batch": int(m.group(1)), "records": num(m.group(2)), "scored": num(m.group(3)),
            "dead": num(m.group(4)), "p50": float(m.group(5)) if m.group(5) else None,
            "p95": float(m.group(6)) if m.group(6) else None, "seconds": float(m.group(8))}


class Moto:
    """moto's server as its own process on a free loopback port, stopped by its PID (the tests'
    ``aws_local.moto_server_process``), with the bench's reset and Kinesis client.
    """

    def __init__(self, log_path):
        import contextlib

        sys.path.insert(0, str(ROOT / "tests" / "integration"))
        from aws_local import moto_server_process

        self._stack = contextlib.ExitStack()
        self.url = self._stack.enter_context(moto_server_process(log=log_path))

    def reset(self):
        """Forget every stream (moto slows down as a shard grows; each run starts from nothing)."""
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=60)

    def kinesis(self):
        import boto3

        return boto3.client("kinesis", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="bench", aws_secret_access_key="bench")

    def stop(self):
        self._stack.close()


def keyed(payloads):
    """(JSON bytes, partition key = the customer id) for the Kinesis producer."""
    for data in payloads:
        yield data, data[data.index(b'"customer_id": "') + 16:].split(b'"', 1)[0].decode()


def spark_args(args):
    """The Spark settings of the landing run, for the jobs' command lines."""
    return ["--set", "spark.master=local[2]", "--set", f"spark.driver_memory={args.driver_memory}",
            "--set", f"spark.shuffle_partitions={args.shuffle_partitions}", "--set", "spark.extra_jars=",
            "--set", "spark.conf={spark.ui.showConsoleProgress: 'false', spark.ui.enabled: 'false'}"]


def job_env():
    """The worktree's code first (jobs and this file's stand-in scorer), dummy credentials (moto only)."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "bench")] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return {**os.environ, **AWS_ENV, "PYTHONPATH": path}


def kinesis_run(args, moto, shards, work, scorer_args, log):
    """Ceiling, replay job and stream job for one shard count (see the module docstring)."""
    import subprocess
    import threading

    from runtime.producers import KinesisReplayer
    from runtime.sources import ensure_kinesis_stream

    n, warm = args.kinesis_records, args.kinesis_warmup
    out = {"shards": shards, "records": n, "warmup_records": warm}
    moto.reset()
    kinesis = moto.kinesis()

    # 1. moto's ceiling: PutRecords with nothing else running
    ensure_kinesis_stream(kinesis, "ceiling", shards)
    report = KinesisReplayer(kinesis, "ceiling").send(keyed(events(n, seed=3, prefix="m")))
    out["moto_put_records_per_s"] = round(report.rate, 1)
    out["moto_put_failed"] = report.failed
    print(f"[bench] kinesis {shards} shard(s): moto alone took {report.sent:,} records at {report.rate:,.0f}/s "
          f"({report.failed} failed)", flush=True)
    kinesis.delete_stream(StreamName="ceiling")

    # 2. the replay job, no stream job running
    source = work / f"replay_{shards}.jsonl"
    source.write_bytes(b"\n".join(events(n, seed=4, prefix="r")) + b"\n")
    common = ["--conf", str(ROOT / "conf" / "local.yaml"), "--dataset", "transactions", *spark_args(args),
              "--set", f"aws.endpoint_url={moto.url}"]
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "jobs", "replay", *common, "--mode", "kinesis", "--stream", "replay",
                           "--shards", str(shards), "--input", str(source), "--format", "json", "--rate", "0",
                           "--order-by", ""], cwd=ROOT, env=job_env(), capture_output=True, text=True,
                          timeout=args.kinesis_timeout)
    (work / f"replay_{shards}.log").write_text(done.stdout + done.stderr)
    m = REPLAY_LINE.search(done.stdout + done.stderr)
    if done.returncode or not m:
        raise RuntimeError(f"replay job failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    out["replay_job_put_records_per_s"] = float(num(m.group(3)))
    out["replay_job_sent"], out["replay_job_failed"] = num(m.group(1)), num(m.group(2))
    out["replay_job_wall_s"] = round(time.time() - started, 1)
    print(f"[bench] kinesis {shards} shard(s): replay job sent {out['replay_job_sent']:,} at "
          f"{out['replay_job_put_records_per_s']:,.0f}/s ({out['replay_job_wall_s']} s with Spark's start)", flush=True)
    kinesis.delete_stream(StreamName="replay")

    # 3. the stream job reading live records
    ensure_kinesis_stream(kinesis, "bench", shards)
    producer = KinesisReplayer(kinesis, "bench")
    if warm:
        producer.send(keyed(events(warm, seed=2, prefix="w")))
    sub = work / f"kinesis_{shards}"
    cmd = [sys.executable, "-m", "jobs", "stream", *common, "--source", "kinesis", "--input", "bench",
           "--output", str(sub / "sink"), "--checkpoint", str(sub / "ckpt"), "--dead-letter", str(sub / "dead"),
           "--trigger", args.trigger, "--no-alerts", "--engine", args.engine,
           "--stop-when-idle", str(args.stop_when_idle), "--run-seconds", str(args.kinesis_timeout),
           "--set", "stream.kinesis.connector=qubole",
           "--set", f"stream.allowed_lateness_seconds={args.kinesis_lateness}", *scorer_args]
    lines, batches = [], []
    job_log = open(work / f"stream_{shards}.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def read():
        for line in proc.stdout:
            now = time.time()
            job_log.write(line)
            lines.append(line)
            parsed = parse_batch_line(line)
            if parsed:
                parsed["at"] = now
                batches.append(parsed)
                if log:
                    print("[bench]   " + line.strip(), flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + args.kinesis_timeout

    def wait_records(count):
        while sum(b["records"] for b in batches) < count:
            if proc.poll() is not None or time.time() > deadline:
                return False
            time.sleep(0.2)
        return True

    try:
        if not wait_records(warm):
            raise RuntimeError("the stream job did not read the warm-up records:\n" + "".join(lines[-40:]))
        measured_from = len(batches)
        started = time.time()
        report = producer.send(keyed(events(n, prefix="b")))
        produced_at = time.time()
        complete = wait_records(warm + report.sent)
        proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        job_log.close()
    if proc.returncode:
        raise RuntimeError(f"stream job exited {proc.returncode}:\n" + "".join(lines[-40:]))
    measured = [b for b in batches[measured_from:] if b["records"]]
    # the batch whose line completes the measured records
    total, last = 0, None
    for b in measured:
        total += b["records"]
        last = b
        if total >= report.sent:
            break
    busy = sum(b["seconds"] for b in measured)
    out.update({
        "put_records_per_s": round(report.rate, 1), "put_failed": report.failed, "records_put": report.sent,
        "all_read": complete, "records_read": sum(b["records"] for b in measured),
        "events_scored_reported": sum(b["scored"] for b in measured),
        "dead_letters": sum(b["dead"] for b in batches), "micro_batches": len(measured),
        "producer_seconds": round(produced_at - started, 1),
        "sustained_records_per_s": round(report.sent / (last["at"] - started), 1) if last else None,
        "processing_records_per_s": round(total / busy, 1) if busy else None,
        "batch_seconds_p50": round(percentile([b["seconds"] for b in measured], 0.5), 2) if measured else None,
        "batch_lines_p95_max_s": max([b["p95"] for b in measured if b["p95"] is not None], default=None),
        "sink": str(sub / "sink"), "checkpoint": str(sub / "ckpt"),
    })
    print(f"[bench] kinesis {shards} shard(s): put {report.sent:,} at {report.rate:,.0f}/s beside the stream job, "
          f"read {out['records_read']:,} in {len(measured)} batches, sustained "
          f"{out['sustained_records_per_s'] or 0:,.0f}/s", flush=True)
    return out


def sink_latencies(spark, sink, app, prefix):
    """(latencies in s, rows, duplicates) of the sink rows whose id starts with ``prefix``:
    the batch's Delta commit time - the record's arrival time."""
    from pyspark.sql import functions as F

    from streaming.sink import SINK_PARTITIONS, DeltaSink

    table = DeltaSink(spark, sink, app, partition_by=SINK_PARTITIONS)
    commits = {batch: info["committed_at"] for batch, info in table.commits(whole_history=True).items()}
    frame = table.rows()
    if frame is None:
        return [], 0, 0
    rows_df = frame.where(F.col("transaction_id").startswith(prefix))
    rows = rows_df.select("batch_id", F.unix_micros("arrival_time").alias("a")).collect()
    dupes = len(rows) - rows_df.select("transaction_id").distinct().count()
    return [commits[r["batch_id"]] - r["a"] / 1e6 for r in rows], len(rows), dupes


def rounded(value, digits=2):
    return None if value is None else round(value, digits)


def landing_run(args, work, has_champions, models_lake):
    """The landing source run in this process; (its result, the Spark session, still running)."""
    from ingest.decode import payloads_from_text
    from features.transactions import build_transaction_features, lookback_days
    from runtime.config import load_config
    from runtime.producers import LandingWriter
    from runtime.spark import build_session
    from runtime.sources import landing_source, write_stream
    from streaming.batch import StreamSettings
    from streaming.processor import MicroBatchProcessor

    config = load_config(ROOT / "conf" / "local.yaml", [
        "dataset=transactions", "spark.master=local[2]", f"spark.driver_memory={args.driver_memory}",
        f"spark.shuffle_partitions={args.shuffle_partitions}", "spark.extra_jars=",
        "spark.conf={spark.ui.showConsoleProgress: 'false', spark.ui.enabled: 'false'}"])
    spark = build_session(config)
    spark.sparkContext.setLogLevel("ERROR")
    feats = config["features"]["transactions"]

    def transform(df):
        return build_transaction_features(df, windows_days=feats["windows_days"], delay_days=feats["delay_days"])

    settings = StreamSettings(dataset="transactions", schema_conf=config["schema"]["transactions"],
                              output=str(work / "sink"), checkpoint=str(work / "ckpt"), dead_letter=str(work / "dead"),
                              history_seconds=lookback_days(feats["windows_days"], feats["delay_days"]) * 86400,
                              max_record_bytes=config["stream"]["max_record_bytes"])
    incremental = None
    if args.engine == "incremental":
        from features.incremental import TransactionStreamFeatures

        incremental = TransactionStreamFeatures(windows_days=feats["windows_days"], delay_days=feats["delay_days"],
                                                keep_seconds=settings.history_seconds)
    score_with, scorer_factory = "stand-in formula", scorer
    if has_champions:
        from streaming.job import champion_scorer_factory

        scorer_factory = champion_scorer_factory(load_config(ROOT / "conf" / "local.yaml", [
            "dataset=transactions", f"storage.lake={models_lake}"]))
        score_with = f"champions of {models_lake} (RCF with attribution + logistic + risk + reasons)"
    print(f"[bench] landing: scoring with {score_with}", flush=True)
    processor = MicroBatchProcessor(settings, transform=transform, scorer_factory=scorer_factory, incremental=incremental,
                                    on_batch=lambda r: print("[bench] " + r.line(), flush=True))
    total = int(args.rate * args.seconds)
    source = landing_source(spark, str(work / "landing"), max_files_per_trigger=100000)
    query = write_stream(payloads_from_text(source), checkpoint=str(work / "ckpt"), trigger=args.trigger,
                         process_batch=processor, query_name="bench_stream")
    # Warm-up (not measured): the first micro-batch starts the Python workers and loads the
    # compiled kernels; a stream on a cluster runs for hours, so its steady state is what counts.
    warm = args.warmup_events
    if warm:
        LandingWriter(str(work / "landing"), batch_size=warm).send(events(warm, seed=2, prefix="w"))
        while sum(r.scored for r in processor.reports) < warm:
            time.sleep(0.2)
            if query.exception():
                raise query.exception()
        print(f"[bench] warm-up: {warm:,} events in {processor.reports[-1].seconds:.1f} s (not measured)", flush=True)
    measured_from = len(processor.reports)
    started = time.time()
    # its own process, so making JSON does not compete with the stream's driver for the GIL
    producer = multiprocessing.get_context("spawn").Process(
        target=produce, args=(str(work / "landing"), args.file_records, args.rate, total), daemon=True)
    producer.start()
    producer.join()
    produced_at = time.time()
    deadline = produced_at + 600
    while time.time() < deadline and sum(r.scored + r.dead_letters for r in processor.reports) < total + warm:
        time.sleep(0.5)
        if query.exception():
            raise query.exception()
    finished = time.time()
    query.stop()

    from streaming.sink import stream_app_id

    trigger_s = float(args.trigger.split()[0]) if args.trigger.split()[-1].startswith("second") else float("inf")
    latencies, scored, dupes = sink_latencies(spark, str(work / "sink"), stream_app_id(str(work / "ckpt")), "b")
    batches = [r for r in processor.reports[measured_from:] if r.scored]
    busy = sum(r.seconds for r in batches)
    result = {
        "trigger": args.trigger, "offered_rate_events_per_s": args.rate, "producer_seconds": args.seconds,
        "put_events_per_s": round(total / (produced_at - started), 1),
        "events_offered": total, "events_scored": scored, "duplicates_in_sink": dupes,
        "dead_letters": sum(r.dead_letters for r in processor.reports),
        "engine": args.engine, "warmup_events": warm, "scorer": score_with,
        "batch_phases_s": [r.phases for r in batches],
        "micro_batches": len(batches),
        "sustained_events_per_s": round(scored / (finished - started), 1),
        "processing_events_per_s": round(scored / busy, 1) if busy else None,
        "latency_p50_s": rounded(percentile(latencies, 0.5)),
        "latency_p95_s": rounded(percentile(latencies, 0.95)),
        "latency_max_s": rounded(max(latencies, default=None)),
        "batch_seconds_p50": round(percentile([r.seconds for r in batches], 0.5), 2) if batches else None,
        # kept up: every micro-batch that started while the producer ran finished within one trigger
        # interval, so the backlog never grew (the last batch only drains what is left)
        "batch_seconds_max_while_producing": round(max([r.seconds for r in batches[:-1]], default=0.0), 2),
        "kept_up_with_offered_rate": bool(batches) and all(r.seconds <= trigger_s for r in batches[:-1]),
        "drain_seconds_after_producer": round(finished - produced_at, 1),
        "goal": {"events_per_s": 20000, "latency_p95_s": 10},
    }
    print("[bench] landing: " + json.dumps({k: v for k, v in result.items() if k != "batch_phases_s"}), flush=True)
    return result, spark


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=25000.0, help="events per second offered (default 25000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the producer runs (default 60)")
    parser.add_argument("--file-records", type=int, default=5000, help="events per landing file (default 5000)")
    parser.add_argument("--trigger", default="5 seconds")
    parser.add_argument("--shuffle-partitions", type=int, default=4)
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--models-lake", default=str(ROOT / "lake"),
                        help="score with the transactions champions of this lake (what `make run` trains); "
                             "when it has none, a stand-in scorer (a formula over the features) is used")
    parser.add_argument("--warmup-events", type=int, default=5000,
                        help="events processed before the measurement starts (default 5000; 0: none)")
    parser.add_argument("--engine", choices=("incremental", "spark"), default="incremental",
                        help="stream feature engine (default incremental, what the stream job picks for transactions)")
    parser.add_argument("--kinesis-shards", default="1,4",
                        help="shard counts of the Kinesis runs, comma-separated (default 1,4; '' or 0: no Kinesis run)")
    parser.add_argument("--kinesis-records", type=int, default=30000,
                        help="records put per Kinesis run (default 30000: moto takes about 1,000-3,000 a second "
                             "and slows as a shard grows; the Kinesis part then takes about 6-8 minutes here)")
    parser.add_argument("--kinesis-warmup", type=int, default=2000,
                        help="records the stream job scores before the Kinesis measurement starts (default 2000)")
    parser.add_argument("--kinesis-lateness", type=int, default=60,
                        help="stream.allowed_lateness_seconds of the Kinesis runs (default 60: shards are read "
                             "side by side)")
    parser.add_argument("--stop-when-idle", type=float, default=10.0,
                        help="the Kinesis stream job stops this many seconds after the last record (default 10)")
    parser.add_argument("--kinesis-timeout", type=float, default=600.0,
                        help="limit in seconds of each job of a Kinesis run (default 600)")
    parser.add_argument("--quiet", action="store_true", help="do not echo the stream job's batch lines")
    parser.add_argument("--work", help="work folder (default a temporary one, removed afterwards)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "stream.json"))
    args = parser.parse_args(argv)
    shard_counts = [int(x) for x in args.kinesis_shards.split(",") if x.strip() and int(x)]

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_stream_"))
    for sub in ["landing", "sink", "ckpt", "dead"] + [f"kinesis_{s}" for s in shard_counts]:
        shutil.rmtree(work / sub, ignore_errors=True)
    (work / "landing").mkdir(parents=True)
    load_at_start = os.getloadavg()
    models_lake = args.models_lake and Path(args.models_lake).resolve()
    has_champions = bool(models_lake) and (models_lake / "models" / "transactions" / "rcf" / "champion.json").exists()

    kinesis_results = []
    if shard_counts:
        # first, in subprocesses (one Spark process at a time): the landing run's session then
        # reads their sinks
        scorer_args = (["--set", f"storage.lake={models_lake}"] if has_champions
                       else ["--set", "stream.scorer=bench_stream:scorer"])
        moto = Moto(work / "moto.log")
        try:
            for shards in shard_counts:
                kinesis_results.append(kinesis_run(args, moto, shards, work, scorer_args, log=not args.quiet))
            moto.reset()
        finally:
            moto.stop()

    landing, spark = landing_run(args, work, has_champions, models_lake)
    for k in kinesis_results:
        from streaming.sink import stream_app_id

        latencies, rows, dupes = sink_latencies(spark, k["sink"], stream_app_id(k["checkpoint"]), "b")
        k.update({"events_scored": rows, "duplicates_in_sink": dupes,
                  "latency_p50_s": rounded(percentile(latencies, 0.5)),
                  "latency_p95_s": rounded(percentile(latencies, 0.95)),
                  "latency_max_s": rounded(max(latencies, default=None))})
    spark.stop()

    for k in kinesis_results:
        k["vs_landing"] = {
            "sustained": rounded(k["sustained_records_per_s"] / landing["sustained_events_per_s"], 3)
            if k["sustained_records_per_s"] and landing["sustained_events_per_s"] else None,
            "processing": rounded(k["processing_records_per_s"] / landing["processing_events_per_s"], 3)
            if k["processing_records_per_s"] and landing["processing_events_per_s"] else None,
            "latency_p95": rounded(k["latency_p95_s"] / landing["latency_p95_s"], 2)
            if k["latency_p95_s"] and landing["latency_p95_s"] else None,
            "put_vs_moto_ceiling": rounded(k["put_records_per_s"] / k["moto_put_records_per_s"], 3)
            if k["moto_put_records_per_s"] else None,
        }
    result = {
        "machine": f"{os.cpu_count()} cores, local[2], driver {args.driver_memory}",
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "landing": landing,
        "kinesis": kinesis_results,
    }
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench] wrote {args.out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def print_table(result):
    def f(value, fmt="{:,.0f}"):
        return "-" if value is None else fmt.format(value)

    land = result["landing"]
    rows = [("landing", "-", f(land["put_events_per_s"]), "-", "-", f(land["sustained_events_per_s"]),
             f(land["processing_events_per_s"]), f(land["latency_p50_s"], "{:.1f}"),
             f(land["latency_p95_s"], "{:.1f}"), "1", "1")]
    for k in result["kinesis"]:
        rows.append(("kinesis", str(k["shards"]), f(k["put_records_per_s"]), f(k["moto_put_records_per_s"]),
                     f(k["replay_job_put_records_per_s"]), f(k["sustained_records_per_s"]),
                     f(k["processing_records_per_s"]), f(k["latency_p50_s"], "{:.1f}"),
                     f(k["latency_p95_s"], "{:.1f}"), f(k["vs_landing"]["sustained"], "{:.3f}"),
                     f(k["vs_landing"]["latency_p95"], "{:.2f}")))
    head = ("source", "shards", "put/s", "moto alone/s", "replay job/s", "sustained/s", "processing/s",
            "p50 s", "p95 s", "sustained vs landing", "p95 vs landing")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print("\n" + "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for r in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)))
    load = result["load_average_at_start"]
    print(f"(load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; landing offered "
          f"{land['offered_rate_events_per_s']:,.0f} events/s for {land['producer_seconds']:g} s)")


if __name__ == "__main__":
    sys.exit(main())
