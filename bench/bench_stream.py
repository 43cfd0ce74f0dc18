"""Stream benchmark: sustained events/s and event-to-sink latency of the stream path on this machine.

A producer process writes JSON-lines transaction files into a landing folder at --rate events/s for
--seconds (the replay job's landing writer), each event stamped with the time it is made (a live
feed: event time moves with the wall clock, so a micro-batch covers seconds of event time and the
per-entity history grows for the whole run); the stream (landing source, the transaction features
of the chosen engine, the champion models of --models-lake when it has them (else a stand-in
formula, which has a pandas twin like the champions), the Delta sink, no alerts) runs with a --trigger interval until every
file is processed. Latency per event = the batch's Delta commit time (from the table's history) - the file's modification
time (when the event became readable).
``sustained_events_per_s`` = events / (end of the last batch - producer start), so it includes
draining the last batch; ``kept_up_with_offered_rate`` says whether every micro-batch that
started while the producer ran finished within one trigger interval (the backlog never grew).
The producer runs on the same 2 cores as the stream.

    python bench/bench_stream.py [--rate 25000] [--seconds 60] [--trigger "5 seconds"]

Prints the result and writes bench/results/stream.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
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
    parser.add_argument("--work", help="work folder (default a temporary one, removed afterwards)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "stream.json"))
    args = parser.parse_args(argv)

    from ingest.decode import payloads_from_text
    from features.transactions import build_transaction_features, lookback_days
    from runtime.config import load_config
    from runtime.producers import LandingWriter
    from runtime.spark import build_session
    from runtime.sources import landing_source, write_stream
    from streaming.batch import StreamSettings
    from streaming.processor import MicroBatchProcessor

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_stream_"))
    for sub in ("landing", "sink", "ckpt", "dead"):
        shutil.rmtree(work / sub, ignore_errors=True)
    (work / "landing").mkdir(parents=True)
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
    if args.models_lake and (Path(args.models_lake) / "models" / "transactions" / "rcf" / "champion.json").exists():
        from streaming.job import champion_scorer_factory

        scorer_factory = champion_scorer_factory(load_config(ROOT / "conf" / "local.yaml", [
            "dataset=transactions", f"storage.lake={Path(args.models_lake).resolve()}"]))
        score_with = f"champions of {args.models_lake} (RCF with attribution + logistic + risk + reasons)"
    print(f"[bench] scoring with {score_with}", flush=True)
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

    from pyspark.sql import functions as F

    trigger_s = float(args.trigger.split()[0]) if args.trigger.split()[-1].startswith("second") else float("inf")
    sink_table = processor.sinks(spark)[0]
    commits = {batch: info["committed_at"] for batch, info in sink_table.commits(whole_history=True).items()}
    sink = sink_table.rows().where(F.col("transaction_id").startswith("b"))
    rows = sink.select("batch_id", F.unix_micros("arrival_time").alias("a")).collect()
    latencies = [commits[r["batch_id"]] - r["a"] / 1e6 for r in rows]
    scored = len(rows)
    dupes = scored - sink.select("transaction_id").distinct().count()
    batches = [r for r in processor.reports[measured_from:] if r.scored]
    busy = sum(r.seconds for r in batches)
    result = {
        "machine": f"{os.cpu_count()} cores, local[2], driver {args.driver_memory}, "
                   f"load average at start {os.getloadavg()[0]:.1f}",
        "trigger": args.trigger, "offered_rate_events_per_s": args.rate, "producer_seconds": args.seconds,
        "events_offered": total, "events_scored": scored, "duplicates_in_sink": dupes,
        "dead_letters": sum(r.dead_letters for r in processor.reports),
        "engine": args.engine, "warmup_events": warm, "scorer": score_with,
        "batch_phases_s": [r.phases for r in batches],
        "micro_batches": len(batches),
        "sustained_events_per_s": round(scored / (finished - started), 1),
        "processing_events_per_s": round(scored / busy, 1) if busy else None,
        "latency_p50_s": round(percentile(latencies, 0.5), 2) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 2) if latencies else None,
        "latency_max_s": round(max(latencies), 2) if latencies else None,
        "batch_seconds_p50": round(percentile([r.seconds for r in batches], 0.5), 2) if batches else None,
        # kept up: every micro-batch that started while the producer ran finished within one trigger
        # interval, so the backlog never grew (the last batch only drains what is left)
        "batch_seconds_max_while_producing": round(max([r.seconds for r in batches[:-1]], default=0.0), 2),
        "kept_up_with_offered_rate": bool(batches) and all(r.seconds <= trigger_s for r in batches[:-1]),
        "drain_seconds_after_producer": round(finished - produced_at, 1),
        "goal": {"events_per_s": 20000, "latency_p95_s": 10},
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
