"""The `replay` job: send a data set into a Kinesis stream (or a landing folder) at a chosen rate.

Reads a data set (Parquet, CSV or JSON lines; --input, default the raw table of the dataset), turns
each row into one JSON document and either puts it into a Kinesis stream with PutRecords
(--mode kinesis: --batch-size records per call, at most 500 and 5 MiB; --rate records per second;
the partition key is a column's value; records the stream refuses are retried with exponential
backoff) or writes JSON-lines files of --batch-size records into a landing folder at the rate
(--mode landing: what Kinesis Data Firehose would deliver to S3; the stream job's local demo
source). Ends with a report of records sent and failed; exits 1 when any record failed.

Submitted as `python -m jobs replay --conf FILE` or `spark-submit jobs/replay.py --conf FILE`.
"""
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import InputError, base_parser, log, run_main, step

PROG = "python -m jobs replay"
ENTITY = {"telemetry": "device_id", "transactions": "customer_id"}


def build_parser():
    parser = base_parser(PROG, __doc__)
    parser.add_argument("--mode", choices=("kinesis", "landing"),
                        help="kinesis: PutRecords into --stream; landing: JSON-lines files into --output "
                             "(default stream.replay.mode)")
    parser.add_argument("--stream", metavar="NAME", help="Kinesis stream name (default stream.replay.stream_name)")
    parser.add_argument("--format", choices=("parquet", "csv", "json"),
                        help="input format (default schema.<dataset>.format)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="records per PutRecords call (<= 500) or per landing file (default stream.replay.batch_size)")
    parser.add_argument("--rate", type=float, metavar="R",
                        help="records per second, 0 for as fast as possible (default stream.replay.rate)")
    parser.add_argument("--partition-key", metavar="COLUMN",
                        help="column whose value is the partition key (default the dataset's entity id)")
    parser.add_argument("--order-by", metavar="COLUMN",
                        help="send in this column's order; '' for input order (default stream.replay.order_by)")
    parser.add_argument("--limit", type=int, metavar="N", help="send only the first N records")
    return parser


def read_records(spark, path, fmt, *, order_by, key_column, limit):
    """Iterator of (JSON bytes, partition key) in order; the whole data set is never collected."""
    from pyspark.sql import functions as F

    reader = spark.read
    if fmt == "csv":
        # Typed like Parquet input, so numbers go out as JSON numbers.
        reader = reader.option("header", "true").option("inferSchema", "true")
    df = reader.format(fmt).load(path)
    if key_column and key_column not in df.columns:
        raise InputError(f"partition key column {key_column!r} is not in {path} (it has {', '.join(df.columns)})")
    if order_by:
        if order_by not in df.columns:
            raise InputError(f"--order-by column {order_by!r} is not in {path}")
        df = df.orderBy(order_by)
    if limit:
        df = df.limit(limit)
    # Microseconds kept, so the stream sees exactly the times the batch job reads.
    json_col = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]),
                         {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX", "ignoreNullFields": "true"})
    key = F.col(f"`{key_column}`").cast("string") if key_column else F.lit(None).cast("string")
    rows = df.select(json_col.alias("json"), key.alias("key")).toLocalIterator(prefetchPartitions=True)
    for row in rows:
        yield row["json"].encode("utf-8"), row["key"]


def run(args, config):
    from runtime.aws import client
    from runtime.producers import KinesisReplayer, LandingWriter
    from runtime.spark import build_session

    dataset = config["dataset"]
    conf = config["stream"]["replay"]
    mode = args.mode or conf["mode"]
    source = args.input or config.path("raw")
    fmt = args.format or config["schema"][dataset]["format"]
    batch_size = args.batch_size or conf["batch_size"]
    rate = conf["rate"] if args.rate is None else args.rate
    key_column = args.partition_key or conf["partition_key"] or ENTITY[dataset]
    order_by = conf["order_by"] if args.order_by is None else args.order_by
    if batch_size < 1 or (mode == "kinesis" and batch_size > 500):
        raise InputError(f"--batch-size must be 1..500 for kinesis (1.. for landing), got {batch_size}")
    if rate < 0:
        raise InputError(f"--rate must be >= 0, got {rate}")

    spark = build_session(config)
    try:
        records = read_records(spark, source, fmt, order_by=order_by, key_column=key_column, limit=args.limit)
    except InputError:
        raise
    except Exception as exc:  # AnalysisException: a missing path, a bad file
        raise InputError(f"cannot read {fmt} input {source}: {str(exc).splitlines()[0]}") from None

    progress = lambda message: log("replay", message)  # noqa: E731
    if mode == "kinesis":
        stream_name = args.stream or conf["stream_name"]
        if not stream_name:
            raise InputError("--mode kinesis needs --stream (or stream.replay.stream_name)")
        sender = KinesisReplayer(client("kinesis", config["aws"]), stream_name, batch_size=batch_size, rate=rate,
                                 max_retries=conf["max_retries"], backoff_seconds=conf["backoff_seconds"],
                                 log=progress)
        target = f"Kinesis stream {stream_name}"
    else:
        folder = args.output or config["stream"]["landing"].format(
            lake=config["storage"]["lake"].rstrip("/"), dataset=dataset)
        s3 = client("s3", config["aws"]) if folder.startswith(("s3://", "s3a://")) else None
        sender = LandingWriter(folder, batch_size=batch_size, rate=rate, s3_client=s3, log=progress)
        target = f"landing folder {folder}"
        records = (data for data, _ in records)
    with step("replay", f"sending {source} to {target} ({batch_size} per call, "
                        f"{'unlimited' if not rate else f'{rate:g}/s'})"):
        report = sender.send(records)
    log("replay", f"records sent {report.sent:,}, failed {report.failed:,} ({report.calls:,} calls, "
                  f"{report.retried:,} retried, {report.rate:,.0f} records/s)")
    for code, count in sorted(report.errors.items()):
        log("replay", f"  failed {count:,}: {code}")
    return 1 if report.failed else 0


def main(argv=None) -> int:
    return run_main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
