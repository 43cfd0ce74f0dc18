"""Benchmark our Random Cut Forest against scikit-learn's IsolationForest and the rrcf package.

Run: ``python bench/bench_rcf.py [--rows N] [--dim D] [--no-spark] [--json PATH]``

Synthetic seasonal multi-dimensional telemetry with injected spikes (labelled). Every model
is fitted on the first half of the rows (100 trees x 256 samples) and scores the second half.
Reports ROC AUC, average precision and scoring throughput per core (rows per CPU second of
this process for the single-threaded numpy paths; wall time x cores for Spark); rrcf is scored on a small
stratified subset only (it is slow), and the other models' quality is also shown on that subset.
Prints a table and, as the last line of stdout, one JSON object (also written to --json PATH).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.rcf import Forest  # noqa: E402


def make_telemetry(rows, dim, anomaly_rate, seed):
    """Seasonal signals (daily and weekly periods, per-feature phase), noise, injected spikes."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float64)
    phase = rng.uniform(0, 2 * np.pi, dim)
    amp = rng.uniform(1.0, 3.0, dim)
    daily = np.sin(2 * np.pi * t[:, None] / 288.0 + phase)  # 5-minute steps
    weekly = 0.5 * np.sin(2 * np.pi * t[:, None] / 2016.0 + phase / 2)
    X = 10.0 + amp * (daily + weekly) + rng.normal(0.0, 0.3, (rows, dim))
    y = np.zeros(rows, dtype=int)
    idx = rng.choice(rows, size=max(1, int(rows * anomaly_rate)), replace=False)
    y[idx] = 1
    for i in idx:  # spike in one or two features, 3 to 8 amplitudes up or down
        dims = rng.choice(dim, size=rng.integers(1, 3), replace=False)
        X[i, dims] += rng.choice([-1.0, 1.0], size=len(dims)) * amp[dims] * rng.uniform(3, 8, len(dims))
    return X, y


