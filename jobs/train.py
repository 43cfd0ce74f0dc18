"""The `train` job: train the detectors on a time window, evaluate them on a later one, register.

Reads the feature table, trains the Random Cut Forest (unsupervised: every training row) and/or
the logistic model (labeled rows; regularisation and decision threshold chosen on a time-based
validation window), evaluates each on the test window, writes a new registry version (params,
data window, metrics, time) and moves the champion only if the new version is not worse than the
champion on train.registry.metric (within train.registry.tolerance). Run it again on a moving
window to retrain: that is the seeds' "incremental learning", done safely.

The RCF takes train.rcf.features (default: the data set's own subset, features/datasets.py
rcf_feature_columns), robust-scaled by default (train.rcf.scaling); the logistic model takes
every feature column. Each version records its own feature list, which scoring reads.

Windows (dates, inclusive): --train-from/--train-to/--test-from/--test-to; by default the test
window is the last train.test_days dates, after a gap of train.gap_days (the label delay), and
training takes the dates before the gap.

Submitted as `python -m jobs train --conf FILE` or `spark-submit jobs/train.py --conf FILE`.
"""
import datetime as dt
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from pyspark.sql import functions as F

from features.datasets import dataset as dataset_named
from jobs.common import InputError, base_parser, log, parse_date, run_main, step
from runtime.spark import build_session
from runtime.storage import StorageError, read_table

PROG = "python -m jobs train"


def build_parser():
    parser = base_parser(PROG, __doc__, input_help="the feature table (default paths.features)",
                         output_help="the model registry root (default paths.models; versions go under <root>/<dataset>/<kind>)")
    parser.add_argument("--model", choices=("rcf", "logistic", "all"), help="which detector(s) (default train.model)")
    for name in ("train-from", "train-to", "test-from", "test-to"):
        parser.add_argument(f"--{name}", metavar="YYYY-MM-DD", help=f"{name.replace('-', ' ')} date, inclusive")
    return parser


def resolve_windows(dates, given, *, test_days, train_days, gap_days):
    """(train_from, train_to, test_from, test_to) from the dates present and what the user gave."""
    if not dates:
        raise InputError("the feature table is empty: run the features job first")
    dates = sorted(dates)
    test_to = given["test_to"] or dates[-1]
    test_from = given["test_from"] or test_to - dt.timedelta(days=test_days - 1)
    train_to = given["train_to"] or test_from - dt.timedelta(days=gap_days + 1)
    train_from = given["train_from"] or (train_to - dt.timedelta(days=train_days - 1) if train_days else dates[0])
    if not train_from <= train_to < test_from <= test_to:
        raise InputError(f"windows must be ordered train {train_from}..{train_to} < test {test_from}..{test_to}; "
                         f"the feature table holds {dates[0]}..{dates[-1]}")
    return train_from, train_to, test_from, test_to


def between(df, first, last):
    return df.where(F.col("date").between(F.lit(str(first)).cast("date"), F.lit(str(last)).cast("date")))


def train_rcf(train_df, feature_cols, conf):
    from models.rcf import RandomCutForest
    from scoring.core import assemble

    estimator = RandomCutForest(featuresCol="_score_features", numTrees=conf["num_trees"],
                                numSamplesPerTree=conf["num_samples_per_tree"],
                                thresholdMethod=conf["threshold_method"], thresholdSigmas=conf["threshold_sigmas"],
                                thresholdQuantile=conf["threshold_quantile"], featureScaling=conf["scaling"],
                                seed=conf["seed"])
    model = estimator.fit(assemble(train_df, feature_cols))
    params = {k: conf[k] for k in conf} | {"threshold": model.threshold}
    return model, params


def train_logistic_model(train_df, feature_cols, conf, gap_days):
    from models.logistic import train_logistic

    detector = train_logistic(
        train_df.where(F.col("label").isNotNull()), feature_cols=feature_cols,
        reg_params=conf["reg_params"], elastic_net_params=conf["elastic_net_params"],
        validation_days=conf["validation_days"], delay_days=gap_days,
        target={conf["target_metric"]: conf["target_value"]}, class_weight=conf["class_weight"],
        max_iter=conf["max_iter"], log=lambda msg: log("train", f"  logistic: {msg}"))
    return detector, {**detector.params, "threshold": detector.threshold, "validation": detector.validation}


