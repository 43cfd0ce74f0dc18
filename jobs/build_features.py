"""The `features` job: validate raw events and write the feature table, partitioned by date.

Reads the raw input (schema.<dataset>.format: parquet, csv or json lines; column names mapped by
schema.<dataset>.columns), sends every row that fails validation to the quarantine table with a
reason (unparseable time, missing id, non-numeric / negative / NaN / infinite values, duplicate
ids), prints rows in = valid + quarantined, then builds the point-in-time features and writes them
partitioned by `date`. With --from-date/--to-date only those dates are rebuilt (history before
them is read as needed); other dates stay as they are.

Submitted as `python -m jobs features --conf FILE` or `spark-submit jobs/build_features.py --conf FILE`.
"""
import datetime as dt
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from pyspark import StorageLevel
from pyspark.sql import functions as F

from features.datasets import dataset as dataset_named
from ingest.validation import count_outcome
from jobs.common import InputError, base_parser, log, parse_date, run_main, step
from runtime.spark import build_session
from runtime.storage import StorageError, read_raw, write_table

PROG = "python -m jobs features"


def build_parser():
    parser = base_parser(PROG, __doc__, input_help="raw input (default paths.raw; format from schema.<dataset>.format)",
                         output_help="the feature table (default paths.features), partitioned by date")
    parser.add_argument("--quarantine", metavar="PATH",
                        help="where rejected rows go, with a reason column (default paths.quarantine)")
    parser.add_argument("--from-date", metavar="YYYY-MM-DD",
                        help="first date to rebuild (default features.from_date; none: every date)")
    parser.add_argument("--to-date", metavar="YYYY-MM-DD",
                        help="last date to rebuild, inclusive (default features.to_date or --from-date)")
    return parser


def run(args, config):
    dataset = config["dataset"]
    schema_conf = config["schema"][dataset]
    source = args.input or config.path("raw")
    output = args.output or config.path("features")
    quarantine_path = args.quarantine or config.path("quarantine")
    from_date = parse_date(args.from_date or config["features"]["from_date"], "--from-date")
    to_date = parse_date(args.to_date or config["features"]["to_date"], "--to-date") or from_date
    if to_date and not from_date:
        raise InputError("--to-date needs --from-date")
    if from_date and to_date < from_date:
        raise InputError(f"--to-date {to_date} is before --from-date {from_date}")

    spark = build_session(config)
    try:
        raw_df = read_raw(spark, source, schema_conf["format"])
        validated = dataset_named(dataset).validate(raw_df, schema_conf)
    except (StorageError, ValueError) as exc:
        raise InputError(str(exc)) from None

    validated.checked.persist(StorageLevel.MEMORY_AND_DISK)
    with step("features", f"validating {source}"):
        counts = count_outcome(validated)
    log("features", f"rows in {counts['rows_in']:,} = valid {counts['valid']:,} + quarantined {counts['quarantined']:,}")
    if counts["quarantined"]:
        with step("features", f"writing {counts['quarantined']:,} quarantined rows to {quarantine_path}"):
            write_table(validated.quarantine, quarantine_path, "parquet")
        top = validated.quarantine.groupBy("reason").count().orderBy(F.desc("count")).limit(10).collect()
        for row in top:
            log("features", f"  quarantined {row['count']:>9,}  {row['reason']}")

    transform, history_days = dataset_named(dataset).feature_builder(config)
    valid_df = validated.valid
    if from_date:
        first_needed = from_date - dt.timedelta(days=history_days)
        valid_df = valid_df.where((F.col("event_time") >= F.lit(str(first_needed)).cast("timestamp"))
                                  & (F.col("event_time") < F.lit(str(to_date + dt.timedelta(days=1))).cast("timestamp")))
    features_df = transform(valid_df)
    if from_date:
        features_df = features_df.where(F.col("date").between(F.lit(str(from_date)).cast("date"),
                                                              F.lit(str(to_date)).cast("date")))
    what = f"dates {from_date}..{to_date}" if from_date else "every date"
    with step("features", f"writing features ({what}) to {output}"):
        write_table(features_df, output, config["storage"]["format"], partition_by=["date"])
    validated.checked.unpersist()


def main(argv=None) -> int:
    return run_main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
