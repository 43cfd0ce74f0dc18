"""The `stream` job: score events as they arrive, write them exactly once, alert on anomalies.

Reads a landing prefix of JSON-lines files (--source landing: what Kinesis Data Firehose writes to
S3, or the replay job's local folder) or a Kinesis stream (--source kinesis: the EMR 7.1+
`aws-kinesis` connector), decodes every record (bad JSON, missing fields, wrong types, oversized,
invalid values, late or duplicate events go to the dead letters with a reason), computes the SAME
features as the batch `features` job over a bounded per-entity history kept in the checkpoint,
scores them with the current champion models (re-read every micro-batch), writes the scored events
as Parquet partitioned by date/hour with an idempotent per-batch commit, and publishes SNS alerts
for anomalies with a sent-keys ledger, so a restart never duplicates a row or an alert. Prints per
micro-batch: records, events scored, alerts raised, dead letters and event-to-sink latency.

Submitted as `python -m jobs stream --conf FILE` or `spark-submit jobs/stream.py --conf FILE`.
"""
import importlib
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import InputError, base_parser, log, run_main
from streaming.processor import (AVAILABLE_NOW, HadoopFs, MicroBatchProcessor, StreamConfigError, StreamSettings,
                               check_trigger, kinesis_source, landing_source, write_stream)

PROG = "python -m jobs stream"
ALERT_COLUMNS = ("event_id", "transaction_id", "device_id", "customer_id", "site_id", "terminal_id",
                 "event_time", "amount", "risk", "rcf_score", "logistic_score", "rcf_version",
                 "logistic_version", "reasons")


def build_parser():
    parser = base_parser(PROG, __doc__)
    parser.add_argument("--source", choices=("landing", "kinesis"),
                        help="landing: JSON-lines files under --input; kinesis: the stream named by --input "
                             "(default stream.source)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="checkpoint folder of this sink; also holds the feature history and the alert "
                             "ledger (default stream.checkpoint)")
    parser.add_argument("--trigger", metavar="INTERVAL|available-now",
                        help=f"micro-batch interval like '5 seconds', or '{AVAILABLE_NOW}' to process what has "
                             "arrived and stop (default stream.trigger)")
    parser.add_argument("--dead-letter", metavar="PATH",
                        help="where undecodable, invalid, late and duplicate records go, with a reason "
                             "(default stream.dead_letter)")
    parser.add_argument("--alerts", dest="alerts", action="store_true", default=None,
                        help="publish SNS alerts for anomalies to stream.alerts.topic_arn (default stream.alerts.enabled)")
    parser.add_argument("--no-alerts", dest="alerts", action="store_false", help="do not publish alerts")
    parser.add_argument("--engine", choices=("auto", "incremental", "spark"),
                        help="feature engine: incremental keeps per-entity state in memory (transactions; fast), "
                             "spark runs the batch feature function over a history snapshot every micro-batch "
                             "(any data set); auto picks incremental when it can (default stream.engine)")
    parser.add_argument("--run-seconds", type=float, metavar="N",
                        help="stop the query cleanly after N seconds (default: run until stopped)")
    return parser


def _fill(template, config, dataset):
    return template.format(lake=config["storage"]["lake"].rstrip("/"), dataset=dataset)


def load_callable(spec, what):
    """``module:function`` -> the function."""
    module_name, _, name = (spec or "").partition(":")
    if not module_name or not name:
        raise InputError(f"{what} must be 'module:function', got {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot load {what} {spec!r}: {exc}") from None


def feature_transform(dataset, config):
    """(batch feature transform, lookback in days): the `features` job's own, or stream.features."""
    spec = config["stream"]["features"]
    if spec:
        return load_callable(spec, "stream.features")(dataset, config)
    from features.datasets import dataset as dataset_named

    return dataset_named(dataset).feature_builder(config)


def scorer_factory(config):
    """A function returning score(features_df) -> scored_df; called at the start of each micro-batch."""
    spec = config["stream"]["scorer"]
    if spec:
        factory = load_callable(spec, "stream.scorer")
        return lambda: factory(config)
    try:
        from scoring import core as scoring  # noqa: F401
    except ImportError as exc:
        raise InputError(f"champion scoring is not available ({exc}); set stream.scorer") from None
    return champion_scorer_factory(config)


def champion_scorer_factory(config):
    """Champion scoring that follows the registry: a micro-batch reads the champion pointers (small
    files) and the models are loaded again only when a pointer has moved, so a new champion is
    picked up by the next micro-batch without a restart and without reloading models every batch.
    """
    from models import registry
    from scoring import core as scoring

    root = scoring.registry_root(config.path("models"), config["dataset"])
    cache = {}

    def factory():
        key = tuple((kind, (registry.champion(root, kind) or {}).get("version")) for kind in ("rcf", "logistic"))
        if cache.get("key") != key:
            cache["scorer"], cache["key"] = scoring.champion_scorer(config), key
            if "loaded" in cache:
                log("stream", f"champions changed: now {dict(key)}")
            cache["loaded"] = True
        return cache["scorer"]

    return factory