def evaluate(test_df, dataset, kind, model, feature_cols, k):
    """Metrics of one detector on the test window (None where the window has no labels)."""
    from models.evaluation import evaluate_scores
    from scoring.table import kept_columns
    from scoring.core import Champions, score_events

    champions = Champions(feature_cols=feature_cols, **{kind: model, f"{kind}_version": "candidate"},
                          rcf_feature_cols=feature_cols if kind == "rcf" else None)
    scored = score_events(test_df, champions, reasons=0, keep=kept_columns(dataset_named(dataset), test_df.columns))
    score_col = "rcf_score" if kind == "rcf" else "logistic_score"
    labeled = scored.where(F.col("label").isNotNull())
    threshold = model.threshold
    card = {"card_col": "customer_id", "date_col": "date"} if dataset == "transactions" else {}
    return evaluate_scores(labeled, score_col, "label", threshold=threshold, k=k, **card)


def run(args, config):
    from models import registry
    from scoring.core import registry_root

    dataset = config["dataset"]
    conf = config["train"]
    kinds = {"all": ["rcf", "logistic"]}.get(args.model or conf["model"], [args.model or conf["model"]])
    source = args.input or config.path("features")
    root = registry_root(args.output or config.path("models"), dataset)
    gap_days = conf["gap_days"] if conf["gap_days"] is not None else (
        config["features"]["transactions"]["delay_days"] if dataset == "transactions" else 0)

    spark = build_session(config)
    try:
        table = read_table(spark, source, config["storage"]["format"])
    except StorageError as exc:
        raise InputError(str(exc)) from None
    feature_cols = dataset_named(dataset).feature_columns(config)
    try:
        rcf_cols = dataset_named(dataset).rcf_feature_columns(config)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    dates = [r["date"] for r in table.select("date").distinct().collect()]
    given = {name: parse_date(getattr(args, name) or conf[name], "--" + name.replace("_", "-"))
             for name in ("train_from", "train_to", "test_from", "test_to")}
    train_from, train_to, test_from, test_to = resolve_windows(
        dates, given, test_days=conf["test_days"], train_days=conf["train_days"], gap_days=gap_days)
    window = {"train_from": str(train_from), "train_to": str(train_to),
              "test_from": str(test_from), "test_to": str(test_to), "gap_days": gap_days}
    log("train", f"{dataset}: train {train_from}..{train_to}, test {test_from}..{test_to} "
                 f"({len(feature_cols)} features) -> registry {root}")
    train_df = between(table, train_from, train_to).persist()
    test_df = between(table, test_from, test_to).persist()
    if dataset == "transactions":
        from models.evaluation import exclude_known_compromised

        # Cards already known to be compromised are not a detection (the Handbook's protocol).
        test_df = exclude_known_compromised(test_df, between(table, train_from, test_to), card_col="customer_id",
                                            date_col="date", delay_days=gap_days, since=str(train_from))
    if config["models"]["backend"] == "sagemaker":
        from sagemaker_backend.stage import train_on_sagemaker

        return train_on_sagemaker(spark, config, train_df=train_df, test_df=test_df, feature_cols=feature_cols,
                                  kinds=kinds, window=window, registry_root=root)
    results = {}
    for kind in kinds:
        with step("train", f"training {kind}"):
            if kind == "rcf":
                model, params = train_rcf(train_df, rcf_cols, conf["rcf"])
            else:
                if train_df.where(F.col("label").isNotNull()).limit(1).count() == 0:
                    raise InputError("the training window has no labels: the logistic model needs them "
                                     "(use --model rcf for unlabeled data)")
                model, params = train_logistic_model(train_df, feature_cols, conf["logistic"], gap_days)
        with step("train", f"evaluating {kind} on {test_from}..{test_to}"):
            cols = rcf_cols if kind == "rcf" else feature_cols
            metrics = evaluate(test_df, dataset, kind, model, cols, conf["k"])
        info = registry.register(
            root, kind, model, metrics=metrics, params={**params, "feature_cols": cols},
            data_window=window, metric=conf["registry"]["metric"], tolerance=conf["registry"]["tolerance"],
            extra={"dataset": dataset, "event_id": dataset_named(dataset).event_id})
        results[kind] = info
        headline = ", ".join(f"{m} {metrics[m]:.3f}" for m in ("auc_roc", "average_precision", "precision_at_k")
                             if isinstance(metrics.get(m), (int, float)))
        moved = "now champion" if info["promoted"] else f"champion stays {info['previous_champion']}"
        log("train", f"{kind} {info['version']}: {headline}; {moved}")
    train_df.unpersist()
    test_df.unpersist()
    return 0


def main(argv=None) -> int:
    return run_main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
