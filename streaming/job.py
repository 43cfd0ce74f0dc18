"""The stream stage: from the stream's settings to a running query and its summary.

:func:`run_stream` resolves what the run needs (the feature transform and engine, the scorer,
the alerter and its ledger, the source), fails on a setting that cannot work before a Spark
session is started, then runs the query until it stops and logs what it did.
"""
from __future__ import annotations

import copy
import importlib
import os
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from pyspark.sql import SparkSession

from features.datasets import dataset as dataset_named
from ingest.decode import payloads_from_kinesis, payloads_from_text
from runtime import fs
from runtime.errors import InputError
from runtime.progress import RunSummary, log
from runtime.config import Config
from runtime.sources import (KinesisSettings, StreamConfigError, at_timestamp_millis, check_source_trigger,
                             kinesis_session_settings, kinesis_shard_ids, kinesis_source, landing_source,
                             resolve_connector, write_stream)
from streaming.alerts import AlertDeadLetters, AlertFields, AlertOutbox, SentLedger, SnsAlerter
from streaming.batch import StreamSettings
from streaming.processor import MicroBatchProcessor
from streaming.sink import check_sink_target


@dataclass(frozen=True)
class StreamOptions:
    """One run's choices: the command line's, else ``stream.*`` (paths resolved by the job)."""

    source: str                 # landing | kinesis
    input: str | None           # the landing path, or the Kinesis stream name
    output: str
    checkpoint: str
    dead_letter: str
    trigger: str                # an interval like '5 seconds', or available-now
    alerts: bool
    engine: str                 # auto | incremental | spark
    run_seconds: float | None = None
    idle_seconds: float | None = None   # stop once no record has arrived for this long (after the first batch)


def load_callable(spec, what):
    """``module:function`` -> the function."""
    module_name, _, name = (spec or "").partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot load {what} {spec!r}: {exc}") from None


def feature_transform(config: Mapping):
    """(batch feature transform, lookback in days): the `features` job's own, or stream.features."""
    spec = config["stream"]["features"]
    if spec:
        return load_callable(spec, "stream.features")(config["dataset"], config)
    return dataset_named(config["dataset"]).feature_builder(config)


def scorer_factory(config: Mapping):
    """A function returning score(features_df) -> scored_df; called at the start of each micro-batch."""
    spec = config["stream"]["scorer"]
    if spec:
        factory = load_callable(spec, "stream.scorer")
        return lambda: factory(config)
    return champion_scorer_factory(config)


def champion_scorer_factory(config: Mapping):
    """Champion scoring that follows the registry: a micro-batch reads the champion pointers (small
    files) and the models are loaded again only when a pointer has moved, so a new champion is
    picked up by the next micro-batch without a restart and without reloading models every batch.
    """
    from models import registry
    from scoring.champions import registry_root
    from scoring.scorer import champion_scorer

    root = registry_root(config.path("models"), config["dataset"])
    cache = {}

    def factory():
        key = tuple((kind, (registry.champion(root, kind) or {}).get("version")) for kind in ("rcf", "logistic"))
        if cache.get("key") != key:
            cache["scorer"], cache["key"] = champion_scorer(config), key
            if "loaded" in cache:
                log("stream", f"champions changed: now {dict(key)}")
            cache["loaded"] = True
        return cache["scorer"]

    return factory


def incremental_engine(config: Mapping, engine: str, settings: StreamSettings):
    """The incremental feature engine for this run, or None for the Spark history engine."""
    features_spec = config["stream"]["features"]
    possible = dataset_named(settings.dataset).incremental and not features_spec
    if engine == "incremental" and not possible:
        raise InputError("stream.engine incremental works for a data set with an incremental twin of the batch "
                         f"features (stream.features unset); this run has {settings.dataset!r}"
                         + (f" and stream.features={features_spec!r}" if features_spec else "")
                         + ": use --engine spark")
    if engine == "spark" or not possible:
        return None
    try:
        return dataset_named(settings.dataset).incremental_features(
            config, keep_seconds=settings.history_seconds + settings.allowed_lateness_seconds)
    except ValueError as exc:
        raise InputError(f"stream.history_seconds: {exc}") from None


