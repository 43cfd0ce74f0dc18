"""The `stream` job: score events as they arrive, write them exactly once, alert on anomalies.

Reads a landing prefix of JSON-lines files (--source landing: what Kinesis Data Firehose writes to
S3, or the replay job's local folder) or a Kinesis stream (--source kinesis: the `aws-kinesis`
connector bundled in EMR 7.1+, or the Maven Central one elsewhere: stream.kinesis.connector),
decodes every record (bad JSON, missing fields, wrong types, oversized,
invalid values, late, future-dated or duplicate events go to the dead letters with a reason),
computes the SAME features as the batch `features` job over a bounded per-entity history kept in
the checkpoint (a new stream seeds it from the batch feature table: stream.warm_start), scores them
with the current champion models (re-read every micro-batch), appends the scored events to a Delta
table partitioned by date/hour (one idempotent Delta commit per micro-batch), and publishes SNS
alerts for anomalies with a ledger, so a restart never duplicates a row or an alert; an alert SNS
does not take is retried by later micro-batches or written to the alert dead letters with the SNS
error (README "Alerts: what is guaranteed"). Prints per micro-batch: records, events scored,
alerts raised (and any not delivered), dead letters and event-to-sink latency.

Submitted as `python -m jobs stream --conf FILE` or `spark-submit jobs/stream.py --conf FILE`.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import job_main
from runtime.sources import AVAILABLE_NOW


def options(parser):
    parser.add_argument("--source", choices=("landing", "kinesis"),
                        help="landing: JSON-lines files under --input; kinesis: the stream named by --input "
                             "(default stream.source)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="checkpoint folder of this sink; also holds the feature history and the alert "
                             "ledger (default stream.checkpoint)")
    parser.add_argument("--trigger", metavar="INTERVAL|available-now",
                        help=f"micro-batch interval like '5 seconds', or '{AVAILABLE_NOW}' to process what has "
                             "arrived and stop (--source landing only: the Kinesis connector does not support it; "
                             "use an interval with --run-seconds) (default stream.trigger)")
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
    parser.add_argument("--stop-when-idle", type=float, metavar="N",
                        help="stop the query cleanly once no new record has arrived for N seconds after the "
                             "first one (a replay that has ended); works with --run-seconds, first one wins")


def run(args, config, fault=None):
    """``fault`` is the processor's fault hook (tests/integration/stream_with_fault.py sets it: ``main(argv, run=...)``)."""
    from runtime.spark import build_session
    from streaming.job import StreamOptions, run_stream

    conf = config.stream
    source = args.source or conf.source
    default_input = config.path("stream.landing") if source == "landing" else conf.kinesis.stream_name
    chosen = StreamOptions(
        source=source, input=args.input or default_input,
        output=args.output or config.path("stream.output"),
        checkpoint=args.checkpoint or config.path("stream.checkpoint"),
        dead_letter=args.dead_letter or config.path("stream.dead_letter"),
        trigger=args.trigger or conf.trigger,
        alerts=conf.alerts.enabled if args.alerts is None else args.alerts,
        engine=args.engine or conf.engine, run_seconds=args.run_seconds,
        idle_seconds=args.stop_when_idle)
    return run_stream(config, chosen, session=build_session, fault=fault)


main = job_main("stream", __doc__, run, options)

if __name__ == "__main__":
    raise SystemExit(main())
