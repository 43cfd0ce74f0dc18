"""The Fraud Detection Handbook protocol through our jobs, next to scikit-learn peers.

Data: the Handbook's own simulated data set (synthetic/handbook.py reproduces its simulator draw
for draw: 1,754,155 transactions, 14,681 frauds), written by the jobs themselves::

    python -m jobs generate --dataset transactions --set generate.transactions.simulator=handbook
    python -m jobs features --dataset transactions

Protocol (Handbook chapters 3 and 5), for each test week T (default 2018-08-08, the Handbook's,
and the two following weeks, not tuned on): train 7 days (T-14..T-8), a 7-day feedback delay,
test 7 days (T..T+6) with the cards already known compromised removed; every choice
(regularisation, class weight, amount binning, thresholds, the stacker) is made on the same
7 + 7 + 7 days 14 days earlier (fit T-28..T-22, validate T-14..T-8). For ours that is one
``train`` command (``--validation-from/--validation-to``, see jobs/train.py) and one
``evaluate --json``: the bench calls the jobs, not their internals. Metrics: AUC ROC, average
precision, card precision@100.

Peers (``--no-sklearn`` skips them): scikit-learn's LogisticRegression (with StandardScaler),
RandomForestClassifier and HistGradientBoostingClassifier on the same feature columns and the
same windows, their hyper-parameters chosen on the same validation window by average precision,
refitted on the training window; metrics computed with models/evaluation.py's definitions (card
precision@100 by :func:`card_precision_at_k`, a pandas port of the Spark one).

    python bench/bench_handbook.py [--work /tmp/handbook_bench] [--reuse] [--weeks 2018-08-08,...]
                                   [--json out.json] [--no-sklearn]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.transactions import transaction_feature_columns  # noqa: E402
from models.evaluation import array_table, auc_roc, average_precision  # noqa: E402

#: The Handbook's published results on this data set (chapter 3 baseline; chapter 5 validated
#: hyper-parameters, prequential model selection).
HANDBOOK = {
    "Handbook: logistic regression (baseline)": {"auc_roc": 0.871, "average_precision": 0.606,
                                                 "card_precision_at_100": 0.291},
    "Handbook: random forest (baseline)": {"auc_roc": 0.867, "average_precision": 0.658,
                                           "card_precision_at_100": 0.287},
    "Handbook: logistic regression (validated)": {"average_precision": 0.623, "card_precision_at_100": 0.297},
    "Handbook: random forest (validated)": {"average_precision": 0.678, "card_precision_at_100": 0.299},
    "Handbook: XGBoost (validated)": {"average_precision": 0.687, "card_precision_at_100": 0.303},
}
WEEKS = ("2018-08-08", "2018-08-15", "2018-08-22")
DELAY = 7
#: The model settings of the protocol run (README: "Detection quality"), passed to train as --set.
MODEL_SETTINGS = ("train.logistic.binned_features=[amount,amount_vs_customer_avg_30d]", "train.logistic.bins=[0,8]",
                  "train.logistic.class_weights=[none,balanced]", "train.logistic.reg_params=[0.0,0.0001,0.001]",
                  "train.logistic.max_iter=300")


def log(message: str) -> None:
    print(f"[bench_handbook] {message}", flush=True)


def day(text: str, plus: int = 0) -> str:
    return str(dt.date.fromisoformat(text) + dt.timedelta(days=plus))


def job(args: list[str], env: dict) -> str:
    """Run ``python -m jobs <args>`` from the repository root; its stdout (raises on failure)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jobs", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"python -m jobs {' '.join(args)} failed with exit code {done.returncode}")
    log(f"jobs {args[0]} done in {time.perf_counter() - started:.0f} s")
    return done.stdout


def protocol_commands(common: list[str], week: str, registry: str) -> tuple[list[str], list[str]]:
    """The ``train`` and ``evaluate`` arguments of the protocol for test week ``week``."""
    train = ["train", *common, "--model", "all", "--registry", registry,
             "--validation-from", day(week, -14), "--validation-to", day(week, -8),
             "--train-from", day(week, -14), "--train-to", day(week, -8),
             "--test-from", week, "--test-to", day(week, 6)]
    for setting in MODEL_SETTINGS:
        train += ["--set", setting]
    evaluate = ["evaluate", *common, "--json", "--registry", registry, "--test-from", week, "--test-to", day(week, 6),
                "--output", str(Path(registry) / f"evaluation-{week}.html")]
    return train, evaluate


# ----------------------------------------------------------------------------------- peers
def read_features(lake: Path, first: str, last: str, columns: list[str]):
    """The feature table's rows of ``first..last`` as pandas (delta-rs reads the Delta table)."""
    from deltalake import DeltaTable

    table = DeltaTable(str(lake / "features" / "transactions"))
    frame = table.to_pandas(columns=["transaction_id", "customer_id", "date", "label", *columns],
                            filters=[("date", ">=", dt.date.fromisoformat(first)),
                                     ("date", "<=", dt.date.fromisoformat(last))])
    frame["date"] = frame["date"].astype("datetime64[ns]").dt.date
    return frame


def window(frame, first: str, days: int):
    lo = dt.date.fromisoformat(first)
    return frame[(frame["date"] >= lo) & (frame["date"] < lo + dt.timedelta(days=days))]


def test_window(frame, train_from: str, test_from: str):
    """The test week with the cards already known compromised removed (models/evaluation.py
    ``exclude_known_compromised``: a fraud on a day in [train_from, t - delay - 1])."""
    test = window(frame, test_from, 7)
    history = frame[(frame["date"] >= dt.date.fromisoformat(train_from)) & (frame["label"] == 1)]
    first_fraud = history.groupby("customer_id")["date"].min()
    first = test["customer_id"].map(first_fraud)
    known = first.notna() & (first.map(lambda d: d + dt.timedelta(days=DELAY + 1) if isinstance(d, dt.date) else d)
                             <= test["date"])
    return test[~known.astype(bool).to_numpy()]