def build_alerter(config: Mapping, settings: StreamSettings) -> SnsAlerter:
    from runtime.aws import client

    conf = config["stream"]["alerts"]
    if not conf["topic_arn"]:
        raise InputError("alerts are on but stream.alerts.topic_arn is not set (or pass --no-alerts)")
    checkpoint = settings.checkpoint.rstrip("/")
    ledger = SentLedger(fs, f"{checkpoint}/alerts_sent")
    dead = AlertDeadLetters(fs, conf["dead_letter"] or f"{checkpoint}/alerts_dead_letters", settings.dataset)
    # one attempt per call: botocore would resend a batch after a read timeout, which SNS may have taken
    sns = client("sns", config["aws"], attempts=1, timeout_seconds=conf["timeout_seconds"])
    return SnsAlerter(sns, conf["topic_arn"], ledger, dataset=settings.dataset,
                      rate_per_second=conf["rate_per_second"], max_retries=conf["max_retries"],
                      outbox=AlertOutbox(fs, f"{checkpoint}/alerts_pending"), dead_letters=dead,
                      pending_seconds=conf["pending_seconds"])


def kinesis_settings(config: Mapping, options: StreamOptions) -> KinesisSettings:
    """The Kinesis source's settings: stream.kinesis.*, the endpoint (aws.endpoints.kinesis or
    aws.endpoint_url, else regional) and the run's trigger, which bounds a batch's read time.
    """
    from runtime.aws import endpoint_for

    conf = config["stream"]["kinesis"]
    consumer = conf["consumer_name"]
    if conf["consumer_type"] == "SubscribeToShard" and not consumer:
        consumer = f"{config['spark']['app_name']}-{options.input}"
    return KinesisSettings(stream_name=options.input, region=config["aws"]["region"],
                           endpoint_url=endpoint_for("kinesis", config["aws"]),
                           starting_position=conf["starting_position"], consumer_type=conf["consumer_type"],
                           consumer_name=consumer, max_fetch_records=conf["max_fetch_records"],
                           trigger=options.trigger)


def session_config(config: Mapping, options: StreamOptions) -> Config:
    """The config the run's Spark session starts from: ``stream.source`` is the run's source (so
    the session asks for the Kinesis connector's package) and, for Kinesis, ``spark.conf`` carries
    what the connector needs before the JVM starts (:func:`runtime.sources.kinesis_session_settings`);
    the driver's own environment gets its variables here, before the JVM is launched.
    """
    chosen = Config(copy.deepcopy(dict(config)))
    chosen["stream"]["source"] = options.source
    if options.source != "kinesis":
        return chosen
    settings, env = kinesis_session_settings(config["stream"]["kinesis"]["connector"],
                                             kinesis_settings(config, options).endpoint)
    extra = chosen["spark"]["conf"]
    for key, value in settings.items():
        if key.endswith("extraJavaOptions") and extra.get(key):
            value = f"{extra[key]} {value}"       # keep the user's JVM options
        extra[key] = value
    os.environ.update(env)
    return chosen


def _source(spark: SparkSession, config: Mapping, options: StreamOptions):
    """(The payload frame of the run's source, a description of it)."""
    conf = config["stream"]
    if options.source == "landing":
        # a glob (Firehose's YYYY/MM/DD/HH/ layout: <prefix>/*/*/*/*) may match nothing yet: Spark lists it every trigger
        if not any(c in options.input for c in "*?[{") and not fs.exists(options.input):
            raise InputError(f"landing path {options.input} does not exist")
        return payloads_from_text(landing_source(spark, options.input,
                                                 max_files_per_trigger=conf["max_files_per_trigger"])), "landing"
    s = kinesis_settings(config, options)
    try:
        connector = resolve_connector(spark, conf["kinesis"]["connector"])
        shard_ids = ()
        if connector == "qubole" and at_timestamp_millis(s.starting_position) is not None:
            from runtime.aws import client

            shard_ids = kinesis_shard_ids(client("kinesis", config["aws"]), s.stream_name)
        frame = kinesis_source(spark, s, connector=connector, shard_ids=shard_ids)
    except StreamConfigError as exc:
        raise InputError(str(exc)) from None
    return payloads_from_kinesis(frame), f"kinesis ({connector} connector, {s.endpoint})"


def await_stream(query, *, run_seconds: float | None, idle_seconds: float | None, records_seen: Callable[[], int],
                 poll_seconds: float = 0.5) -> None:
    """Wait until the query stops: Ctrl-C, ``run_seconds`` passed, or - with ``idle_seconds`` - no
    new record for that long once a first record has been processed (a replay that has ended).
    """
    started = time.monotonic()
    seen, last_change = records_seen(), time.monotonic()
    while query.isActive:
        if query.awaitTermination(poll_seconds):
            break
        now = time.monotonic()
        if run_seconds and now - started >= run_seconds:
            query.stop()
            break
        if idle_seconds:
            count = records_seen()
            if count != seen:
                seen, last_change = count, now
            elif count and now - last_change >= idle_seconds and not query.status.get("isTriggerActive"):
                log("stream", f"no new record for {idle_seconds:g} s: stopping the query")
                query.stop()
                break
    query.awaitTermination()


