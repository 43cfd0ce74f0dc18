"""The `score` job: nightly batch scoring of one date or a range with the champion models.

Reads those dates' partitions of the feature table, applies the champion RCF and logistic models
(models/registry: the registry under paths.models/<dataset>), combines them into one risk with
reason codes (models/scoring.py), and writes the scores table partitioned by date: ids, event
time, label (and amount/scenario columns where the data set has them), each detector's score,
risk, is_anomaly, model versions and reasons. The features stay in the feature table (join on the
event id). ``reasons`` is filled for flagged rows (is_anomaly) only and is the empty array
elsewhere: each detector explains the rows it flags itself (scoring.rcf_attribution: flagged;
"all" adds the RCF's shares to every flagged row).

Reading (scoring.reader): auto (default) lets the Python workers read the feature files of a
local Parquet table themselves (pyarrow; about a third faster on 10M rows), and Spark read
anything else (S3, Delta); arrow insists on the former, spark always reads through Spark.
Writing (scoring.writer): auto (default): where the Python workers read the features and the
scores table is local Parquet, they write its files too (pyarrow; another quarter off, 51-56 -> 38-43 s
on 10M rows) and the driver swaps the partitions in; spark: Spark writes them. Every
combination writes the same rows.

Idempotent: re-running a date replaces that date's partition (dynamic partition overwrite: the
new files are written to a staging folder and swapped in when every task has written its own,
so a crash mid-write leaves the previous partition as it was; replaceWhere when storage.format
is delta).

Submitted as `python -m jobs score --conf FILE --date YYYY-MM-DD` or
`spark-submit jobs/score.py --conf FILE --date YYYY-MM-DD`.
"""
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from pyspark.sql import functions as F

from features.catalog import ENTITY, EVENT_ID, LOCATION
from jobs.common import InputError, base_parser, log, parse_date, run_main, step
from runtime.spark import build_session
from runtime.storage import StorageError, local_table_path, needs_escaping, partition_files, read_table, write_table

PROG = "python -m jobs score"


def build_parser():
    parser = base_parser(PROG, __doc__, input_help="the feature table (default paths.features)",
                         output_help="the scores table (default paths.scores), partitioned by date")
    parser.add_argument("--date", metavar="YYYY-MM-DD",
                        help="the date to score (default: the latest date in the feature table)")
    parser.add_argument("--from", dest="from_date", metavar="YYYY-MM-DD", help="first date of a range to score")
    parser.add_argument("--to", dest="to_date", metavar="YYYY-MM-DD", help="last date of a range, inclusive")
    parser.add_argument("--last-days", type=int, metavar="N",
                        help="score the last N dates of the feature table (instead of --date/--from/--to)")
    parser.add_argument("--models", metavar="PATH", help="model registry root (default paths.models)")
    return parser


def score_window(args, dates):
    """(first, last) date to score from the options and the dates the feature table holds."""
    if not dates:
        raise InputError("the feature table is empty: run the features job first")
    dates = sorted(dates)
    if args.last_days:
        return dates[max(0, len(dates) - args.last_days)], dates[-1]
    if args.date and (args.from_date or args.to_date):
        raise InputError("give --date or --from/--to, not both")
    if args.date:
        day = parse_date(args.date, "--date")
        return day, day
    if args.from_date or args.to_date:
        first = parse_date(args.from_date, "--from") if args.from_date else dates[0]
        last = parse_date(args.to_date, "--to") if args.to_date else dates[-1]
        if last < first:
            raise InputError(f"--to {last} is before --from {first}")
        return first, last
    return dates[-1], dates[-1]


SCORES = ["rcf_score", "logistic_score", "risk", "is_anomaly", "rcf_version", "logistic_version", "reasons"]
OPEN_FILES = 8  # dates one writing task keeps open before it sorts (runtime/storage.write_table)
# written without dictionary encoding: their values hardly repeat (runtime/storage.write_table)
UNIQUE_COLUMNS = ["event_time", "rcf_score", "logistic_score", "risk"]


def kept_columns(dataset, available):
    """The feature table's columns the scores table carries: ids, time, date, label and context."""
    ids = [EVENT_ID[dataset], ENTITY[dataset], LOCATION[dataset], "event_time", "date", "label"]
    extra = ["amount", "anomaly_type", "fraud_scenario"]
    return [c for c in ids + extra if c in available]


def output_columns(dataset, available):
    """The scores table's columns in order: the kept columns, then the scores (no features: the
    feature table has them, joined on the event id; carrying ~90 of them through scoring and
    writing them again doubled the nightly job's time).
    """
    return kept_columns(dataset, available) + [c for c in SCORES if c in available]


def write_scores(scored_df, path, fmt, first, last, dataset=None):
    """Replace the partitions of ``first..last`` atomically; other dates stay as they are."""
    if fmt == "delta":
        (scored_df.write.format("delta").mode("overwrite")
         .option("replaceWhere", f"date >= '{first}' AND date <= '{last}'")
         .partitionBy("date").save(path))
    else:
        # the feature table is partitioned by date, so a task's rows come in one or two dates
        write_table(scored_df, path, fmt, partition_by=["date"], open_files=OPEN_FILES,
                    plain_columns=plain_columns(dataset, scored_df.columns))


