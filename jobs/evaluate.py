"""The `evaluate` job: metrics, plots and an HTML report for the champion models on a test window.

Scores the test window of the feature table with the champions (the window they were tested on
at training, unless --test-from/--test-to say otherwise), and reports for each detector and for
the combined risk: AUC ROC, average precision, precision and recall at the threshold,
precision@k and, for transactions, the Fraud Detection Handbook's card precision@k (cards
already known compromised excluded). Writes ROC, PR and score-histogram plots into a
self-contained HTML report under paths.reports. --json prints one JSON object instead of text.

The feature table is read at its latest Delta version, or at the snapshot --as-of names: a
version (--as-of 3), a time (UTC unless it carries an offset), a registry version (v0002,
logistic:v0002) or `champion`: the snapshot the champions were trained on (they must agree),
so an evaluation can be repeated on exactly the rows it saw. The result's "snapshots" names the
version read.

Submitted as `python -m jobs evaluate --conf FILE [--json]` or `spark-submit jobs/evaluate.py ...`.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from features.datasets import dataset
from jobs.common import add_registry_option, JobResult, job_main, log
from runtime import fs
from runtime.progress import RunSummary
from runtime.spark import build_session


def options(parser):
    parser.add_argument("--test-from", metavar="YYYY-MM-DD", help="first test date (default: the champion's)")
    parser.add_argument("--test-to", metavar="YYYY-MM-DD", help="last test date, inclusive (default: the champion's)")
    add_registry_option(parser)
    parser.add_argument("--k", type=int, help="k of precision@k and card precision@k (default train.k)")
    parser.add_argument("--as-of", metavar="VERSION|TIME|vNNNN|champion",
                        help="read the feature table as of this Delta version, time, registry version's recorded "
                             "snapshot, or the champions' (default: its latest version)")


def run(args, config):
    from jobs.train import labels_path
    from reporting.evaluate import metric_lines, run_evaluation

    ds = dataset(config.dataset)
    output = args.output or fs.join(config.path("reports"), f"evaluation-{ds.name}.html")
    result = run_evaluation(
        build_session(config), config.scoring, dataset=ds, features=args.input or config.path("features"),
        models=args.registry or config.path("models"), storage_format=config.storage.format,
        k=args.k or config.train.k, output=output, label_delay_days=ds.label_delay_days(config),
        test_from=args.test_from, test_to=args.test_to, quiet=args.json, as_of=args.as_of,
        labels=labels_path(config))
    if not args.json:
        for line in metric_lines(result):
            log("evaluate", line)
        log("evaluate", f"report: {output}")
    summary = RunSummary("evaluate", dataset=ds.name, dates=[result["test_from"], result["test_to"]],
                         versions=dict(result["models"]))
    read = result["snapshots"]["features"].get("version")
    if read is not None:
        summary.extra["features_version"] = read
    return JobResult(summary, result)


main = job_main("evaluate", __doc__, run, options, input_help="the feature table (default paths.features)",
                output_help="the HTML report file (default <paths.reports>/evaluation-<dataset>.html)",
                json_help="print one JSON object (the only line of stdout): auc_roc, average_precision, "
                          "precision_at_k (and card_precision_at_100 for transactions) of the combined risk, "
                          "plus 'detectors' with the same metrics per detector, and the run summary's fields "
                          "(job, status, dates, versions, seconds)")

if __name__ == "__main__":
    raise SystemExit(main())
