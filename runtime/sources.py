"""Structured Streaming sources and the one function that starts a query (I/O only).

Sources (each returns a streaming frame that :mod:`ingest.decode` turns into payloads):

* :func:`kinesis_source` - a Kinesis stream through either connector: ``aws-kinesis`` (EMR 7.1+
  bundles it; elsewhere its public jar) or the Maven Central one (``format("kinesis")``), with
  every option each needs (:func:`aws_kinesis_options`, :func:`qubole_kinesis_options`) and the
  settings the JVM needs before it starts (:func:`kinesis_session_settings`);
* :func:`landing_source` - a prefix of JSON-lines files read as *text*, so a bad line reaches the
  decoder (and the dead letters) instead of being dropped by a JSON reader.

:func:`write_stream` is the only place that starts a query: it refuses batch frames and holds the
trigger, output mode and checkpoint.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

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


# --------------------------------------------------------------------------- Kinesis

KINESIS_CONNECTORS = ("aws", "qubole", "auto")
KINESIS_FORMATS = {"aws": "aws-kinesis", "qubole": "kinesis"}
# The Maven Central connector (spark.kinesis_package; make install caches it).
QUBOLE_PACKAGE = "com.qubole.spark:spark-sql-kinesis_2.12:1.2.0_spark-3.0"
# The aws-kinesis connector refuses a per-shard fetch time under 10 s.
AWS_MIN_FETCH_SECONDS = 10
# GetRecords returns at most 10,000 records per call.
MAX_RECORDS_PER_GET = 10000
_UNITS = {"ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001, "s": 1, "second": 1, "seconds": 1,
          "min": 60, "minute": 60, "minutes": 60}
_AT_TIMESTAMP = re.compile(r"^AT_TIMESTAMP\s+(\S+)$")


def trigger_seconds(trigger: str) -> float | None:
    """The interval of a processing-time trigger in seconds (``None`` for available-now)."""
    check_trigger(trigger)
    if trigger == AVAILABLE_NOW:
        return None
    number, unit = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(\w+)\s*$", trigger).groups()
    return float(number) * _UNITS[unit]


def is_loopback(endpoint: str) -> bool:
    """True for an endpoint on this machine (a local server such as moto): those need CBOR off."""
    from urllib.parse import urlparse

    host = (urlparse(endpoint).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def at_timestamp_millis(starting_position: str) -> int | None:
    """Epoch milliseconds of an ``AT_TIMESTAMP <ISO time>`` position, None for any other position."""
    import datetime as dt

    found = _AT_TIMESTAMP.match(starting_position.strip())
    if not found:
        return None
    text = found.group(1).replace("Z", "+00:00")
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise StreamConfigError(f"stream.kinesis.starting_position {starting_position!r}: the time must be ISO 8601 "
                                "like 2020-01-01T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class KinesisSettings:
    """What the Kinesis source needs, connector-neutral (resolved from config by the stream stage)."""

    stream_name: str
    region: str
    endpoint_url: str | None = None          # None: the regional endpoint
    starting_position: str = "TRIM_HORIZON"  # LATEST | TRIM_HORIZON | AT_TIMESTAMP <ISO time>
    consumer_type: str = "GetRecords"        # GetRecords | SubscribeToShard (aws connector only)
    consumer_name: str | None = None         # SubscribeToShard's registered consumer
    max_fetch_records: int | None = None     # records per shard per micro-batch
    trigger: str | None = None               # the query's trigger: bounds the time a batch reads

    @property
    def endpoint(self) -> str:
        return kinesis_endpoint(self.region, self.endpoint_url)


def aws_kinesis_options(s: KinesisSettings) -> dict[str, str]:
    """The ``aws-kinesis`` connector's reader options (EMR 7.1+ bundles it; elsewhere its public jar).

    ``kinesis.endpointUrl`` is always set: the connector requires it. ``kinesis.kinesisRegion``
    (the signing region) too, or the connector parses it from the endpoint's host, which gives
    nonsense for a local endpoint such as 127.0.0.1. SubscribeToShard needs a consumer name.
    A micro-batch is bounded by ``maxFetchRecordsPerShard`` and ``maxFetchTimePerShardSec`` (the
    trigger interval, at least the connector's 10 s), never by the trigger itself.
    """
    options = {
        "kinesis.region": s.region,
        "kinesis.kinesisRegion": s.region,
        "kinesis.endpointUrl": s.endpoint,
        "kinesis.streamName": s.stream_name,
        "kinesis.consumerType": s.consumer_type,
        "kinesis.startingPosition": s.starting_position,
    }
    if at_timestamp_millis(s.starting_position) is not None:   # checked; the connector parses the text itself
        options["kinesis.startingPosition"] = " ".join(s.starting_position.split())
    if s.consumer_type == "SubscribeToShard":
        if not s.consumer_name:
            raise StreamConfigError("kinesis consumer_type SubscribeToShard needs stream.kinesis.consumer_name "
                                    "(one registered consumer per application)")
        options["kinesis.consumerName"] = s.consumer_name
    if s.max_fetch_records:
        options["kinesis.maxFetchRecordsPerShard"] = str(int(s.max_fetch_records))
        options["kinesis.getRecords.numberOfRecordsPerFetch"] = str(min(int(s.max_fetch_records), MAX_RECORDS_PER_GET))
    seconds = trigger_seconds(s.trigger) if s.trigger else None
    if seconds is not None:
        options["kinesis.maxFetchTimePerShardSec"] = str(max(AWS_MIN_FETCH_SECONDS, math.ceil(seconds)))
    return options


def qubole_kinesis_options(s: KinesisSettings, shard_ids: Sequence[str] = ()) -> dict[str, str]:
    """The Maven Central connector's (``format("kinesis")``) reader options.

    It takes ``endpointUrl`` and ``regionName`` (the signing region), ``startingposition`` as
    latest/trim_horizon or a JSON map shard -> position (``AT_TIMESTAMP`` in epoch milliseconds,
    so ``shard_ids`` must list the stream's open shards for it). A micro-batch reads each shard
    for at most the trigger interval (``kinesis.executor.maxFetchTimeInMs``) and
    ``kinesis.executor.maxFetchRecordsPerShard`` records; empty batches are skipped. Credentials
    come from the SDK's default chain. It has no SubscribeToShard.
    """
    if s.consumer_type != "GetRecords":
        raise StreamConfigError("the Maven Central Kinesis connector (stream.kinesis.connector qubole) reads with "
                                f"GetRecords only, not {s.consumer_type}: use connector aws for SubscribeToShard")
    millis = at_timestamp_millis(s.starting_position)
    if millis is None:
        position = s.starting_position.strip().lower()
    else:
        if not shard_ids:
            raise StreamConfigError("AT_TIMESTAMP with the Maven Central connector needs the stream's shard ids")
        shards = {shard: {"iteratorType": "AT_TIMESTAMP", "iteratorPosition": str(millis)} for shard in shard_ids}
        position = json.dumps({"metadata": {"streamName": s.stream_name, "batchId": "0"}, **shards})
    options = {
        "streamName": s.stream_name,
        "endpointUrl": s.endpoint,
        "regionName": s.region,
        "startingposition": position,
        # the SDK's default chain (environment, profile, container and instance roles) rather than
        # its instance-profile-only default, which cannot work off EC2
        "awsUseInstanceProfile": "false",
        "kinesis.client.avoidEmptyBatches": "true",
    }
    if s.max_fetch_records:
        # It stops calling GetRecords once it has read MORE than maxFetchRecordsPerShard, but hands
        # out the whole last call: with (limit - per call) as that bound, a batch reads <= limit.
        per_call = min(int(s.max_fetch_records), MAX_RECORDS_PER_GET)
        options["kinesis.executor.maxFetchRecordsPerShard"] = str(int(s.max_fetch_records) - per_call)
        options["kinesis.executor.maxRecordPerRead"] = str(per_call)
    seconds = trigger_seconds(s.trigger) if s.trigger else None
    if seconds is not None:
        options["kinesis.executor.maxFetchTimeInMs"] = str(max(1000, int(seconds * 1000)))
    return options


def kinesis_options(s: KinesisSettings, connector: str = "aws", shard_ids: Sequence[str] = ()) -> dict[str, str]:
    """The reader options of ``connector`` (aws | qubole) for the settings ``s``."""
    if connector == "aws":
        return aws_kinesis_options(s)
    if connector == "qubole":
        return qubole_kinesis_options(s, shard_ids)
    raise StreamConfigError(f"stream.kinesis.connector must be aws or qubole here (auto is resolved once Spark runs), "
                            f"got {connector!r}")


def kinesis_session_settings(connector: str, endpoint: str) -> tuple[dict[str, str], dict[str, str]]:
    """(Spark settings, driver environment) the Kinesis connector needs before the JVM starts.

    CBOR off for a loopback endpoint only (moto and other local servers answer JSON, not CBOR;
    real Kinesis keeps the faster CBOR): SDK v1 clients (the Maven Central connector's shaded
    SDK) read the environment variable ``AWS_CBOR_DISABLE`` - set in the driver's own environment
    and, for executors, ``spark.executorEnv``; SDK v2 clients (aws-kinesis) the system property
    ``aws.cborEnabled``. Speculative execution stays off (two tasks must never read one shard).
    """
    settings = {"spark.speculation": "false"}
    env: dict[str, str] = {}
    if is_loopback(endpoint):
        if connector in ("qubole", "auto"):
            settings["spark.executorEnv.AWS_CBOR_DISABLE"] = "true"
            env["AWS_CBOR_DISABLE"] = "true"
        if connector in ("aws", "auto"):
            settings["spark.driver.extraJavaOptions"] = "-Daws.cborEnabled=false"
            settings["spark.executor.extraJavaOptions"] = "-Daws.cborEnabled=false"
    return settings, env


def connector_available(spark: SparkSession, name: str) -> bool:
    """Whether the JVM finds a data source registered as ``name`` (e.g. aws-kinesis)."""
    jvm = spark.sparkContext._jvm
    try:
        jvm.org.apache.spark.sql.execution.datasources.DataSource.lookupDataSource(
            name, spark._jsparkSession.sessionState().conf())
        return True
    except Exception:  # py4j error: ClassNotFoundException / DATA_SOURCE_NOT_FOUND
        return False


def resolve_connector(spark: SparkSession, connector: str) -> str:
    """Aws or qubole: ``auto`` is aws-kinesis when its class is on the classpath (EMR 7.1+, or its
    jar added with ``--jars``), else the Maven Central one; a named connector must be there.
    """
    if connector == "auto":
        return "aws" if connector_available(spark, KINESIS_FORMATS["aws"]) else "qubole"
    if connector not in KINESIS_FORMATS:
        raise StreamConfigError(f"stream.kinesis.connector must be one of {', '.join(KINESIS_CONNECTORS)}, "
                                f"got {connector!r}")
    return connector


def kinesis_shard_ids(kinesis_client, stream_name: str) -> list[str]:
    """The stream's open shards (ListShards, paged)."""
    shards, token = [], None
    while True:
        page = (kinesis_client.list_shards(NextToken=token) if token
                else kinesis_client.list_shards(StreamName=stream_name))
        shards += [s["ShardId"] for s in page["Shards"]
                   if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})]
        token = page.get("NextToken")
        if not token:
            return shards


