"""The replay stage: a data set's rows as JSON records into a Kinesis stream or a landing folder.

The producers themselves (batching, rate, retries, atomic files) are in runtime/producers.py;
this reads the rows with Spark in order and hands them over.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

from pyspark.sql import SparkSession

from runtime.errors import InputError
from runtime.progress import RunSummary, log, step
from runtime.storage import StorageError, input_format


@dataclass(frozen=True)
class ReplayOptions:
    """One replay: the command line's choices, else ``stream.replay.*`` (paths resolved by the job)."""

    mode: str                   # kinesis | landing
    source: str                 # the data set to send
    fmt: str                    # parquet | csv | json | delta, or auto (runtime.storage.input_format)
    batch_size: int             # records per PutRecords call or per landing file
    rate: float                 # records per second, 0 for as fast as possible
    key_column: str | None      # the partition key's column
    order_by: str               # '' for input order
    stream_name: str | None     # the Kinesis stream (mode kinesis)
    folder: str                 # the landing folder (mode landing)
    limit: int | None = None
    last: int | None = None     # only the last N records in order_by order
    shards: int | None = None   # mode kinesis: create the stream with this many shards when it does not exist
    numeric: tuple[str, ...] = ()   # the data set's numeric record fields (JSON numbers in the records)
    encoding: str = "UTF-8"     # CSV / JSON input: the files' character encoding


#: A JSON number as RFC 8259 writes it: such a text in a numeric column goes out as that number,
#: digit for digit; any other text goes out as a JSON string.
JSON_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"


def read_source(spark: SparkSession, path: str, fmt: str, *, encoding: str = "UTF-8"):
    """(the rows to send, the column each record's JSON text is in or None).

    CSV: every column as the text of the file (no inference: ``007`` stays ``007``, as the batch
    job reads it). JSON lines: each record is the line itself, parsed (with the batch job's type
    inference) only for ordering and the partition key. Parquet and Delta: typed as stored.
    """
    if fmt == "csv":
        df = (spark.read.option("header", "true").option("inferSchema", "false")
              .option("encoding", encoding).csv(path))
        return df, None
    if fmt == "json":
        from pyspark.sql import functions as F

        schema = spark.read.option("encoding", encoding).json(path).schema
        lines = spark.read.option("encoding", encoding).text(path).where(F.trim("value") != "")
        parsed = lines.select(F.col("value").alias(_LINE), F.from_json("value", schema).alias("_parsed"))
        return parsed.select(_LINE, *[F.col(f"_parsed.`{f.name}`").alias(f.name) for f in schema.fields]), _LINE
    return spark.read.format(fmt).load(path), None


_LINE = "_source_line"


def record_json(df, numeric: Sequence[str] = ()):
    """A Column: each row as one JSON object. Typed columns as ``to_json`` writes them; text
    columns named in ``numeric`` (the data set's numeric record fields) as the JSON number they
    spell when they spell one (the stream's decoder wants numbers there), else as a JSON string,
    so a value is never rewritten (``1e3`` stays ``1e3``, ``007`` a string).
    """
    import json

    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    options = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX", "ignoreNullFields": "true"}
    types = {f.name: f.dataType for f in df.schema.fields}
    if not any(isinstance(types[c], T.StringType) for c in numeric if c in types):
        # Microseconds kept, so the stream sees exactly the times the batch job reads.
        return F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]), options)
    parts = []
    for name in df.columns:
        col = F.col(f"`{name}`")
        whole = F.to_json(F.struct(col), options)  # {"name":value} or {} for a null
        pair = F.regexp_extract(whole, r"^\{(.*)\}$", 1)
        if name in numeric and isinstance(types[name], T.StringType):
            text = F.trim(col)
            pair = F.when(text.rlike(f"^{JSON_NUMBER}$"), F.concat(F.lit(json.dumps(name) + ":"), text)).otherwise(pair)
        parts.append(F.when(pair != "", pair))
    return F.concat(F.lit("{"), F.concat_ws(",", *parts), F.lit("}"))


def read_records(spark: SparkSession, path: str, fmt: str, *, order_by: str, key_column: str | None,
                 limit: int | None, last: int | None = None, numeric: Sequence[str] = (),
                 encoding: str = "UTF-8") -> Iterator[tuple[bytes, str | None]]:
    """Iterator of (JSON bytes, partition key) in order; the whole data set is never collected.

    Values go out as the source file has them (see :func:`read_source`, :func:`record_json`), so
    the stream sees the ids the batch job reads from the same file. ``numeric``: the data set's
    numeric record fields. Ordering a CSV by a column uses the type Spark infers for it (times and
    numbers in their order, not the text's), the records still carry the text.
    """
    from pyspark.sql import functions as F

    df, line = read_source(spark, path, fmt, encoding=encoding)
    columns = [c for c in df.columns if c != line]
    if key_column and key_column not in columns:
        raise InputError(f"partition key column {key_column!r} is not in {path} (it has {', '.join(columns)}): "
                         "name one with --partition-key COLUMN, or map the entity id "
                         "(--set schema.<dataset>.columns.<entity id>=<your column>)")
    order = None
    if order_by:
        if order_by not in columns:
            raise InputError(f"--order-by column {order_by!r} is not in {path} (it has {', '.join(columns)}): "
                             "--order-by COLUMN, or --order-by '' for the input's order")
        order = F.col(f"`{order_by}`")
        if fmt == "csv":
            inferred = (spark.read.option("header", "true").option("inferSchema", "true")
                        .option("encoding", encoding).csv(path).schema[order_by].dataType)
            order = order.cast(inferred)
        df = df.withColumn("_order", order)
        order = F.col("_order")
        df = df.orderBy(order)
    if last:
        if order is None:
            raise InputError("--last needs an order (--order-by COLUMN): the last records of what?")
        df = df.orderBy(order.desc()).limit(last).orderBy(order)
    if limit:
        df = df.limit(limit)
    json_col = F.col(line) if line else record_json(df.select(*[F.col(f"`{c}`") for c in columns]), numeric)
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
        fmt = input_format(options.source, options.fmt)
    except StorageError as exc:
        raise InputError(str(exc)) from None
    try:
        records = read_records(spark, options.source, fmt, order_by=options.order_by,
                               key_column=options.key_column, limit=options.limit, last=options.last,
                               numeric=options.numeric, encoding=options.encoding)
    except InputError:
        raise
    except Exception as exc:  # AnalysisException: a missing path, a bad file
        raise InputError(f"cannot read {fmt} input {options.source}: {str(exc).splitlines()[0]}") from None

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
