"""Benchmark: nightly scoring end to end, 10M feature rows by both detectors (read -> score -> write).

Run: ``python bench/bench_scoring.py --rows 10000000 [--features PATH] [--workdir /tmp/benchwork]``
(``make bench`` runs it after bench_features.py, whose Spark feature table it reuses).

1. The feature table: ``--features`` or ``<workdir>/features_spark`` (written by
   bench_features.py); when missing, telemetry of ``--rows`` rows is generated and featurised here.
2. RCF (100 trees x 256, on the telemetry RCF inputs of features/catalog.py, robust-scaled as
   the train job does) and the logistic model (all 89 features) are trained on a sample (not
   timed as scoring).
3. Timed: read the Parquet feature table, ``models.scoring.score_events`` (RCF score of every
   row, per-feature attribution only for rows over the RCF threshold; logistic probability as one
   closed-form column expression; risk; reason codes only for flagged rows), write the scores
   table partitioned by date. Goal: <= 60 s for 10M rows on 2 cores.

The session sets ``spark.sql.codegen.hugeMethodLimit=8000`` (Spark's advice for HotSpot): the
89-feature logistic expression makes the whole-stage generated method larger than the 8000
bytes of bytecode HotSpot compiles, and the JVM would then interpret it (about 3 times the
cost of reading the features). With the limit, Spark runs that stage without whole-stage
codegen, as per-expression compiled projections.

Prints a table and writes ``bench/results/scoring.json`` (with the load average: the machine
may be shared).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psutil  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from features.catalog import rcf_feature_columns  # noqa: E402
from features.telemetry import build_telemetry_features, telemetry_feature_columns  # noqa: E402
from runtime.config import load_config  # noqa: E402


def session(memory: str) -> SparkSession:
    return (SparkSession.builder.master("local[2]").appName("bench-scoring")
            .config("spark.driver.memory", memory)
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.codegen.hugeMethodLimit", "8000")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "20000")
            .config("spark.ui.enabled", "false")
            .getOrCreate())


def ensure_features(spark, path: str, rows: int, config) -> None:
    if os.path.exists(os.path.join(path, "_SUCCESS")):
        return
    from features.generate_telemetry import devices_for_rows, generate_telemetry
    from features.validation import validate_telemetry

    conf = dict(config["generate"]["telemetry"])
    conf["devices"] = devices_for_rows(rows, conf["days"], conf["sessions_per_hour"])
    raw = generate_telemetry(spark, seed=1, partitions=8, **conf)
    schema = config["schema"]["telemetry"]
    valid = validate_telemetry(raw, columns=schema["columns"], measures=schema["measures"]).valid
    feats = build_telemetry_features(valid, measures=schema["measures"], **config["features"]["telemetry"])
    print(f"generating and featurising {rows:,} telemetry rows into {path} (not timed) ...", flush=True)
    feats.write.mode("overwrite").partitionBy("date").parquet(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows to generate when no feature table exists")
    parser.add_argument("--features", help="feature table to score (default <workdir>/features_spark)")
    parser.add_argument("--workdir", default="/tmp/benchwork")
    parser.add_argument("--memory", default="8g", help="Spark driver memory")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "scoring.json"))
    args = parser.parse_args(argv)

    from models.logistic import train_logistic
    from models.rcf import RandomCutForest
    from models.scoring import Champions, assemble, score_events

    config = load_config(None)
    spark = session(args.memory)
    spark.sparkContext.setLogLevel("ERROR")
    path = args.features or os.path.join(args.workdir, "features_spark")
    ensure_features(spark, path, args.rows, config)
    table = spark.read.parquet(path)
    n = table.count()
    conf = config["features"]["telemetry"]
    cols = telemetry_feature_columns(config["schema"]["telemetry"]["measures"], conf["windows"],
                                     conf["shingle_size"], site_window=conf["site_window"])

    t0 = time.perf_counter()
    sample = table.sample(fraction=min(1.0, 300_000 / max(n, 1)), seed=7).persist()
    rcf_cols = rcf_feature_columns("telemetry", config)
    rcf = RandomCutForest(featuresCol="_score_features", numTrees=100, numSamplesPerTree=256, seed=1,
                          featureScaling=config["train"]["rcf"]["scaling"]).fit(assemble(sample, rcf_cols))
    logistic = train_logistic(sample, feature_cols=cols, reg_params=(0.001,), validation_days=3, delay_days=0)
    train_s = time.perf_counter() - t0
    sample.unpersist()
    champions = Champions(feature_cols=cols, rcf=rcf, rcf_version="bench", logistic=logistic,
                          logistic_version="bench", rcf_feature_cols=rcf_cols)

    out = os.path.join(args.workdir, "scores")
    proc = psutil.Process()
    cpu0 = sum(p.cpu_times().user + p.cpu_times().system for p in [proc, *proc.children(recursive=True)])
    t0 = time.perf_counter()
    scored = score_events(spark.read.parquet(path), champions)
    keep = ["event_id", "device_id", "site_id", "event_time", "date", "label", "rcf_score", "logistic_score",
            "risk", "is_anomaly", "rcf_version", "logistic_version", "reasons"]
    scored.select(*keep).write.mode("overwrite").partitionBy("date").parquet(out)
    score_s = time.perf_counter() - t0
    cpu1 = sum(p.cpu_times().user + p.cpu_times().system for p in [proc, *proc.children(recursive=True)])
    written = spark.read.parquet(out).agg(F.count(F.lit(1)).alias("n"),
                                          F.sum(F.col("is_anomaly").cast("int")).alias("a")).first()
    result = {
        "rows": n, "features": len(cols), "rcf_features": len(rcf_cols), "train_seconds": round(train_s, 1),
        "score_seconds": round(score_s, 1), "rows_per_second": round(n / score_s),
        "anomalies": written["a"], "rows_written": written["n"],
        "cpu_seconds_driver_process_tree": round(cpu1 - cpu0, 1),
        "goal_seconds": 60, "load_average": os.getloadavg(),
    }
    print(f"\nscoring {n:,} rows: logistic on {len(cols)} features, RCF 100x256 on {len(rcf_cols)} "
          "(attribution of flagged rows) + risk + reasons")
    print(f"  read -> score -> write: {score_s:8.1f} s  ({n / score_s:,.0f} rows/s)   goal <= 60 s")
    print(f"  CPU (driver tree)     : {cpu1 - cpu0:8.1f} s   load average {os.getloadavg()[0]:.2f}")
    print(f"  anomalies flagged     : {written['a']:,}")
    print(f"  training (sample)     : {train_s:8.1f} s")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
