"""The `evaluate` job: metrics, plots and an HTML report for the champion models on a test window.

Scores the test window of the feature table with the champions (the window they were tested on
at training, unless --test-from/--test-to say otherwise), and reports for each detector and for
the combined risk: AUC ROC, average precision, precision and recall at the threshold,
precision@k and, for transactions, the Fraud Detection Handbook's card precision@k (cards
already known compromised excluded). Writes ROC, PR and score-histogram plots into a
self-contained HTML report under paths.reports. --json prints one JSON object instead of text.

Submitted as `python -m jobs evaluate --conf FILE [--json]` or `spark-submit jobs/evaluate.py ...`.
"""
import contextlib
import datetime as dt
import json
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from pyspark.sql import functions as F

from features.datasets import dataset as dataset_named
from jobs.common import InputError, base_parser, log, run_main, step
from runtime.spark import build_session
from runtime.storage import StorageError, read_table

PROG = "python -m jobs evaluate"
HEADLINE = ("auc_roc", "average_precision", "precision", "recall", "precision_at_k", "card_precision_at_100")


def build_parser():
    parser = base_parser(PROG, __doc__, input_help="the feature table (default paths.features)",
                         output_help="the HTML report file (default <paths.reports>/evaluation-<dataset>.html)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: auc_roc, average_precision, precision_at_k "
                             "(and card_precision_at_100 for transactions) of the combined risk, "
                             "plus 'detectors' with the same metrics per detector")
    parser.add_argument("--test-from", metavar="YYYY-MM-DD", help="first test date (default: the champion's)")
    parser.add_argument("--test-to", metavar="YYYY-MM-DD", help="last test date, inclusive (default: the champion's)")
    parser.add_argument("--models", metavar="PATH", help="model registry root (default paths.models)")
    parser.add_argument("--k", type=int, help="k of precision@k and card precision@k (default train.k)")
    return parser


def test_window(args, champions):
    window = next(iter(champions.info.values()))["data_window"]
    try:
        first = dt.date.fromisoformat(args.test_from or window["test_from"])
        last = dt.date.fromisoformat(args.test_to or window["test_to"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"bad or missing test window ({exc}): give --test-from and --test-to") from None
    return first, last, window


def run(args, config):
    from models.evaluation import exclude_known_compromised
    from reporting.report import evaluation_report, write_report
    from scoring.table import kept_columns
    from scoring.core import ScoringError, load_champions, score_events

    dataset = config["dataset"]
    k = args.k or config["train"]["k"]
    say = (lambda _msg: None) if args.json else (lambda msg: log("evaluate", msg))
    spark = build_session(config)
    try:
        table = read_table(spark, args.input or config.path("features"), config["storage"]["format"])
        champions = load_champions(args.models or config.path("models"), dataset)
    except (StorageError, ScoringError) as exc:
        raise InputError(str(exc)) from None
    first, last, window = test_window(args, champions)
    day = F.col("date")
    test_df = table.where(day.between(F.lit(str(first)).cast("date"), F.lit(str(last)).cast("date")))
    card = {}
    if dataset == "transactions":
        gap = int(window.get("gap_days", config["features"]["transactions"]["delay_days"]))
        since = window.get("train_from", str(first))
        history = table.where(day.between(F.lit(since).cast("date"), F.lit(str(last)).cast("date")))
        test_df = exclude_known_compromised(test_df, history, card_col="customer_id", date_col="date",
                                            delay_days=gap, since=since)
        card = {"card_col": "customer_id", "date_col": "date"}
    scoring = config["scoring"]
    scored = score_events(test_df, champions, risk_method=scoring["risk_method"],
                          anomaly_risk=scoring["anomaly_risk"], reasons=scoring["reasons"],
                          keep=kept_columns(dataset_named(dataset), test_df.columns))
    scored = scored.where(F.col("label").isNotNull()).persist()
    if scored.limit(1).count() == 0:
        raise InputError(f"no labeled rows in the test window {first}..{last}: nothing to evaluate")
    thresholds = {"risk": scoring["anomaly_risk"]}
    if champions.rcf is not None:
        thresholds["rcf_score"] = champions.rcf.threshold
    if champions.logistic is not None:
        thresholds["logistic_score"] = champions.logistic.threshold
    output = args.output or f"{config.path('reports')}/evaluation-{dataset}.html"
    progress = contextlib.nullcontext() if args.json else step("evaluate", f"evaluating {', '.join(thresholds)}")
    with progress:
        page, metrics = evaluation_report(
            scored, thresholds, k=k, title=f"Detector evaluation — {dataset}, test {first}..{last}",
            notes=[f"rcf {champions.rcf_version}, logistic {champions.logistic_version}",
                   f"combined risk: scoring/risk.py ({scoring['risk_method']} of each detector squashed to 0.5 "
                   "at its own threshold)"],
            **card)
        write_report(output, page)
    scored.unpersist()
    result = {key: metrics["risk"].get(key) for key in HEADLINE if key in metrics["risk"]}
    result.update({"dataset": dataset, "test_from": str(first), "test_to": str(last), "k": k, "report": output,
                   "models": {"rcf": champions.rcf_version, "logistic": champions.logistic_version},
                   "detectors": {name: {key: m.get(key) for key in HEADLINE if key in m}
                                 for name, m in metrics.items() if name != "risk"}})
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for name, m in metrics.items():
            say(f"{name:<15} " + ", ".join(f"{key} {m[key]:.3f}" for key in HEADLINE
                                          if isinstance(m.get(key), (int, float))))
        say(f"report: {output}")
    return 0


def main(argv=None) -> int:
    return run_main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
