"""The replay stage: a data set's rows as JSON records into a Kinesis stream or a landing folder.

The producers themselves (batching, rate, retries, atomic files) are in runtime/producers.py;
this reads the rows with Spark in order and hands them over.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from pyspark.sql import SparkSession

from runtime.errors import InputError
from runtime.progress import RunSummary, log, step


@dataclass(frozen=True)
class ReplayOptions:
    """One replay: the command line's choices, else ``stream.replay.*`` (paths resolved by the job)."""

    mode: str                   # kinesis | landing
    source: str                 # the data set to send
    fmt: str                    # parquet | csv | json
    batch_size: int             # records per PutRecords call or per landing file
    rate: float                 # records per second, 0 for as fast as possible
    key_column: str | None      # the partition key's column
    order_by: str               # '' for input order
    stream_name: str | None     # the Kinesis stream (mode kinesis)
    folder: str                 # the landing folder (mode landing)
    limit: int | None = None
    last: int | None = None     # only the last N records in order_by order
    shards: int | None = None   # mode kinesis: create the stream with this many shards when it does not exist


def read_records(spark: SparkSession, path: str, fmt: str, *, order_by: str, key_column: str | None,
                 limit: int | None, last: int | None = None) -> Iterator[tuple[bytes, str | None]]:
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
    if last:
        if not order_by:
            raise InputError("--last needs an order (--order-by COLUMN): the last records of what?")
        df = df.orderBy(F.col(f"`{order_by}`").desc()).limit(last).orderBy(order_by)
    if limit:
        df = df.limit(limit)
    # Microseconds kept, so the stream sees exactly the times the batch job reads.
    json_col = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]),
                         {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX", "ignoreNullFields": "true"})
    key = F.col(f"`{key_column}`").cast("string") if key_column else F.lit(None).cast("string")
    rows = df.select(json_col.alias("json"), key.alias("key")).toLocalIterator(prefetchPartitions=True)
    return ((row["json"].encode("utf-8"), row["key"]) for row in rows)


def run_replay(options: ReplayOptions, replay_conf: Mapping, aws_conf: Mapping, *,
               session: Callable[[], SparkSession]) -> RunSummary:
    """Send the records; the summary's rows_in is the records read, rows_out those sent, and its
    status "failed" (exit 1) when any record failed. ``session()`` starts Spark once the options
    are known to work.
    """
    from runtime.aws import client
    from runtime.producers import KinesisReplayer, LandingWriter
    from runtime.sources import ensure_kinesis_stream

    if options.batch_size < 1 or (options.mode == "kinesis" and options.batch_size > 500):
        raise InputError(f"--batch-size must be 1..500 for kinesis (1.. for landing), got {options.batch_size}")
    if options.rate < 0:
        raise InputError(f"--rate must be >= 0, got {options.rate}")
    if options.mode == "kinesis" and not options.stream_name:
        raise InputError("--mode kinesis needs --stream (or stream.replay.stream_name)")

    spark = session()
    try:
        records = read_records(spark, options.source, options.fmt, order_by=options.order_by,
                               key_column=options.key_column, limit=options.limit, last=options.last)
    except InputError:
        raise
    except Exception as exc:  # AnalysisException: a missing path, a bad file
        raise InputError(f"cannot read {options.fmt} input {options.source}: {str(exc).splitlines()[0]}") from None

    progress = lambda message: log("replay", message)  # noqa: E731
    if options.mode == "kinesis":
        kinesis = client("kinesis", aws_conf)
        if options.shards and ensure_kinesis_stream(kinesis, options.stream_name, options.shards):
            log("replay", f"created Kinesis stream {options.stream_name} with {options.shards} shards")
        sender = KinesisReplayer(kinesis, options.stream_name, batch_size=options.batch_size,
                                 rate=options.rate, max_retries=replay_conf["max_retries"],
                                 backoff_seconds=replay_conf["backoff_seconds"], log=progress)
        target = f"Kinesis stream {options.stream_name}"
    else:
        s3 = client("s3", aws_conf) if options.folder.startswith(("s3://", "s3a://")) else None
        sender = LandingWriter(options.folder, batch_size=options.batch_size, rate=options.rate, s3_client=s3,
                               log=progress)
        target = f"landing folder {options.folder}"
        records = (data for data, _ in records)
    with step("replay", f"sending {options.source} to {target} ({options.batch_size} per call, "
                        f"{'unlimited' if not options.rate else f'{options.rate:g}/s'})"):
        report = sender.send(records)
    log("replay", f"records sent {report.sent:,}, failed {report.failed:,} ({report.calls:,} calls, "
                  f"{report.retried:,} retried, {report.rate:,.0f} records/s)")
    for code, count in sorted(report.errors.items()):
        log("replay", f"  failed {count:,}: {code}")
    return RunSummary("replay", rows_in=report.sent + report.failed, rows_out=report.sent,
                      status="failed" if report.failed else "done",
                      extra={"failed": report.failed})