def card_precision_at_k(frame, scores: np.ndarray, k: int = 100) -> float:
    """models/evaluation.py ``card_precision_at_k`` in pandas: per day, the k cards with the highest
    score (ties by card id), cards caught on earlier days removed; the mean over days."""
    cards = frame.assign(_s=scores).groupby(["date", "customer_id"], as_index=False).agg(
        s=("_s", "max"), y=("label", "max"))
    detected: set = set()
    per_day = []
    for _, group in sorted(cards.groupby("date"), key=lambda item: item[0]):
        group = group[~group["customer_id"].isin(detected)]
        top = group.sort_values(["s", "customer_id"], ascending=[False, True]).head(k)
        caught = set(top.loc[top["y"] == 1, "customer_id"])
        per_day.append(len(caught) / k)
        detected |= caught
    return float(np.mean(per_day))


def metrics_of(frame, scores: np.ndarray) -> dict:
    table = array_table(scores, frame["label"].to_numpy(float))
    return {"auc_roc": auc_roc(table), "average_precision": average_precision(table),
            "card_precision_at_100": card_precision_at_k(frame, scores)}


def peers() -> dict:
    """name -> (make(params), parameter grid), each searched on validation by average precision."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "scikit-learn logistic regression": (
            lambda p: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, **p)),
            [{"C": c, "class_weight": w} for c in (0.01, 0.1, 1.0, 10.0) for w in (None, "balanced")]),
        "scikit-learn random forest": (
            lambda p: RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=0, **p),
            [{"max_depth": d, "min_samples_leaf": leaf} for d in (10, 20, None) for leaf in (1, 10)]),
        "scikit-learn HistGradientBoosting": (
            lambda p: HistGradientBoostingClassifier(random_state=0, **p),
            [{"learning_rate": r, "max_iter": n, "max_leaf_nodes": leaves} for r in (0.05, 0.1)
             for n in (100, 300) for leaves in (15, 31)]),
    }


def run_peers(lake: Path, week: str, features: list[str]) -> dict:
    frame = read_features(lake, day(week, -28), day(week, 6), features)
    fit, validation = window(frame, day(week, -28), 7), test_window(frame, day(week, -28), day(week, -14))
    train, test = window(frame, day(week, -14), 7), test_window(frame, day(week, -14), week)
    out = {}
    for name, (make, grid) in peers().items():
        started = time.perf_counter()
        scored = []
        for params in grid:
            model = make(params).fit(fit[features], fit["label"])
            ap = average_precision(array_table(model.predict_proba(validation[features])[:, 1],
                                               validation["label"].to_numpy(float)))
            scored.append((ap, params))
        ap, params = max(scored, key=lambda item: item[0])
        model = make(params).fit(train[features], train["label"])
        out[name] = {**metrics_of(test, model.predict_proba(test[features])[:, 1]), "params": params,
                     "validation_average_precision": ap, "seconds": round(time.perf_counter() - started, 1)}
        log(f"{week} {name}: " + fmt(out[name]) + f" (chosen {params}, validation AP {ap:.4f})")
    return out


def fmt(m: dict) -> str:
    return ", ".join(f"{key} {m[key]:.3f}" for key in ("auc_roc", "average_precision", "card_precision_at_100")
                     if isinstance(m.get(key), float))


def main(argv=None) -> int:
    """Run the protocol on each week; exit 0 when ours meets the issue's bar on the Handbook week."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--conf", default=str(ROOT / "conf" / "local.yaml"))
    parser.add_argument("--work", default="/tmp/handbook_bench", help="folder of the bench's lake")
    parser.add_argument("--reuse", action="store_true", help="reuse the feature table of an earlier run")
    parser.add_argument("--weeks", default=",".join(WEEKS), help="first days of the test weeks")
    parser.add_argument("--json", default=None, help="write the results as JSON here")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn peers")
    args = parser.parse_args(argv)

    lake = Path(args.work) / "lake"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    common = ["--conf", args.conf, "--dataset", "transactions", "--set", f"storage.lake={lake}"]
    started = time.perf_counter()
    if not (args.reuse and (lake / "features" / "transactions" / "_delta_log").is_dir()):
        job(["generate", *common, "--set", "generate.transactions.simulator=handbook"], env)
        job(["features", *common], env)
    features = transaction_feature_columns((1, 7, 30))
    results: dict = {"handbook": HANDBOOK, "weeks": {}, "settings": list(MODEL_SETTINGS)}
    for week in args.weeks.split(","):
        registry = str(Path(args.work) / f"models-{week}")
        train, evaluate = protocol_commands(common, week, registry)
        log("python -m jobs " + " ".join(train))
        job(train, env)
        metrics = json.loads(job(evaluate, env).strip().splitlines()[-1])
        ours = {"ours: combined risk (stacked)": metrics,
                **{f"ours: {name}": m for name, m in metrics["detectors"].items()}}
        for name, m in ours.items():
            log(f"{week} {name}: {fmt(m)}")
        results["weeks"][week] = {"ours": ours, "peers": {} if args.no_sklearn else run_peers(lake, week, features)}
    results["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    first = results["weeks"][args.weeks.split(",")[0]]["ours"]["ours: combined risk (stacked)"]
    met = (first["auc_roc"] >= 0.88 and first["average_precision"] >= 0.70
           and first["card_precision_at_100"] >= 0.31)
    # a benchmark reports; it does not gate `make bench` (the tests check behaviour)
    log(f"bar (AUC >= 0.88, AP >= 0.70, CP@100 >= 0.31) on {args.weeks.split(',')[0]}: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
