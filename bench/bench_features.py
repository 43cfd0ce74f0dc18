"""Benchmark: synthetic telemetry generation and the telemetry features, Spark against DuckDB.

Run: ``python bench/bench_features.py --rows 10000000 [--workdir /tmp/benchwork]`` (``make bench``).

1. Spark (local[2]) generates ``--rows`` rows of telemetry and writes them to Parquet (the raw
   input a user brings).
2. Spark reads that Parquet, runs ``build_telemetry_features`` and writes the feature table
   partitioned by date the way the features job does (``runtime.storage.write_table``), as a Delta
   table by default (``--format delta``, the project's ``storage.format``; ``parquet`` for the
   plain files).
3. DuckDB (2 threads) computes the same features from the same Parquet with SQL window functions
   (the SQL below is the equivalent of features/telemetry.py) and writes Parquet partitioned by date.
4. A sample of rows (about 1 in 2000 event ids) is compared between the two outputs, column by
   column, within a float tolerance; DuckDB reads the Delta table's files named by its log.

Peak memory is the largest resident set of this process plus its child processes (the Spark
JVM), sampled every 0.1 s in a background thread, per phase. The machine's load average is
recorded too: other work on the machine slows every phase. Prints a table and writes
``bench/results/features.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from synthetic.telemetry import devices_for_rows, generate_telemetry
from features.telemetry import (
    build_telemetry_features,
    telemetry_feature_columns,
    window_seconds,
    window_suffix,
)
from runtime.storage import write_table

MEASURES = ["duration_s", "bytes_up", "bytes_down", "packets", "errors"]
WINDOWS = ["1 hour", "6 hours", "1 day"]
SHINGLE_SIZE = 4
SHINGLE_MEASURE = "bytes_down"
SITE_WINDOW = "1 hour"
ZSCORE_CAP = 50.0


class PeakMemory:
    """Peak RSS of this process and its children, sampled in a background thread."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for proc in [self._proc] + self._proc.children(recursive=True):
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def reset(self) -> None:
        self.peak = self._sample()

    def start(self) -> PeakMemory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def phase(results: dict, name: str, memory: PeakMemory):
    print(f"[bench] {name} ...", flush=True)
    memory.reset()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    results[name] = {
        "seconds": round(seconds, 2),
        "peak_rss_gib": round(memory.peak / 2**30, 2),
        "load_avg_1m_before": round(load_before, 1),
        "load_avg_1m_after": round(os.getloadavg()[0], 1),
    }
    print(f"[bench] {name}: {seconds:.1f} s, peak RSS {memory.peak / 2**30:.2f} GiB", flush=True)