def metrics(y, s):
    from sklearn.metrics import average_precision_score, roc_auc_score

    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def timed(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_ours(X_train, X_test, seed):
    forest, fit_s, _ = timed(Forest.fit, X_train, 100, 256, seed)
    forest.score(X_test[:64])  # compile / load the numba cache outside the timing
    scores, wall, cpu = timed(forest.score, X_test)
    _, wall_a, _ = timed(forest.score_and_attribution, X_test)
    return forest, scores, {"fit_s": fit_s, "score_s": wall, "score_cpu_s": cpu,
                            "rows_per_s_core": len(X_test) / max(cpu, 1e-9),
                            "rows_per_s_core_with_attribution": len(X_test) / wall_a}


def bench_iforest(X_train, X_test, seed):
    from sklearn.ensemble import IsolationForest

    model, fit_s, _ = timed(
        IsolationForest(n_estimators=100, max_samples=256, random_state=seed, n_jobs=1).fit, X_train)
    raw, wall, cpu = timed(model.score_samples, X_test)
    return model, -raw, {"fit_s": fit_s, "score_s": wall, "score_cpu_s": cpu,
                         "rows_per_s_core": len(X_test) / max(cpu, 1e-9)}


def bench_rrcf(X_train, X_sub, seed):
    import rrcf

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    trees = []
    for _ in range(100):
        sample = X_train[rng.choice(len(X_train), size=min(256, len(X_train)), replace=False)]
        trees.append(rrcf.RCTree(sample))
    fit_s = time.perf_counter() - t0

    def score(points):
        out = np.zeros(len(points))
        for i, p in enumerate(points):
            total = 0.0
            for tree in trees:
                tree.insert_point(p, index="q")
                total += tree.codisp("q")
                tree.forget_point("q")
            out[i] = total / len(trees)
        return out

    scores, wall, cpu = timed(score, X_sub)
    return scores, {"fit_s": fit_s, "score_s": wall, "score_cpu_s": cpu,
                    "rows_per_s_core": len(X_sub) / max(cpu, 1e-9)}


def bench_spark(X_train, X_test, seed, cores):
    import pandas as pd
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession

    from models.rcf import RandomCutForest

    spark = (SparkSession.builder.master(f"local[{cores}]").appName("bench_rcf")
             .config("spark.sql.shuffle.partitions", str(cores))
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    cols = [f"x{i}" for i in range(X_train.shape[1])]
    assembler = VectorAssembler(inputCols=cols, outputCol="features")
    train_df = assembler.transform(spark.createDataFrame(pd.DataFrame(X_train, columns=cols)))
    test_df = assembler.transform(
        spark.createDataFrame(pd.DataFrame(X_test, columns=cols))).repartition(cores).cache()
    test_df.count()
    model, fit_s, _ = timed(RandomCutForest(seed=seed).fit, train_df)
    model.transform(test_df.limit(100)).write.format("noop").mode("overwrite").save()  # warm up

    def run():
        model.transform(test_df).write.format("noop").mode("overwrite").save()

    _, wall, _ = timed(run)
    scores = np.array([r[0] for r in model.transform(test_df.select("features"))
                       .select("rcf_score").collect()])
    spark.stop()
    return {"fit_s": fit_s, "score_s": wall, "cores": cores,
            "rows_per_s_core": len(X_test) / wall / cores,
            "threshold": model.threshold, "scored_rows": int(len(scores))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40000, help="total rows (half train, half test)")
    parser.add_argument("--dim", type=int, default=6)
    parser.add_argument("--anomaly-rate", type=float, default=0.01)
    parser.add_argument("--rrcf-rows", type=int, default=200, help="rows rrcf scores (slow)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark-path timing")
    parser.add_argument("--spark-cores", type=int, default=2)
    parser.add_argument("--json", help="also write the JSON result to this file")
    args = parser.parse_args(argv)

    X, y = make_telemetry(args.rows, args.dim, args.anomaly_rate, args.seed)
    half = args.rows // 2
    X_train, X_test, y_test = X[:half], X[half:], y[half:]
    # stratified subset for rrcf: all test anomalies (up to a quarter of it) plus normal rows
    rng = np.random.default_rng(args.seed)
    pos = np.flatnonzero(y_test == 1)
    pos = rng.choice(pos, size=min(len(pos), args.rrcf_rows // 4), replace=False)
    neg = rng.choice(np.flatnonzero(y_test == 0), size=args.rrcf_rows - len(pos), replace=False)
    sub = np.sort(np.r_[pos, neg])

    results = {"rows_train": half, "rows_test": len(X_test), "dim": args.dim,
               "anomalies_test": int(y_test.sum()), "rrcf_subset_rows": int(len(sub))}
    _, ours_scores, ours = bench_ours(X_train, X_test, args.seed)
    _, iso_scores, iso = bench_iforest(X_train, X_test, args.seed)
    rr_scores, rr = bench_rrcf(X_train, X_test[sub], args.seed)
    for name, scores, info in (("rcf_numpy", ours_scores, ours), ("iforest", iso_scores, iso)):
        info["auc"], info["ap"] = metrics(y_test, scores)
        info["auc_subset"], info["ap_subset"] = metrics(y_test[sub], scores[sub])
        results[name] = info
    rr["auc_subset"], rr["ap_subset"] = metrics(y_test[sub], rr_scores)
    results["rrcf"] = rr
    if not args.no_spark:
        results["rcf_spark"] = bench_spark(X_train, X_test, args.seed, args.spark_cores)
    results["speedup_vs_iforest"] = ours["rows_per_s_core"] / iso["rows_per_s_core"]
    results["speedup_vs_rrcf"] = ours["rows_per_s_core"] / rr["rows_per_s_core"]
    results["load_avg_1m"] = os.getloadavg()[0]

    print(f"{args.rows} rows x {args.dim} dims, {results['anomalies_test']} test anomalies, "
          f"load average {results['load_avg_1m']:.1f}")
    print(f"{'model':<12}{'AUC':>8}{'AP':>8}{'AUC sub':>9}{'AP sub':>8}{'fit s':>8}{'rows/s/core':>13}")
    for name in ("rcf_numpy", "iforest", "rrcf", "rcf_spark"):
        r = results.get(name)
        if r is None:
            continue
        fmt = lambda k: f"{r[k]:.3f}" if k in r else "-"  # noqa: E731
        print(f"{name:<12}{fmt('auc'):>8}{fmt('ap'):>8}{fmt('auc_subset'):>9}{fmt('ap_subset'):>8}"
              f"{r['fit_s']:>8.2f}{r['rows_per_s_core']:>13,.0f}")
    print(f"ours / iforest throughput: {results['speedup_vs_iforest']:.2f}x; "
          f"ours / rrcf: {results['speedup_vs_rrcf']:,.0f}x")
    line = json.dumps(results, sort_keys=True)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
