"""The `maintain` job: OPTIMIZE and VACUUM the data set's Delta tables, keeping every training
snapshot the model registry names readable.

Tables: the feature table, quarantine, scores, labels (paths.labels, when the config has it),
the stream sink and dead letters, and each summary table (<paths.summary>/<table>); those that
are not Delta tables (yet) are named and skipped. OPTIMIZE compacts each table's small files;
VACUUM then deletes the files no version within the retention needs. The retention is the age
of the oldest snapshot a registry version was trained on (maintain.keep: every version listed
by `python -m jobs models`, or the champions only) plus maintain.margin_hours, and never less
than maintain.retention_hours (Delta's own default, 7 days, by default), so `train --as-of`
a recorded version still reads after it. Delta refuses retentions under 7 days unless its
check is off: this job turns it off for its own VACUUM, having computed the retention. A kept
snapshot older than a table's delta.logRetentionDuration (30 days by default) lengthens that
property, so its transaction log stays too.

Printed per table: files compacted, the retention, files deleted and the versions kept.
Submitted as `python -m jobs maintain --conf FILE [--dataset D]` or `spark-submit
jobs/maintain.py --conf FILE`; `make maintain` runs it for both data sets.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import add_registry_option, job_main
from jobs.train import labels_path
from runtime.spark import build_session

# config paths of the tables, by the name printed
TABLES = {"features": "features", "quarantine": "quarantine", "scores": "scores", "summary": "summary",
          "stream": "stream.output", "dead_letter": "stream.dead_letter"}


def options(parser):
    parser.add_argument("--keep", choices=("all", "champions"),
                        help="whose training snapshots stay readable: every registry version or the champions "
                             "(default maintain.keep)")
    add_registry_option(parser)


def run(args, config):
    from models.snapshots import maintain_tables
    from scoring.champions import registry_root

    conf = config.maintain
    locations = {name: config.path(key) for name, key in TABLES.items()}
    if labels_path(config):
        locations["labels"] = labels_path(config)
    if args.input:
        locations = {"input": args.input}
    summary = maintain_tables(
        build_session(config), locations, registry_root=registry_root(args.registry or config.path("models"),
                                                                      config.dataset),
        keep=args.keep or conf.keep, minimum_hours=conf.retention_hours, margin_hours=conf.margin_hours,
        listing_tasks=config.spark.shuffle_partitions)
    summary.dataset = config.dataset
    return summary


main = job_main("maintain", __doc__, run, options,
                input_help="one table (or folder of tables) to maintain instead of the data set's",
                output_help="not used")

if __name__ == "__main__":
    raise SystemExit(main())
