"""Structured Streaming sources and the one function that starts a query (I/O only).

Sources (each returns a streaming frame that :mod:`ingest.decode` turns into payloads):

* :func:`kinesis_source` - ``spark.readStream.format("aws-kinesis")`` (EMR 7.1+ image only);
* :func:`landing_source` - a prefix of JSON-lines files read as *text*, so a bad line reaches the
  decoder (and the dead letters) instead of being dropped by a JSON reader.

:func:`write_stream` is the only place that starts a query: it refuses batch frames and holds the
trigger, output mode and checkpoint.
"""
from __future__ import annotations

import re
from typing import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

AVAILABLE_NOW = "available-now"
_INTERVAL = re.compile(r"^\s*\d+(\.\d+)?\s*(ms|millisecond|milliseconds|s|second|seconds|min|minute|minutes)\s*$")


class StreamConfigError(ValueError):
    """A stream setting that cannot work (trigger, checkpoint, a batch frame given to a query)."""


def landing_source(spark: SparkSession, path: str, *, max_files_per_trigger: int) -> DataFrame:
    """JSON-lines files under ``path`` as a streaming text frame (``value``; ``_metadata`` hidden).

    Files must appear atomically (written elsewhere, then renamed in): Firehose does this on S3
    and the replay job's landing mode writes a hidden temporary file first.
    """
    return (spark.readStream.format("text")
            .option("maxFilesPerTrigger", int(max_files_per_trigger))
            .load(path))


def kinesis_endpoint(region: str, endpoint_url: str | None = None) -> str:
    """The Kinesis endpoint the connector calls: ``endpoint_url`` when one is configured (a local
    server), else the regional endpoint ``https://kinesis.<region>.amazonaws.com``.
    """
    if endpoint_url:
        return endpoint_url
    if not region:
        raise StreamConfigError("the Kinesis source needs aws.region (e.g. us-east-1) to build its endpoint")
    return f"https://kinesis.{region}.amazonaws.com"


def kinesis_options(*, stream_name: str, region: str, endpoint_url: str | None, starting_position: str,
                    consumer_type: str = "GetRecords", max_fetch_records: int | None = None) -> dict[str, str]:
    """The ``aws-kinesis`` connector's reader options.

    ``kinesis.endpointUrl`` is always set: the connector requires it (the stream fails at start
    without it). ``kinesis.kinesisRegion`` (the signing region) is set too, or the connector parses
    it from the endpoint's host, which gives nonsense for a local endpoint such as 127.0.0.1.
    """
    options = {
        "kinesis.region": region,
        "kinesis.kinesisRegion": region,
        "kinesis.endpointUrl": kinesis_endpoint(region, endpoint_url),
        "kinesis.streamName": stream_name,
        "kinesis.consumerType": consumer_type,
        "kinesis.startingPosition": starting_position,
    }
    if max_fetch_records:
        options["kinesis.getRecords.numberOfRecordsPerFetch"] = str(int(max_fetch_records))
    return options


def kinesis_source(spark: SparkSession, *, stream_name: str, region: str, endpoint_url: str | None,
                   starting_position: str, consumer_type: str = "GetRecords",
                   max_fetch_records: int | None = None) -> DataFrame:
    """The EMR ``aws-kinesis`` connector (in the EMR 7.1+ image; not available elsewhere), with
    :func:`kinesis_options`.

    Columns: ``data`` (binary), ``streamName``, ``partitionKey``, ``sequenceNumber``,
    ``approximateArrivalTimestamp``.
    """
    reader = spark.readStream.format("aws-kinesis")
    for key, value in kinesis_options(stream_name=stream_name, region=region, endpoint_url=endpoint_url,
                                      starting_position=starting_position, consumer_type=consumer_type,
                                      max_fetch_records=max_fetch_records).items():
        reader = reader.option(key, value)
    return reader.load()


def check_trigger(trigger: str) -> str:
    """``available-now`` or a processing-time interval like ``5 seconds``."""
    if trigger == AVAILABLE_NOW or _INTERVAL.match(trigger or ""):
        return trigger
    raise StreamConfigError(f"trigger must be an interval like '5 seconds' or '{AVAILABLE_NOW}', got {trigger!r}")


def check_source_trigger(source: str, trigger: str) -> str:
    """``trigger`` if ``source`` can run with it: the Kinesis connector does not support
    ``Trigger.AvailableNow`` (its documentation says so; Spark 3.5 would wrap the source in a
    fallback that reads past the end it promised), so ``kinesis`` needs a processing-time interval.
    """
    check_trigger(trigger)
    if source == "kinesis" and trigger == AVAILABLE_NOW:
        raise StreamConfigError(
            f"--trigger {AVAILABLE_NOW} does not work with --source kinesis: the Kinesis connector does not "
            "support Trigger.AvailableNow; use a processing-time trigger such as --trigger '30 seconds' "
            "(with --run-seconds N for a run that must end)")
    return trigger


def write_stream(df: DataFrame, *, checkpoint: str, trigger: str,
                 process_batch: Callable[[DataFrame, int], None], query_name: str | None = None) -> StreamingQuery:
    """Start the one streaming query of a sink: foreachBatch, append mode, its own checkpoint."""
    if not df.isStreaming:
        raise StreamConfigError("write_stream needs a streaming DataFrame (spark.readStream...); "
                                "write batch frames with runtime.storage.write_table")
    if not checkpoint:
        raise StreamConfigError("a streaming sink needs a checkpoint folder")
    writer = (df.writeStream.foreachBatch(process_batch)
              .outputMode("append")
              .option("checkpointLocation", checkpoint))
    if check_trigger(trigger) == AVAILABLE_NOW:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=trigger)
    if query_name:
        writer = writer.queryName(query_name)
    return writer.start()