def settings_from(args, config):
    dataset = config["dataset"]
    conf = config["stream"]
    source = args.source or conf["source"]
    if source == "landing":
        source_input = args.input or _fill(conf["landing"], config, dataset)
    else:
        source_input = args.input or conf["kinesis"]["stream_name"]
    trigger = args.trigger or conf["trigger"]
    try:
        check_trigger(trigger)
    except StreamConfigError as exc:
        raise InputError(str(exc)) from None
    transform, lookback_days = feature_transform(dataset, config)
    settings = StreamSettings(
        dataset=dataset,
        schema_conf=config["schema"][dataset],
        output=args.output or _fill(conf["output"], config, dataset),
        checkpoint=args.checkpoint or _fill(conf["checkpoint"], config, dataset),
        dead_letter=args.dead_letter or _fill(conf["dead_letter"], config, dataset),
        history_seconds=int(conf["history_seconds"] or lookback_days * 86400),
        allowed_lateness_seconds=int(conf["allowed_lateness_seconds"]),
        max_record_bytes=int(conf["max_record_bytes"]),
    )
    return source, source_input, trigger, transform, settings


def incremental_engine(args, config, settings):
    """The incremental feature engine for this run, or None for the Spark history engine."""
    engine = args.engine or config["stream"]["engine"]
    possible = settings.dataset == "transactions" and not config["stream"]["features"]
    if engine == "incremental" and not possible:
        raise InputError("stream.engine incremental works for the transactions data set with the batch features "
                         f"(stream.features unset); this run has {settings.dataset!r}"
                         + (f" and stream.features={config['stream']['features']!r}" if config["stream"]["features"] else "")
                         + ": use --engine spark")
    if engine == "spark" or not possible:
        return None
    from features.incremental import TransactionStreamFeatures

    conf = config["features"]["transactions"]
    try:
        return TransactionStreamFeatures(windows_days=conf["windows_days"], delay_days=conf["delay_days"],
                                         keep_seconds=settings.history_seconds + settings.allowed_lateness_seconds)
    except ValueError as exc:
        raise InputError(f"stream.history_seconds: {exc}") from None


def build_alerter(config, settings, fs):
    from streaming.alerts import SentLedger, SnsAlerter
    from runtime.aws import client

    conf = config["stream"]["alerts"]
    if not conf["topic_arn"]:
        raise InputError("alerts are on but stream.alerts.topic_arn is not set (or pass --no-alerts)")
    ledger = SentLedger(fs, f"{settings.checkpoint.rstrip('/')}/alerts_sent")
    return SnsAlerter(client("sns", config["aws"]), conf["topic_arn"], ledger, dataset=settings.dataset,
                      rate_per_second=conf["rate_per_second"], max_retries=conf["max_retries"])


def run(args, config):
    from ingest.decode import payloads_from_kinesis, payloads_from_text
    from runtime.spark import build_session

    source, source_input, trigger, transform, settings = settings_from(args, config)
    if not source_input:
        raise InputError(f"no input: pass --input (a landing path or a Kinesis stream name for --source {source})")
    factory = scorer_factory(config)
    alerts_on = config["stream"]["alerts"]["enabled"] if args.alerts is None else args.alerts

    spark = build_session(config)
    fs = HadoopFs(spark)
    alerter = build_alerter(config, settings, fs) if alerts_on else None
    if source == "landing":
        if not fs.exists(source_input):
            raise InputError(f"landing path {source_input} does not exist")
        stream_df = landing_source(spark, source_input,
                                   max_files_per_trigger=config["stream"]["max_files_per_trigger"])
        payloads = payloads_from_text
    else:
        kconf = config["stream"]["kinesis"]
        from runtime.aws import endpoint_for

        stream_df = kinesis_source(spark, stream_name=source_input, region=config["aws"]["region"],
                                   endpoint_url=endpoint_for("kinesis", config["aws"]),
                                   starting_position=kconf["starting_position"],
                                   consumer_type=kconf["consumer_type"])
        payloads = payloads_from_kinesis

    incremental = incremental_engine(args, config, settings)
    processor = MicroBatchProcessor(settings, transform=transform, scorer_factory=factory,
                                    alerter=alerter, alert_columns=ALERT_COLUMNS, incremental=incremental,
                                    on_batch=lambda report: log("stream", report.line()))
    log("stream", f"{source} {source_input} -> {settings.output} (checkpoint {settings.checkpoint}, "
                  f"dead letters {settings.dead_letter}, trigger {trigger}, alerts {'on' if alerter else 'off'}, "
                  f"history {settings.history_seconds} s, {'incremental' if incremental else 'spark'} features)")
    query = write_stream(payloads(stream_df), checkpoint=settings.checkpoint, trigger=trigger,
                         process_batch=processor, query_name=f"stream_{settings.dataset}")
    try:
        if args.run_seconds:
            query.awaitTermination(args.run_seconds)
            if query.isActive:
                query.stop()
        query.awaitTermination()
    except KeyboardInterrupt:
        log("stream", "interrupted: stopping the query (the checkpoint resumes it)")
        query.stop()
    reports = processor.reports
    log("stream", f"{len(reports)} micro-batches: {sum(r.scored for r in reports):,} events scored, "
                  f"{sum(r.alerts_sent for r in reports):,} alerts raised, "
                  f"{sum(r.dead_letters for r in reports):,} dead letters")
    return 0


def main(argv=None) -> int:
    return run_main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
