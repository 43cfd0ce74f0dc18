"""The `summary` job: daily summary of the scores table, QuickSight export + manifests, Athena DDL,
and a self-contained HTML report.

For one date (--date, default summary.date or the latest date in the scores table) it writes,
under the summary root (--output, default paths.summary):
  <table>/                        summary tables in storage.format (Delta by default: each
                                  has a _delta_log; Parquet by config), partitioned by date,
                                  a run replacing only its dates: daily (counts of the last
                                  summary.history_days days), hourly (anomalies per hour),
                                  entities, locations (counts and max risk), top_entities (with top
                                  reasons), histogram (score bins by label), drift (PSI of every
                                  score and of every feature (from the feature table, --features)
                                  vs the summary.reference_days days before), compare (the date
                                  vs the previous date with scores: events, alerts, anomaly rate,
                                  score means/quantiles/PSI, a jump flag per row; summary.jump_*),
                                  expected (next day's alerts: median, min, max over the last
                                  summary.expected_days days, dates with scores only)
  quicksight/<table>/date=.../    the same rows as CSV with a header (or JSON lines:
                                  summary.export_format), one file per table and date
  quicksight/manifests/<table>_YYYY-MM-DD.json   QuickSight manifest of that date's file
  quicksight/manifests/<table>.json              manifest of every date's file (for a dashboard)
  athena/<dataset>_<table>.sql    CREATE EXTERNAL TABLE for the features, scores and summary tables
                                  (Delta: LOCATION + TBLPROPERTIES ('table_type' = 'DELTA'), Athena
                                  reads columns and partitions from the log; Parquet: columns and
                                  partition projection)
and the HTML report (--report, default paths.reports/summary_<dataset>_<date>.html).
Each jump against the previous date prints "[summary] JUMP: ..." (e.g. alerts 412 vs 95 yesterday (x4.3)).

Manifest URIs name the files actually written: s3:// for an s3a:// output (QuickSight's scheme),
absolute local paths for a local run (QuickSight cannot read those; run on S3 to use them).

A --date (or summary.date) with no rows in the scores table: the job names the date, writes
nothing and exits 3 (0 with --allow-empty).

Submitted as `python -m jobs summary --conf FILE` or `spark-submit jobs/summary.py --conf FILE`.
"""
import dataclasses

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from pyspark.sql import functions as F

from features.datasets import dataset
from jobs.common import InputError, job_main, parse_date
from reporting.daily import run_summary
from runtime.errors import NothingToDo
from runtime.progress import RunSummary
from runtime.spark import build_session
from runtime.storage import StorageError, read_table


def options(parser):
    parser.add_argument("--date", metavar="YYYY-MM-DD",
                        help="the date to summarize (default summary.date; null: the latest date in the scores table)")
    parser.add_argument("--reference-days", type=int, metavar="N",
                        help="PSI drift reference: the N days before --date "
                             "(default summary.reference_days; 0: no PSI)")
    parser.add_argument("--history-days", type=int, metavar="N",
                        help="daily counts over the last N days (default summary.history_days)")
    parser.add_argument("--top", type=int, metavar="N", help="riskiest entities to list (default summary.top)")
    parser.add_argument("--export-format", choices=("csv", "json"),
                        help="QuickSight export format (default summary.export_format)")
    parser.add_argument("--features", metavar="PATH",
                        help="the feature table the drift of the features is measured on (default "
                             "paths.features; without one, the feature columns of the scores table, if any)")
    parser.add_argument("--report", metavar="PATH",
                        help="where the HTML report goes (default paths.reports/summary_<dataset>_<date>.html)")


def at_least(value, option, minimum=1):
    if value < minimum:
        raise InputError(f"{option} must be >= {minimum}, got {value}")
    return value


def require_scores(spark, scores, storage_format, day):
    """NothingToDo when the scores table ``scores`` has no rows on ``day``: before the stage writes anything."""
    try:
        table = read_table(spark, scores, storage_format)
    except StorageError as exc:
        raise InputError(str(exc)) from None
    if table.where(F.col("date") == F.lit(str(day)).cast("date")).limit(1).count() == 0:
        raise NothingToDo(f"no scores on {day} in {scores}", [day])


def run(args, config):
    conf = config.summary
    conf = dataclasses.replace(
        conf, reference_days=conf.reference_days if args.reference_days is None
        else at_least(args.reference_days, "--reference-days", 0),
        history_days=at_least(args.history_days or conf.history_days, "--history-days"),
        top=at_least(args.top or conf.top, "--top"), export_format=args.export_format or conf.export_format)
    day = parse_date(args.date or conf.date, "--date")
    features = config.path("features")
    scores = args.input or config.path("scores")
    spark = build_session(config)
    if day is not None:
        require_scores(spark, scores, config.storage.format, day)
    done = run_summary(spark, conf, dataset=dataset(config.dataset), day=day, scores=scores,
                       output=args.output or config.path("summary"), features=features,
                       drift_from=args.features or features, report=args.report, reports=config.path("reports"),
                       storage_format=config.storage.format)
    return done if isinstance(done, RunSummary) else RunSummary("summary", dates=[str(day)] if day else [])


main = job_main("summary", __doc__, run, options, input_help="the scores table (default paths.scores)",
                output_help="the summary root folder (default paths.summary)")

if __name__ == "__main__":
    raise SystemExit(main())
