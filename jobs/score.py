"""The `score` job: nightly batch scoring of one date or a range with the champion models.

Reads those dates' partitions of the feature table, applies the champion RCF and logistic models
(models/registry: the registry under paths.models/<dataset>), combines them into one risk with
reason codes (scoring/), and writes the scores table partitioned by date: ids, event
time, label (and amount/scenario columns where the data set has them), each detector's score,
risk, is_anomaly, model versions and reasons. The features stay in the feature table (join on the
event id). ``reasons`` is filled for flagged rows (is_anomaly) only and is the empty array
elsewhere: each detector explains the rows it flags itself (scoring.rcf_attribution: flagged;
"all" adds the RCF's shares to every flagged row).

Reading (scoring.reader): auto (default) lets the Python workers read the feature files of a
local table themselves (pyarrow, faster: README "Benchmarks"; a Delta table's files of its
current snapshot, unless it has deletion vectors or column mapping), and Spark read anything else
(S3); arrow insists on the former, spark always reads through Spark.
Writing (scoring.writer): auto (default): where the Python workers read the features and the
scores table is a local Delta table, they write its files too (pyarrow) and the driver commits
them (delta-rs); spark: Spark writes them. Every combination writes the same rows.

Idempotent and atomic: a run replaces the partitions of the dates it scores in one Delta
transaction (``replaceWhere``, or the delta-rs commit of the Python workers' files), so re-running
a date leaves the same rows in a new table version, readers see a date's old rows or its new
ones, and a run that dies before its commit leaves the previous version as it was. Two runs at
once commit one after the other: a commit that loses the race is made again (a few times,
backing off; then the job fails naming the conflict). On S3 that needs Delta's DynamoDB log store
(README "Nightly scoring"), so there the job holds the table's lock object while it writes
(``<table>/_writer.lock``, created with S3's conditional put, runtime/locks.py): a second run
on the same table fails at once, before writing, naming the holder. With storage.format
parquet, Spark's dynamic partition overwrite replaces the dates (not atomic on S3).

Dates with no feature rows: when a date asked for (--date, or any date of --from..--to) has no
rows in the feature table, the job names the empty dates, writes nothing (no folder, no file, no
table version) and exits 3. With --allow-empty it exits 0 instead and scores the dates of the range
that have rows (status done, the empty dates listed as empty_dates in the last line); the scores
already in the table for the empty dates stay as they are.

Submitted as `python -m jobs score --conf FILE --date YYYY-MM-DD` or
`spark-submit jobs/score.py --conf FILE --date YYYY-MM-DD`.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from features.datasets import dataset as dataset_named
from jobs.common import add_registry_option, job_main, parse_date
from runtime.aws import client as aws_client
from runtime.locks import writer_lock
from runtime.spark import build_session


def options(parser):
    parser.add_argument("--date", metavar="YYYY-MM-DD",
                        help="the date to score (default: the latest date in the feature table)")
    parser.add_argument("--from", dest="from_date", metavar="YYYY-MM-DD", help="first date of a range to score")
    parser.add_argument("--to", dest="to_date", metavar="YYYY-MM-DD", help="last date of a range, inclusive")
    parser.add_argument("--last-days", type=int, metavar="N",
                        help="score the last N dates of the feature table (instead of --date/--from/--to)")
    add_registry_option(parser)


def run(args, config):
    from scoring.nightly import read_window, score_nightly

    dataset = dataset_named(config["dataset"])
    output = args.output or config.path("scores")
    models_root = args.registry or config.path("models")
    fmt = config["storage"]["format"]
    asked = dict(date=parse_date(args.date, "--date"), first=parse_date(args.from_date, "--from"),
                 last=parse_date(args.to_date, "--to"), last_days=args.last_days)
    spark = build_session(config)
    window = read_window(spark, args.input or config.path("features"), fmt, allow_empty=args.allow_empty, **asked)
    # one writer per table on S3 (runtime/locks.py); nothing to hold for a local table
    with writer_lock(output, lambda: aws_client("s3", config["aws"]), job="score"):
        if config["models"]["backend"] == "sagemaker":
            from sagemaker_backend.stage import score_on_sagemaker

            return score_on_sagemaker(spark, config, features_df=window.features_df, output=output,
                                      first=window.first, last=window.last, models_root=models_root)
        return score_nightly(spark, dataset, window=window, output=output, fmt=fmt, models_root=models_root,
                             scoring=config["scoring"])


main = job_main("score", __doc__, run, options, input_help="the feature table (default paths.features)",
                output_help="the scores table (default paths.scores), partitioned by date")

if __name__ == "__main__":
    raise SystemExit(main())
