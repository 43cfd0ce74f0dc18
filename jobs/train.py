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
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from functools import partial

from jobs.common import job_main, parse_date
from runtime.spark import build_session

WINDOWS = ("train_from", "train_to", "test_from", "test_to")


def options(parser):
    parser.add_argument("--model", choices=("rcf", "logistic", "all"), help="which detector(s) (default train.model)")
    for name in WINDOWS:
        option = name.replace("_", "-")
        parser.add_argument(f"--{option}", metavar="YYYY-MM-DD", help=f"{option.replace('-', ' ')} date, inclusive")


def run(args, config):
    from models.training import train_detectors
    from scoring.champions import registry_root

    given = {name: parse_date(getattr(args, name) or config["train"][name], "--" + name.replace("_", "-"))
             for name in WINDOWS}
    spark = build_session(config)
    remote = None
    if config["models"]["backend"] == "sagemaker":
        from sagemaker_backend.stage import train_on_sagemaker

        remote = partial(train_on_sagemaker, spark, config)
    return train_detectors(spark, config, source=args.input or config.path("features"), model=args.model,
                           registry_root=registry_root(args.output or config.path("models"), config["dataset"]),
                           given=given, remote=remote)


main = job_main("train", __doc__, run, options, input_help="the feature table (default paths.features)",
                output_help="the model registry root (default paths.models; versions go under <root>/<dataset>/<kind>)")

if __name__ == "__main__":
    raise SystemExit(main())
