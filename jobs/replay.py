"""The `replay` job: send a data set into a Kinesis stream (or a landing folder) at a chosen rate.

Reads a data set (Parquet, CSV or JSON lines; --input, default the raw table of the dataset), turns
each row into one JSON document and either puts it into a Kinesis stream with PutRecords
(--mode kinesis, creating the stream with stream.kinesis.shards shards when it does not exist:
--batch-size records per call, at most 500 and 5 MiB; --rate records per second;
the partition key is a column's value; records the stream refuses are retried with exponential
backoff) or writes JSON-lines files of --batch-size records into a landing folder at the rate
(--mode landing: what Kinesis Data Firehose would deliver to S3; the stream job's local demo
source). Ends with a report of records sent and failed; exits 1 when any record failed.

Submitted as `python -m jobs replay --conf FILE` or `spark-submit jobs/replay.py --conf FILE`.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import job_main


def options(parser):
    parser.add_argument("--mode", choices=("kinesis", "landing"),
                        help="kinesis: PutRecords into --stream; landing: JSON-lines files into --output "
                             "(default stream.replay.mode)")
    parser.add_argument("--stream", metavar="NAME", help="Kinesis stream name (default stream.replay.stream_name)")
    parser.add_argument("--format", choices=("parquet", "csv", "json"),
                        help="input format (default schema.<dataset>.format; auto: from the input's extension)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="records per PutRecords call (<= 500) or per landing file (default stream.replay.batch_size)")
    parser.add_argument("--rate", type=float, metavar="R",
                        help="records per second, 0 for as fast as possible (default stream.replay.rate)")
    parser.add_argument("--partition-key", metavar="COLUMN",
                        help="column whose value is the partition key (default the dataset's entity id)")
    parser.add_argument("--order-by", metavar="COLUMN",
                        help="send in this column's order; '' for input order (default stream.replay.order_by)")
    parser.add_argument("--limit", type=int, metavar="N", help="send only the first N records")
    parser.add_argument("--last", type=int, metavar="N",
                        help="send only the last N records in --order-by order (the newest events: a stream "
                             "started after the batch jobs, warm from their tables)")
    parser.add_argument("--shards", type=int, metavar="N",
                        help="--mode kinesis: create the stream with N shards when it does not exist "
                             "(default stream.kinesis.shards; 0: never create it)")


def run(args, config):
    from features.datasets import dataset
    from runtime.errors import InputError

    if args.last is not None and (args.limit is not None or args.last < 1):
        raise InputError("--last N takes N >= 1 and cannot be combined with --limit")
    from runtime.spark import build_session
    from streaming.replay import ReplayOptions, run_replay

    conf = config.stream.replay
    mode = args.mode or conf.mode
    schema_conf = config["schema"][config.dataset]
    mapped = schema_conf["columns"]   # the defaults name canonical columns: use the input's names for them

    def source_name(column):
        return (mapped.get(column) or column) if column else column

    chosen = ReplayOptions(
        mode=mode, source=args.input or config.path("raw"), fmt=args.format or schema_conf["format"],
        batch_size=args.batch_size or conf.batch_size, rate=conf.rate if args.rate is None else args.rate,
        key_column=args.partition_key or conf.partition_key or source_name(dataset(config.dataset).entity),
        order_by=source_name(conf.order_by) if args.order_by is None else args.order_by,
        stream_name=args.stream or conf.stream_name,
        folder=args.output or config.path("stream.landing"), limit=args.limit, last=args.last,
        shards=config.stream.kinesis.shards if args.shards is None else args.shards,
        numeric=tuple(dataset(config.dataset).record_fields(schema_conf)[1]), encoding=schema_conf["encoding"])
    return run_replay(chosen, config["stream"]["replay"], config["aws"], session=lambda: build_session(config))


main = job_main("replay", __doc__, run, options)

if __name__ == "__main__":
    raise SystemExit(main())