def run_stream(config: Mapping, options: StreamOptions, *, session: Callable[[Mapping], SparkSession],
               fault: Callable[[str, int], None] | None = None) -> RunSummary:
    """Run the stream until it stops (available-now), ``options.run_seconds`` pass, or Ctrl-C;
    the summary of this run's micro-batches (records in, events scored, alerts raised).

    ``session(config)`` starts Spark from the given config once the settings are known to work
    (:func:`session_config`); ``fault`` is the processor's fault hook (tests only).
    """
    try:
        check_source_trigger(options.source, options.trigger)
    except StreamConfigError as exc:
        raise InputError(str(exc)) from None
    if not options.input:
        raise InputError(f"no input: pass --input (a landing path or a Kinesis stream name for --source "
                         f"{options.source})")
    conf = config["stream"]
    dataset = config["dataset"]
    transform, lookback_days = feature_transform(config)
    settings = StreamSettings(
        dataset=dataset, schema_conf=config["schema"][dataset], output=options.output,
        checkpoint=options.checkpoint, dead_letter=options.dead_letter,
        history_seconds=int(conf["history_seconds"] or lookback_days * 86400),
        allowed_lateness_seconds=int(conf["allowed_lateness_seconds"]), max_record_bytes=int(conf["max_record_bytes"]),
        max_event_skew_seconds=int(conf["max_event_skew_seconds"]),
        warm_from=config.path("features") if conf["warm_start"] else None, warm_format=config["storage"]["format"])
    factory = scorer_factory(config)
    incremental = incremental_engine(config, options.engine, settings)
    alerter = build_alerter(config, settings) if options.alerts else None

    spark = session(session_config(config, options))
    try:
        check_sink_target(spark, settings.output, "output")
        check_sink_target(spark, settings.dead_letter, "dead letters")
    except StreamConfigError as exc:
        raise InputError(str(exc)) from None
    payloads, described = _source(spark, config, options)
    processor = MicroBatchProcessor(settings, transform=transform, scorer_factory=factory, alerter=alerter,
                                    alert_columns=AlertFields.for_dataset(dataset).columns(),
                                    incremental=incremental, fault=fault,
                                    # each action on a Kinesis batch frame would read the stream again
                                    persist_input=options.source == "kinesis",
                                    on_batch=lambda report: log("stream", report.line()))
    log("stream", f"{described} {options.input} -> Delta table {settings.output} (checkpoint "
                  f"{settings.checkpoint}, dead letters {settings.dead_letter}, trigger {options.trigger}, "
                  f"alerts {'on' if alerter else 'off'}, history {settings.history_seconds} s, "
                  f"{'incremental' if incremental else 'spark'} features)")
    query = write_stream(payloads, checkpoint=settings.checkpoint, trigger=options.trigger,
                         process_batch=processor, query_name=f"stream_{dataset}")
    try:
        await_stream(query, run_seconds=options.run_seconds, idle_seconds=options.idle_seconds,
                     records_seen=lambda: sum(r.records for r in processor.reports))
    except KeyboardInterrupt:
        log("stream", "interrupted: stopping the query (the checkpoint resumes it)")
        query.stop()
    reports = processor.reports
    scored, alerts, dead = (sum(r.scored for r in reports), sum(r.alerts_sent for r in reports),
                            sum(r.dead_letters for r in reports))
    topped_up = sum(r.sink_topped_up + r.dead_letters_topped_up for r in reports)
    alerts_dead = sum(r.alerts_dead for r in reports)
    alerts_pending = reports[-1].alerts_pending if reports else 0     # what still waits after the last batch
    undelivered = ""
    if alerts_dead or alerts_pending:
        undelivered = (f" ({alerts_pending:,} not delivered yet, kept for retry; {alerts_dead:,} in the alert "
                       f"dead letters {alerter.dead_letters.root if alerter else ''})")
    log("stream", f"{len(reports)} micro-batches: {scored:,} events scored, {alerts:,} alerts raised{undelivered}, "
                  f"{dead:,} dead letters" + (f", {topped_up:,} rows topped up in re-run batches" if topped_up else ""))
    return RunSummary("stream", dataset=dataset, rows_in=sum(r.records for r in reports), rows_out=scored,
                      alerts=alerts, extra={"batches": len(reports), "dead_letters": dead, "sink_topped_up": topped_up,
                                            "alerts_pending": alerts_pending, "alerts_dead": alerts_dead})
