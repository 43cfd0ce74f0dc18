"""Benchmark: nightly scoring end to end, 10M feature rows by both detectors (read -> score -> write),
into a Delta scores table and into a Parquet one, on the same feature table in one run.

Run: ``python bench/bench_scoring.py --rows 10000000 [--features PATH] [--workdir /tmp/benchwork]``
(``make bench`` runs it after bench_features.py, whose Spark feature table it reuses).

1. The feature table: ``--features`` or ``<workdir>/features_spark`` (written by
   bench_features.py); when missing, telemetry of ``--rows`` rows is generated and featurised
   here. A Parquet table is made a Delta table in place (``CONVERT TO DELTA``: a log naming
   the same files), so both runs read the very same files: the Delta run as a Delta table, the
   Parquet run as a Parquet one.
2. RCF (100 trees x 256, on the telemetry RCF inputs of features/datasets.py, robust-scaled as
   the train job does) and the logistic model (all 89 features) are trained on a sample and
   registered as champions in ``<workdir>/models`` (not timed).
3. Timed: the score job itself, ``python -m jobs score`` over every date of the table, once per
   ``--runs`` entry ``format[:reader[:writer]]`` (``storage.format`` delta or parquet, for the
   features read and the scores written; ``scoring.reader``: arrow, the Python workers read the
   feature files, or spark; ``scoring.writer``: auto, the Python workers write the scores files
   of a Delta table and the driver commits them in one Delta transaction, or spark), each into
   a new scores table and in a fresh process as a nightly run would be: a new JVM that
   compiles its code as it goes; ``--repeat`` runs the list that many times, interleaved.
   Reported per run: the job's read -> score -> write step (its own timing line: RCF score of
   every row, attribution of the rows it flags, logistic probability, risk, reason codes of
   flagged rows, the scores table written partitioned by date and committed), and the whole
   process (JVM start, loading the models, the per-date summary it prints); then each run's
   best step time over the first run's (default: Delta with the job's defaults, over Parquet).
   Goal: Delta <= 60 s for 10M rows on 2 cores and within 1.2x of Parquet.

Prints a table and writes ``bench/results/scoring.json`` (with the load average: the machine
may be shared).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from urllib.parse import urlparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from features.datasets import TELEMETRY  # noqa: E402
from features.telemetry import build_telemetry_features, telemetry_feature_columns  # noqa: E402
from runtime.config import load_config  # noqa: E402
from runtime.spark import delta_settings  # noqa: E402


def session(memory: str, config) -> SparkSession:
    builder = SparkSession.builder
    for key, value in delta_settings(config["spark"]["delta_package"], "delta").items():
        builder = builder.config(key, value)
    return (builder.master("local[2]").appName("bench-scoring")
            .config("spark.driver.memory", memory)
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.codegen.hugeMethodLimit", "8000")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "20000")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate())


def ensure_features(spark, path: str, rows: int, config) -> None:
    if os.path.exists(os.path.join(path, "_SUCCESS")) or os.path.isdir(os.path.join(path, "_delta_log")):
        return
    from synthetic.telemetry import devices_for_rows, generate_telemetry
    from ingest.validation import validate_telemetry

    conf = dict(config["generate"]["telemetry"])
    conf["devices"] = devices_for_rows(rows, conf["days"], conf["sessions_per_hour"])
    raw = generate_telemetry(spark, seed=1, partitions=8, **conf)
    schema = config["schema"]["telemetry"]
    valid = validate_telemetry(raw, columns=schema["columns"], measures=schema["measures"]).valid
    feats = build_telemetry_features(valid, measures=schema["measures"], **config["features"]["telemetry"])
    print(f"generating and featurising {rows:,} telemetry rows into {path} (not timed) ...", flush=True)
    feats.write.mode("overwrite").partitionBy("date").parquet(path)


def as_both_formats(spark, path: str) -> None:
    """Make the feature table at ``path`` readable as Delta and as Parquet, from the same files:
    a Parquet table gets a Delta log naming its files (``CONVERT TO DELTA``, not timed); a Delta
    table qualifies only if its snapshot is every Parquet file under it (written once).
    """
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        print(f"CONVERT TO DELTA {path} (not timed) ...", flush=True)
        spark.sql(f"CONVERT TO DELTA parquet.`{path}` PARTITIONED BY (date DATE)")
    def paths(df):
        return {urlparse(uri).path for uri in df.inputFiles()}  # file:/x and file:///x alike

    delta_files, parquet_files = paths(spark.read.format("delta").load(path)), paths(spark.read.parquet(path))
    if delta_files != parquet_files:
        raise SystemExit(f"{path}: its Delta snapshot is not every Parquet file under it (rewritten since it was "
                         "made?): give a feature table written once (--features), so both runs read the same rows")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows to generate when no feature table exists")
    parser.add_argument("--features", help="feature table to score (default <workdir>/features_spark)")
    parser.add_argument("--workdir", default="/tmp/benchwork")
    parser.add_argument("--memory", default="8g", help="Spark driver memory")
    parser.add_argument("--runs", default="delta,parquet",
                        help="format[:reader[:writer]] entries to time, in order (storage.format; scoring.reader "
                             "and scoring.writer, default the job's: auto); the ratios are over the first")
    parser.add_argument("--repeat", type=int, default=1, help="run the list this many times, interleaved")
    parser.add_argument("--reuse-models", action="store_true",
                        help="score with the champions already in <workdir>/models (no training)")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "scoring.json"))
    args = parser.parse_args(argv)

    from models.logistic import train_logistic
    from models.rcf import RandomCutForest
    from models import registry
    from scoring.champions import registry_root
    from scoring.spark import assemble

    config = load_config(None)
    spark = session(args.memory, config)
    spark.sparkContext.setLogLevel("ERROR")
    path = args.features or os.path.join(args.workdir, "features_spark")
    ensure_features(spark, path, args.rows, config)
    as_both_formats(spark, path)
    table = spark.read.format("delta").load(path)
    n = table.count()
    conf = config["features"]["telemetry"]
    rcf_cols = TELEMETRY.rcf_feature_columns(config)
    cols = telemetry_feature_columns(config["schema"]["telemetry"]["measures"], conf["windows"],
                                     conf["shingle_size"], site_window=conf["site_window"])

    models = os.path.join(args.workdir, "models")
    train_s = 0.0
    if not (args.reuse_models and os.path.isdir(registry_root(models, "telemetry"))):
        t0 = time.perf_counter()
        sample = table.sample(fraction=min(1.0, 300_000 / max(n, 1)), seed=7).persist()
        rcf = RandomCutForest(featuresCol="_score_features", numTrees=100, numSamplesPerTree=256, seed=1,
                              featureScaling=config["train"]["rcf"]["scaling"]).fit(assemble(sample, rcf_cols))
        logistic = train_logistic(sample, feature_cols=cols, reg_params=(0.001,), validation_days=3, delay_days=0)
        train_s = time.perf_counter() - t0
        sample.unpersist()

        shutil.rmtree(models, ignore_errors=True)
        root = registry_root(models, "telemetry")
        registry.register(root, "rcf", rcf, metrics={"average_precision": 0.0}, params={"feature_cols": rcf_cols})
        registry.register(root, "logistic", logistic, metrics={"average_precision": 0.0},
                          params={"feature_cols": cols})

    dates = sorted(str(r["date"]) for r in table.select("date").distinct().collect())
    spark.stop()

    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeat):
        for run in args.runs.split(","):
            fmt, reader, writer = (run.split(":") + ["", ""])[:3]
            reader, writer = reader or "auto", writer or "auto"
            runs.setdefault(run, []).append(score_run(args, path, models, dates, fmt, reader, writer))
    best = {run: min(r["score_seconds"] for r in results) for run, results in runs.items()}
    first = next(iter(runs))
    result = {"rows": n, "features": len(cols), "rcf_features": len(rcf_cols), "train_seconds": round(train_s, 1),
              "goal_seconds": 60, "goal_ratio": 1.2, "ratio_over": first,
              "ratios": {run: round(best[run] / best[first], 3) for run in runs},
              "runs": runs}
    print(f"\nscoring {n:,} rows: logistic on {len(cols)} features, RCF 100x256 on {len(rcf_cols)} "
          "(attribution of flagged rows) + risk + reasons; the score job in a fresh process")
    for run, results in runs.items():
        for r in results:
            print(f"  {run:<20} read -> score -> write {r['score_seconds']:7.1f} s "
                  f"({n / r['score_seconds']:,.0f} rows/s); whole process {r['process_seconds']:.1f} s; "
                  f"{r['anomalies']:,} anomalies; load average {r['load_average'][0]:.2f}")
    for run in runs:
        print(f"  best {run:<20} {best[run]:7.1f} s = {best[run] / best[first]:.2f}x {first}")
    print(f"  goal: {first} <= 60 s and <= 1.2x every other run; training (sample, not timed): {train_s:.1f} s")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result))
    return 0


def score_run(args, features: str, models: str, dates: list[str], fmt: str, reader: str, writer: str) -> dict:
    """One timed score job into a new ``fmt`` scores table; its step and process seconds and what it wrote."""
    out = os.path.join(args.workdir, f"scores_{fmt}_{reader}_{writer}")
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "jobs", "score", "--conf", os.path.join(ROOT, "conf", "local.yaml"),
               "--dataset", "telemetry", "--input", features, "--output", out, "--models", models,
               "--from", dates[0], "--to", dates[-1], "--set", "spark.master=local[2]",
               "--set", f"spark.driver_memory={args.memory}", "--set", f"storage.format={fmt}",
               "--set", f"scoring.reader={reader}", "--set", f"scoring.writer={writer}"]
    print(f"\n$ {' '.join(command)}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    process_s = time.perf_counter() - t0
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"the score job failed with exit code {done.returncode}")
    step = re.search(r"scoring and writing to .*: done in ([0-9.]+) s", done.stdout)
    check = SparkSession.builder.master("local[1]").appName("bench-check").getOrCreate()
    written = check.read.format(fmt).load(out).agg(F.count(F.lit(1)).alias("n"),
                                                    F.sum(F.col("is_anomaly").cast("int")).alias("a")).first()
    check.stop()
    return {"format": fmt, "reader": reader, "writer": writer, "score_seconds": float(step.group(1)),
            "process_seconds": round(process_s, 1), "rows_written": written["n"], "anomalies": written["a"],
            "python_workers_wrote": "written by the Python workers" in done.stdout,
            "load_average": os.getloadavg()}


if __name__ == "__main__":
    sys.exit(main())
