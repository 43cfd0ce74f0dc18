"""The `features` job: validate raw events and write the feature table, partitioned by date.

Reads the raw input (schema.<dataset>.format: parquet, csv, json lines or delta, by default from
the input's extension; CSV and JSON in schema.<dataset>.encoding; column names mapped by
schema.<dataset>.columns), sends every row that fails validation to the quarantine table with a
reason (undecodable bytes, too many or too few fields, unparseable time, missing id, non-numeric
(thousands separators, stray characters) / negative / NaN / infinite values, duplicate ids),
prints rows in = valid + quarantined, then builds the point-in-time features and writes them
partitioned by `date`. With --from-date/--to-date only those dates are rebuilt (history before
them is read as needed); other dates stay as they are. With a labels table (--labels, written by
the labels job) the terminal features count each late label from the time it became known, and
the label column is each event's latest label. Both tables are written in storage.format; a
run's rejects replace the earlier rejects of the same input and of the dates it rebuilds. An empty
or header-only input, or a corrupt file, stops the run naming the file (exit 2).

Dates with no raw rows: when a date of --from-date..--to-date has no valid raw rows, the job names
the empty dates, writes nothing (neither features nor quarantine) and exits 3. With --allow-empty
it exits 0 instead and builds the dates of the range that have rows (status done, the empty dates
listed as empty_dates in the last line).

Submitted as `python -m jobs features --conf FILE` or `spark-submit jobs/build_features.py --conf FILE`.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import job_main, parse_range
from runtime.spark import build_session


def options(parser):
    parser.add_argument("--quarantine", metavar="PATH",
                        help="where rejected rows go, with a reason column (default paths.quarantine)")
    parser.add_argument("--labels", metavar="PATH",
                        help="the labels table of late labels (default paths.labels; none there: the raw labels only)")
    parser.add_argument("--from-date", metavar="YYYY-MM-DD",
                        help="first date to rebuild (default features.from_date; none: every date)")
    parser.add_argument("--to-date", metavar="YYYY-MM-DD",
                        help="last date to rebuild, inclusive (default features.to_date or --from-date)")


def run(args, config):
    from features.build import build_feature_table

    first, last = parse_range(args.from_date or config["features"]["from_date"],
                              args.to_date or config["features"]["to_date"], "--from-date", "--to-date")
    return build_feature_table(build_session(config), config, source=args.input or config.path("raw"),
                        output=args.output or config.path("features"),
                        quarantine=args.quarantine or config.path("quarantine"), first=first, last=last,
                        allow_empty=args.allow_empty, labels=args.labels or config.path("labels"))


main = job_main("features", __doc__, run, options,
                input_help="raw input (default paths.raw; format from schema.<dataset>.format, auto: the extension)",
                output_help="the feature table (default paths.features), partitioned by date")

if __name__ == "__main__":
    raise SystemExit(main())