def kinesis_source(spark: SparkSession, s: KinesisSettings, *, connector: str = "aws",
                   shard_ids: Sequence[str] = ()) -> DataFrame:
    """A Kinesis stream as a streaming frame through ``connector`` (aws: ``format("aws-kinesis")``;
    qubole: ``format("kinesis")``), with :func:`kinesis_options`.

    Both connectors give the same columns: ``data`` (binary), ``streamName``, ``partitionKey``,
    ``sequenceNumber``, ``approximateArrivalTimestamp``.
    """
    reader = spark.readStream.format(KINESIS_FORMATS.get(connector, connector))
    for key, value in kinesis_options(s, connector, shard_ids).items():
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


def ensure_kinesis_stream(kinesis_client, stream_name: str, shards: int, *, timeout_s: float = 120.0,
                          sleep: Callable[[float], None] | None = None) -> bool:
    """Create ``stream_name`` with ``shards`` shards unless it exists, and wait until it is ACTIVE;
    True when it was created here. An existing stream keeps its shard count.
    """
    import time

    sleep = sleep or time.sleep
    created = False
    try:
        kinesis_client.describe_stream_summary(StreamName=stream_name)
    except kinesis_client.exceptions.ResourceNotFoundException:
        kinesis_client.create_stream(StreamName=stream_name, ShardCount=int(shards))
        created = True
    deadline = time.monotonic() + timeout_s
    while True:
        status = kinesis_client.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]["StreamStatus"]
        if status == "ACTIVE":
            return created
        if time.monotonic() > deadline:
            raise StreamConfigError(f"Kinesis stream {stream_name} is still {status} after {timeout_s:.0f} s")
        sleep(0.5)