# --------------------------------------------------------------------------------------------
# The DuckDB equivalent of features/telemetry.py
# --------------------------------------------------------------------------------------------
def duckdb_feature_sql(
    source: str,
    passthrough: list[str],
    measures: list[str],
    windows: list[str],
    shingle_size: int,
    shingle_measure: str,
    site_window: str,
    zscore_cap: float,
    zscore_window: str | None = None,
) -> str:
    us = 1_000_000
    zscore_window = zscore_window or max(windows, key=window_seconds)
    max_us = max(window_seconds(w) for w in windows + [zscore_window]) * us
    specs = list(dict.fromkeys(windows + [zscore_window]))
    sm = shingle_measure
    casts = ", ".join(f"CAST({m} AS DOUBLE) AS {m}" for m in measures)
    base = (
        f"SELECT * EXCLUDE ({', '.join(measures)}), {casts}, epoch_us(event_time) AS _ts FROM read_parquet('{source}')"
    )

    window_defs = ["wo AS (PARTITION BY device_id ORDER BY _ts, event_id)"]
    dev_cols = ["lag(_ts, 1) OVER wo AS _prev_ts"] + [f"lag({m}, 1) OVER wo AS _{m}_prev" for m in measures]
    for i in range(1, shingle_size):
        dev_cols += [f"lag(_ts, {i}) OVER wo AS _lag_ts{i}", f"lag({sm}, {i}) OVER wo AS _lag{i}"]
    for spec in specs:
        w = window_suffix(spec)
        window_defs.append(
            f"w_{w} AS (PARTITION BY device_id ORDER BY _ts "
            f"RANGE BETWEEN {window_seconds(spec) * us} PRECEDING AND 1 PRECEDING)"
        )
        dev_cols.append(f"count(*) OVER w_{w} AS _cnt_{w}")
        for m in measures:
            dev_cols += [f"avg({m}) OVER w_{w} AS _{m}_mean_{w}", f"stddev_samp({m}) OVER w_{w} AS _{m}_std_{w}"]
            if spec in windows:
                dev_cols += [f"min({m}) OVER w_{w} AS _{m}_min_{w}", f"max({m}) OVER w_{w} AS _{m}_max_{w}"]
    s = window_suffix(site_window)
    site_us = window_seconds(site_window) * us
    window_defs.append(
        f"w_share AS (PARTITION BY device_id ORDER BY _ts RANGE BETWEEN {site_us} PRECEDING AND CURRENT ROW)"
    )
    dev_cols.append(f"sum({sm}) OVER w_share AS _dev_volume")

    hour = "(fmod(_ts / 1000000.0, 86400.0) / 3600.0)"
    week = "fmod(_ts / 1000000.0 / 86400.0 + 3.0, 7.0)"
    out = list(passthrough) + ["CAST(event_time AS DATE) AS date"] + list(measures)
    out += [
        f"sin({hour} * {2 * math.pi / 24!r}) AS hour_sin",
        f"cos({hour} * {2 * math.pi / 24!r}) AS hour_cos",
        f"sin({week} * {2 * math.pi / 7!r}) AS dow_sin",
        f"cos({week} * {2 * math.pi / 7!r}) AS dow_cos",
    ]
    for spec in windows:
        w = window_suffix(spec)
        out.append(f"CAST(_cnt_{w} AS DOUBLE) AS dev_cnt_{w}")
        for m in measures:
            out += [
                f"CASE WHEN _cnt_{w} > 0 THEN _{m}_mean_{w} ELSE {m} END AS {m}_mean_{w}",
                f"coalesce(_{m}_std_{w}, 0.0) AS {m}_std_{w}",
                f"CASE WHEN _cnt_{w} > 0 THEN _{m}_min_{w} ELSE {m} END AS {m}_min_{w}",
                f"CASE WHEN _cnt_{w} > 0 THEN _{m}_max_{w} ELSE {m} END AS {m}_max_{w}",
            ]
    zw = window_suffix(zscore_window)
    cap = float(zscore_cap)
    for m in measures:
        std = f"coalesce(_{m}_std_{zw}, 0.0)"
        diff = f"({m} - _{m}_mean_{zw})"
        raw = f"CASE WHEN {std} > 0 THEN {diff} / {std} ELSE sign({diff}) * {cap} END"
        out.append(f"CASE WHEN _cnt_{zw} < 2 THEN 0.0 ELSE least({cap}, greatest({-cap}, {raw})) END AS {m}_z")

    def recent(col: str) -> str:
        return f"({col} IS NOT NULL AND _ts - {col} <= {max_us})"

    for m in measures:
        out.append(f"CASE WHEN {recent('_prev_ts')} THEN {m} - _{m}_prev ELSE 0.0 END AS {m}_delta")
    out.append(
        f"CASE WHEN {recent('_prev_ts')} THEN (_ts - _prev_ts) / 1000000.0 ELSE {max_us / us} END AS secs_since_prev"
    )
    newer = sm
    for i in range(1, shingle_size):
        newer = f"CASE WHEN {recent(f'_lag_ts{i}')} THEN _lag{i} ELSE {newer} END"
        out.append(f"{newer} AS shingle_lag{i}")
    share = "CASE WHEN _site_volume > 0 THEN least(1.0, _dev_volume / _site_volume) END"
    out += [
        f"CASE WHEN site_id IS NULL THEN 0.0 ELSE CAST(_site_cnt AS DOUBLE) END AS site_cnt_{s}",
        f"CASE WHEN site_id IS NULL THEN 0.0 ELSE _site_volume END AS site_volume_{s}",
        f"CASE WHEN site_id IS NULL THEN 0.0 ELSE coalesce({share}, 0.0) END AS dev_share_{s}",
    ]
    return f"""
WITH base AS ({base}),
dev AS (SELECT *, {", ".join(dev_cols)} FROM base WINDOW {", ".join(window_defs)}),
site AS (SELECT *, count(*) OVER ws AS _site_cnt, sum({sm}) OVER ws AS _site_volume FROM dev
         WINDOW ws AS (PARTITION BY site_id ORDER BY _ts RANGE BETWEEN {site_us} PRECEDING AND CURRENT ROW))
SELECT {", ".join(out)} FROM site"""