def plain_columns(dataset, columns):
    """The columns of the scores table written without dictionary encoding (their values hardly repeat)."""
    plain = ([EVENT_ID[dataset]] if dataset in EVENT_ID else []) + UNIQUE_COLUMNS
    return [c for c in plain if c in columns]


def window_files(table, fmt, reader, first, last):
    """The feature files of ``first..last`` for the Python workers to read, or None to read through
    Spark (scoring.reader: spark; or auto on a table they cannot read: Delta, not local).
    """
    if reader not in ("auto", "arrow", "spark"):
        raise InputError(f"scoring.reader must be auto, arrow or spark, got {reader!r}")
    if reader == "spark":
        return None
    files = partition_files(table, "date") if fmt == "parquet" else None
    if files is None:
        if reader == "arrow":
            raise InputError("scoring.reader arrow needs a local Parquet feature table partitioned by date "
                             f"(storage.format {fmt}); use auto or spark")
        return None
    return [(path, day) for path, day in files if str(first) <= day <= str(last)]


def run(args, config):
    from models.scoring import (ScoringError, load_champions, score_events, score_parquet_files,
                                write_scored_files)

    dataset = config["dataset"]
    source = args.input or config.path("features")
    output = args.output or config.path("scores")
    fmt = config["storage"]["format"]
    spark = build_session(config)
    try:
        table = read_table(spark, source, fmt)
    except StorageError as exc:
        raise InputError(str(exc)) from None
    dates = [r["date"] for r in table.select("date").distinct().collect()]
    first, last = score_window(args, dates)
    features_df = table.where(F.col("date").between(F.lit(str(first)).cast("date"), F.lit(str(last)).cast("date")))
    if config["models"]["backend"] == "sagemaker":
        from jobs.sagemaker_backend import score_on_sagemaker

        return score_on_sagemaker(spark, config, features_df=features_df, output=output, first=first, last=last,
                                  models_root=args.models or config.path("models"), write=write_scores)
    try:
        champions = load_champions(args.models or config.path("models"), dataset)
    except ScoringError as exc:
        raise InputError(str(exc)) from None
    scoring = config["scoring"]
    files = window_files(table, fmt, scoring["reader"], first, last)
    log("score", f"{dataset} {first}..{last} with rcf {champions.rcf_version}, logistic {champions.logistic_version}"
                 + (f" ({len(files)} files read by the Python workers)" if files is not None else " (read by Spark)"))
    options = dict(risk_method=scoring["risk_method"], anomaly_risk=scoring["anomaly_risk"],
                   reasons=scoring["reasons"], rcf_attribution=scoring["rcf_attribution"],
                   keep=kept_columns(dataset, features_df.columns))
    if python_writes(spark, scoring["writer"], files, fmt, output):
        columns = output_columns(dataset, [*options["keep"], *SCORES])
        try:
            with step("score", f"scoring and writing to {output} (written by the Python workers)"):
                write_scored_files(spark, files, champions, output, table_schema=table.schema, columns=columns,
                                   plain_columns=plain_columns(dataset, columns), **options,
                                   notify=lambda line: log("score", line))
        except ScoringError as exc:
            raise InputError(str(exc)) from None
        report_written(spark, output, fmt, first, last)
        return 0
    try:
        if files is not None:
            scored = score_parquet_files(spark, files, champions, table_schema=table.schema, **options)
        else:
            scored = score_events(features_df, champions, **options)
    except ScoringError as exc:
        raise InputError(str(exc)) from None
    scored = scored.select(*output_columns(dataset, scored.columns))
    with step("score", f"scoring and writing to {output}"):
        write_scores(scored, output, fmt, first, last, dataset)
    report_written(spark, output, fmt, first, last)
    return 0


def python_writes(spark, writer, files, fmt, output):
    """Whether the Python workers write the scores files themselves (scoring.writer auto): they
    read the features (``files``), and the scores table is local Parquet (on the file system
    Spark qualifies ``output`` to) in a codec pyarrow has, partitioned by plain values.
    """
    from models.scoring import arrow_codec

    if writer not in ("auto", "spark"):
        raise InputError(f"scoring.writer must be auto or spark, got {writer!r}")
    return (writer == "auto" and files is not None and fmt == "parquet" and arrow_codec(spark) is not None
            and not any(needs_escaping(value) for _, value in files) and local_table_path(spark, output) is not None)


def report_written(spark, output, fmt, first, last):
    """Print events and anomalies per date as they are in the scores table now."""
    written = read_table(spark, output, fmt).where(
        F.col("date").between(F.lit(str(first)).cast("date"), F.lit(str(last)).cast("date")))
    for row in written.groupBy("date").agg(F.count(F.lit(1)).alias("rows"),
                                           F.sum(F.col("is_anomaly").cast("int")).alias("anomalies")) \
            .orderBy("date").collect():
        log("score", f"  {row['date']}: {row['rows']:,} events, {row['anomalies']:,} anomalies")


def main(argv=None) -> int:
    return run_main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
