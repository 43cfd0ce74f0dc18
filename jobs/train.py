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
`--model som` trains the self-organising map (models/som.py) on train.som.features (default: the
data set's aggregate features, features/datasets.py som_feature_columns); it keeps its
unsupervised threshold (train.som.threshold_quantile of its training distances) and registers under
the kind "som" (scoring does not read it yet).

Thresholds (train.threshold): each detector's alert threshold is chosen on the validation window
(the last train.logistic.validation_days of the training window) by a rule: target (precision
train.logistic.target_value at recall >= train.threshold.min_recall), budget (alerts_per_day)
or fbeta; a rule that cannot be met falls back to the best F-beta and says so. The RCF keeps its
unsupervised threshold (train.rcf.threshold_method) when that window has no labelled positives.
Printed per detector and for the combined risk: threshold, rule, validation precision / recall,
expected alerts per day. With scoring.risk_method stacked (the default) and both detectors, the
stacked risk (a small logistic model on the detectors' risks, scoring/risk.py) is fitted on the
validation window and registered as kind "stacker" beside them (its weights, threshold,
validation and test numbers are printed); scoring uses it with the champions.

Promotion (train.gates, train.registry): a new version becomes champion only if its validation
average precision and recall at the threshold pass the gates, the validation window holds at
least train.gates.min_positives labelled positives, and it is not worse than the champion on
train.registry.metric by more than the tolerance. Otherwise it is registered as a challenger with
the reasons, the champion stays, the job exits 0 and its last line says "status challenger".
Too few positives and no champion yet: promoted with a warning (scoring needs a first model);
no labels at all (unsupervised data): the gates are not judged. `--promote VERSION --model KIND`
makes a version champion by hand (as `python -m jobs models --promote` does), and
`python -m jobs models` lists the versions with their decisions.

Reproducible training: the feature table is read at one Delta version, recorded with each
registered version (with the labels table's version when paths.labels holds one) and shown by
`python -m jobs models`. --as-of reads an earlier snapshot instead (Delta time travel): a feature
table version (--as-of 3), a time (--as-of 2026-01-31T08:00:00, UTC unless it carries an
offset: each table as it was then), or a registry version (--as-of v0002, logistic:v0002,
champion: exactly the table versions that version recorded). The windows default to the dates
of that snapshot, so `train --as-of <version a model recorded>` with the same config trains the
same model again. A Parquet table has no versions: --as-of is then an error.

Windows (dates, inclusive): --train-from/--train-to/--test-from/--test-to; by default the test
window is the last train.test_days dates, after a gap of train.gap_days (the label delay), and
training takes the dates before the gap. The validation window (where regularisation, class
weight, thresholds and the stacked risk are chosen) is by default the last
train.logistic.validation_days of the training window, judged by a model fitted on the training
days before it less the gap. --validation-from/--validation-to name it instead (it may lie before
the training window): the model judged there is then fitted on as many days as the training
window has, ending the gap before it, and the chosen settings are refitted on the training
window. The Fraud Detection Handbook's protocol (select on earlier weeks, train 7 days, 7-day
delay, test 7 days) is one command:

    python -m jobs train --conf conf/local.yaml --dataset transactions \
        --validation-from 2018-07-25 --validation-to 2018-07-31 \
        --train-from 2018-07-25 --train-to 2018-07-31 --test-from 2018-08-08 --test-to 2018-08-14

(fit 07-11..17, delay, validate 07-25..31; refit on 07-25..31; test 08-08..14).

Submitted as `python -m jobs train --conf FILE` or `spark-submit jobs/train.py --conf FILE`.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

import getpass
from functools import partial

from jobs.common import job_main, parse_date
from runtime.spark import build_session

WINDOWS = ("train_from", "train_to", "test_from", "test_to", "validation_from", "validation_to")


def options(parser):
    parser.add_argument("--model", choices=("rcf", "logistic", "all", "som"),
                        help="which detector(s) (default train.model; som: the self-organising map, train.som)")
    parser.add_argument("--promote", metavar="VERSION",
                        help="train nothing: make VERSION of --model (rcf|logistic|som) the champion, recorded as manual")
    parser.add_argument("--reason", default="", help="why, recorded in the champion pointer with --promote")
    parser.add_argument("--as-of", metavar="VERSION|TIME|vNNNN",
                        help="read the feature table as of this Delta version, time, or registry version's "
                             "recorded snapshot (default: its latest version)")
    for name in WINDOWS:
        option = name.replace("_", "-")
        parser.add_argument(f"--{option}", metavar="YYYY-MM-DD", help=f"{option.replace('-', ' ')} date, inclusive"
                            + (" (see Windows below)" if name.startswith("validation") else ""))
    parser.add_argument("--registry", metavar="PATH",
                        help="model registry root (default paths.models; the same as --output here)")


def combiner(scoring):
    """The combined flag of validation rows exactly as scoring computes it (scoring/plan.py): the
    risk of ``scoring.risk_method`` reaching ``scoring.anomaly_risk``, or with a stacker (its
    ``stacker`` argument) its own threshold (models/ may not import scoring/).
    """
    from scoring.plan import ScoringPlan, score_detector_arrays

    def combine(scores, thresholds, stacker=None):
        plan = ScoringPlan.of_thresholds(rcf=thresholds.get("rcf"), logistic=thresholds.get("logistic"),
                                         risk_method=scoring["risk_method"], anomaly_risk=scoring["anomaly_risk"],
                                         reasons=0, stacker=stacker)
        return score_detector_arrays(plan, scores.get("rcf"), scores.get("logistic"))[1]

    return combine


def stacker_fitter(scoring):
    """``fit(scores, labels, thresholds, choose) -> (stacker, info, risk_of)`` when ``scoring.risk_method`` is
    ``stacked`` (else None): the calibrated stacker of scoring/risk.py fitted on the validation
    window's detector scores, its threshold chosen by ``choose(score table)``. When one detector
    alone ranks the validation window better (average precision) than the stacker, the stacker
    keeps that detector only, so the combined risk never ranks worse on validation than its best
    detector.
    """
    if scoring["risk_method"] != "stacked":
        return None
    import dataclasses

    from models.evaluation import array_table, average_precision
    from scoring.risk import fit_stacker, risk_components

    def fit(scores, labels, thresholds, choose):
        components = risk_components(scores, thresholds)
        single = {k: average_precision(array_table(v, labels)) for k, v in components.items()}
        stacker = fit_stacker(components, labels)
        ap = average_precision(array_table(stacker.risk(components), labels))
        best = max(single, key=single.get)
        if single[best] > ap:
            stacker = fit_stacker({best: components[best]}, labels)
            if not stacker.weights[0] > 0:  # a monotone map of the best detector, whatever the fit says
                stacker = dataclasses.replace(stacker, weights=(1.0,), intercept=0.0)
            ap = single[best]
        table = array_table(stacker.risk(components), labels)
        choice = choose(table)
        stacker = dataclasses.replace(stacker, threshold=float(choice["threshold"]))
        return stacker, {"average_precision": ap, "detectors_average_precision": single, "threshold_choice": choice,
                         "n_positive": table.n_pos, "n": table.n_pos + table.n_neg}, risk_of

    def risk_of(stacker, scores, thresholds):
        return stacker.risk(risk_components(scores, thresholds))

    return fit


def labels_path(config) -> "str | None":
    """paths.labels (the late labels table) when the config declares it, else None."""
    return config.path("labels") if "labels" in config["paths"] else None


def run(args, config):
    from models.training import train_detectors
    from scoring.champions import registry_root

    if args.promote:
        from reporting.registry import open_registry, promote_version

        root = open_registry(config, args.registry or args.output or config.path("models"))
        return promote_version(root, args.model, args.promote, user=getpass.getuser(), reason=args.reason)

    given = {name: parse_date(getattr(args, name) or config["train"][name], "--" + name.replace("_", "-"))
             for name in WINDOWS}
    spark = build_session(config)
    remote = None
    if config["models"]["backend"] == "sagemaker":
        from sagemaker_backend.stage import train_on_sagemaker

        remote = partial(train_on_sagemaker, spark, config)
    return train_detectors(spark, config, source=args.input or config.path("features"), model=args.model,
                           registry_root=registry_root(args.registry or args.output or config.path("models"), config["dataset"]),
                           given=given, remote=remote, combine=combiner(config["scoring"]), as_of=args.as_of,
                           stack=stacker_fitter(config["scoring"]),
                           labels=labels_path(config))


main = job_main("train", __doc__, run, options, input_help="the feature table (default paths.features)",
                output_help="the model registry root (default paths.models; versions go under <root>/<dataset>/<kind>)")

if __name__ == "__main__":
    raise SystemExit(main())