# --------------------------------------------------------------------------------------------
def spark_session(shuffle_partitions: int, driver_memory: str, fmt: str):
    """local[2] with the project's Delta settings (package from the Ivy cache, extension, catalog)."""
    from pyspark.sql import SparkSession

    from runtime.config import load_config
    from runtime.spark import delta_settings

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("bench-features")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    )
    for key, value in delta_settings(load_config()["spark"]["delta_package"], fmt).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def table_files(path: str, fmt: str) -> list[str]:
    """The data files of the table at ``path``: for Delta the live files its log names (adds not
    removed by a later commit), for Parquet every ``*.parquet`` below it.
    """
    import glob
    from urllib.parse import unquote

    if fmt != "delta":
        return sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    live: set[str] = set()
    for commit in sorted(glob.glob(os.path.join(path, "_delta_log", "*.json"))):
        with open(commit) as fh:
            for line in fh:
                action = json.loads(line)
                if "add" in action:
                    live.add(unquote(action["add"]["path"]))
                elif "remove" in action:
                    live.discard(unquote(action["remove"]["path"]))
    return sorted(os.path.join(path, name) for name in live)


def compare_sample(con, spark_files: list[str], duck_out: str, feature_cols: list[str], every: int) -> dict:
    """Join a hash sample of event ids from both outputs and compare every feature column."""
    cols = ", ".join(["event_id", "date"] + feature_cols)
    sample = f"hash(event_id) % {every} = 0"
    left = (
        con.execute(
            f"SELECT {cols} FROM read_parquet({spark_files!r}, hive_partitioning = true) WHERE {sample}"
        )
        .df()
        .set_index("event_id")
        .sort_index()
    )
    right = (
        con.execute(
            f"SELECT {cols} FROM read_parquet('{duck_out}/**/*.parquet', hive_partitioning = true) WHERE {sample}"
        )
        .df()
        .set_index("event_id")
        .sort_index()
    )
    same_ids = left.index.equals(right.index)
    worst, bad_cols, mismatches = {}, [], 0
    if same_ids:
        for col in feature_cols:
            a, b = left[col].astype("float64"), right[col].astype("float64")
            diff = (a - b).abs()
            tol = 1e-6 * b.abs().clip(lower=1.0)
            bad = int((diff > tol).sum() + (a.isna() != b.isna()).sum())
            rel = float((diff / b.abs().clip(lower=1.0)).max()) if len(b) else 0.0
            worst[col] = rel
            if bad:
                bad_cols.append(col)
                mismatches += bad
        dates_equal = bool((left["date"].astype(str) == right["date"].astype(str)).all())
    else:
        dates_equal = False
    return {
        "sampled_rows": len(left),
        "same_event_ids": bool(same_ids),
        "dates_equal": dates_equal,
        "mismatched_values": mismatches,
        "mismatched_columns": bad_cols,
        "max_relative_diff": max(worst.values()) if worst else None,
        "ok": bool(same_ids and dates_equal and mismatches == 0),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of telemetry to generate (about)")
    parser.add_argument("--workdir", default="/tmp/benchwork", help="scratch folder (emptied first)")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--sessions-per-hour", type=float, default=1.0)
    parser.add_argument("--sites", type=int, default=40)
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--duckdb-threads", type=int, default=2)
    parser.add_argument("--sample-every", type=int, default=2000, help="compare about 1 in N rows")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "features.json"))
    parser.add_argument("--skip-generate", action="store_true", help="reuse the raw Parquet in --workdir")
    parser.add_argument("--format", choices=("delta", "parquet"), default="delta",
                        help="the Spark feature table's format (default delta, as storage.format)")
    args = parser.parse_args(argv)

    raw = os.path.join(args.workdir, "raw")
    spark_out = os.path.join(args.workdir, "features_spark")
    duck_out = os.path.join(args.workdir, "features_duckdb")
    for path in ([raw] if not args.skip_generate else []) + [spark_out, duck_out]:
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(args.workdir, exist_ok=True)

    memory = PeakMemory().start()
    results: dict = {"phases": {}}
    phases = results["phases"]
    devices = devices_for_rows(args.rows, args.days, args.sessions_per_hour)
    spark = spark_session(args.shuffle_partitions, args.driver_memory, args.format)
    feature_cols = telemetry_feature_columns(MEASURES, WINDOWS, SHINGLE_SIZE, SITE_WINDOW)

    if not args.skip_generate:
        with phase(phases, "spark_generate", memory):
            partitions = max(2, args.rows // 1_000_000)
            generate_telemetry(
                spark,
                devices=devices,
                sites=args.sites,
                days=args.days,
                start_date="2026-01-05",
                sessions_per_hour=args.sessions_per_hour,
                anomaly_fraction=0.01,
                seed=42,
                partitions=partitions,
            ).write.mode("overwrite").parquet(raw)
    rows = spark.read.parquet(raw).count()

    with phase(phases, "spark_features", memory):
        source_df = spark.read.parquet(raw)
        features_df = build_telemetry_features(
            source_df,
            measures=MEASURES,
            windows=WINDOWS,
            shingle_size=SHINGLE_SIZE,
            shingle_measure=SHINGLE_MEASURE,
            site_window=SITE_WINDOW,
            zscore_cap=ZSCORE_CAP,
        )
        write_table(features_df, spark_out, args.format, partition_by=["date"])
    passthrough = [c for c in source_df.columns if c not in MEASURES]
    spark.stop()

    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {args.duckdb_threads}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    sql = duckdb_feature_sql(
        f"{raw}/*.parquet", passthrough, MEASURES, WINDOWS, SHINGLE_SIZE, SHINGLE_MEASURE, SITE_WINDOW, ZSCORE_CAP
    )
    with phase(phases, "duckdb_features", memory):
        con.execute(f"COPY ({sql}) TO '{duck_out}' (FORMAT PARQUET, PARTITION_BY (date), OVERWRITE_OR_IGNORE)")

    with phase(phases, "spot_check", memory):
        check = compare_sample(con, table_files(spark_out, args.format), duck_out, feature_cols, args.sample_every)
    memory.stop()

    spark_s, duck_s = phases["spark_features"]["seconds"], phases["duckdb_features"]["seconds"]
    results.update(
        {
            "rows": rows,
            "devices": devices,
            "days": args.days,
            "feature_columns": len(feature_cols),
            "spark_format": args.format,
            "cores": os.cpu_count(),
            "shuffle_partitions": args.shuffle_partitions,
            "duckdb_threads": args.duckdb_threads,
            "spark_over_duckdb": round(spark_s / duck_s, 2) if duck_s else None,
            "spot_check": check,
            "peak_rss_gib": max(p["peak_rss_gib"] for p in phases.values()),
        }
    )
    print()
    print(f"rows {rows:,}  devices {devices:,}  feature columns {len(feature_cols)}  cores {os.cpu_count()}")
    print(f"{'phase':<18}{'seconds':>10}{'peak RSS GiB':>14}{'load 1m':>10}")
    for name, p in phases.items():
        print(f"{name:<18}{p['seconds']:>10.1f}{p['peak_rss_gib']:>14.2f}{p['load_avg_1m_before']:>10.1f}")
    print(f"spark ({args.format}) / duckdb features: {results['spark_over_duckdb']}x")
    print(
        f"spot check: {check['sampled_rows']} rows, ok={check['ok']}, mismatched values {check['mismatched_values']}"
        f" {check['mismatched_columns'][:5]}, max relative diff {check['max_relative_diff']}"
    )
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=2)
    print(json.dumps(results))
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
