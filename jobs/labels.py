"""The `labels` job: merge a file of late labels (chargebacks, incident verdicts) into the labels table.

The file (--input; CSV with a header or JSON lines, --format or its name says which) has one row
per labelled event: the data set's event id (transaction_id, event_id), label (0/1) and known_at,
when the label became known (ISO-8601, UTC unless it names a zone; without the column, the file's
arrival time). Every row is checked; a file with rejected rows is not merged at all (exit 2, the
reasons and examples printed) unless --skip-bad-rows merges its valid rows. The labels table
(Delta, keyed by event id) keeps each event's newest label: merging a file again writes nothing.
A label for an event the feature table does not hold is stored and reported (count, examples).
The labels are then merged into the scores table's label column (when it is Delta) for
evaluation and the daily summary. The feature build uses each label only from its known_at on:
rebuild features from the first date the summary line names to see them.

Submitted as `python -m jobs labels --conf FILE --input FILE` or `spark-submit jobs/labels.py --conf FILE --input FILE`.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import job_main
from runtime.errors import InputError
from runtime.spark import build_session


def options(parser):
    parser.add_argument("--format", choices=("csv", "json"),
                        help="the label file's format (default: from its name: .csv, or .json/.jsonl/.ndjson)")
    parser.add_argument("--features", metavar="PATH",
                        help="the feature table the event ids are looked up in (default paths.features)")
    parser.add_argument("--scores", metavar="PATH",
                        help="the scores table whose label column gets the labels (default paths.scores)")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="merge the valid rows of a file that has rejected ones (they are still reported)")


def run(args, config):
    from features.labels import merge_label_file

    if not args.input:
        raise InputError("--input FILE is required: the file of labels to merge")
    return merge_label_file(build_session(config), config, source=args.input,
                            labels=args.output or config.path("labels"),
                            features=args.features or config.path("features"),
                            scores=args.scores or config.path("scores"), fmt=args.format,
                            skip_bad_rows=args.skip_bad_rows)


main = job_main("labels", __doc__, run, options,
                input_help="the label file (CSV or JSON lines)",
                output_help="the labels table (default paths.labels; Delta)")

if __name__ == "__main__":
    raise SystemExit(main())
