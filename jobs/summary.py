"""The `summary` job: daily summary of the scores table, QuickSight export + manifests, Athena DDL,
and a self-contained HTML report.

For one date (--date, default summary.date or the latest date in the scores table) it writes,
under the summary root (--output, default paths.summary):
  <table>/date=YYYY-MM-DD/        Parquet summary tables: daily (counts of the last
                                  summary.history_days days), hourly (anomalies per hour),
                                  entities, locations (counts and max risk), top_entities (with top
                                  reasons), histogram (score bins by label), drift (PSI of every
                                  score and of every feature (from the feature table, --features)
                                  vs the summary.reference_days days before)
  quicksight/<table>/date=.../    the same rows as CSV with a header (or JSON lines:
                                  summary.export_format), one file per table and date
  quicksight/manifests/<table>_YYYY-MM-DD.json   QuickSight manifest of that date's file
  quicksight/manifests/<table>.json              manifest of every date's file (for a dashboard)
  athena/<dataset>_<table>.sql    CREATE EXTERNAL TABLE for the features, scores and summary tables
and the HTML report (--report, default paths.reports/summary_<dataset>_<date>.html).

Manifest URIs name the files actually written: s3:// for an s3a:// output (QuickSight's scheme),
absolute local paths for a local run (QuickSight cannot read those; run on S3 to use them).

Submitted as `python -m jobs summary --conf FILE` or `spark-submit jobs/summary.py --conf FILE`.
"""
import datetime as dt
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from pyspark import StorageLevel
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reporting.summary import SummaryInputError, between_dates, for_date, summary_tables
from jobs.common import InputError, base_parser, log, run_main, step
from reporting import quicksight
from runtime.spark import build_session
from runtime.storage import StorageError, read_table, write_table

PROG = "python -m jobs summary"

# data set -> (entity column, location column) of its scores table
KEY_COLUMNS = {"telemetry": ("device_id", "site_id"), "transactions": ("customer_id", "terminal_id")}
LOCATIONS_IN_REPORT = 15


def build_parser():
    parser = base_parser(PROG, __doc__, input_help="the scores table (default paths.scores)",
                         output_help="the summary root folder (default paths.summary)")
    parser.add_argument("--date", metavar="YYYY-MM-DD",
                        help="the date to summarize (default summary.date; null: the latest date in the scores table)")
    parser.add_argument("--reference-days", type=int, metavar="N",
                        help="PSI drift reference: the N days before --date "
                             "(default summary.reference_days; 0: no PSI)")
    parser.add_argument("--history-days", type=int, metavar="N",
                        help="daily counts over the last N days (default summary.history_days)")
    parser.add_argument("--top", type=int, metavar="N", help="riskiest entities to list (default summary.top)")
    parser.add_argument("--export-format", choices=("csv", "json"),
                        help="QuickSight export format (default summary.export_format)")
    parser.add_argument("--features", metavar="PATH",
                        help="the feature table the drift of the features is measured on (default "
                             "paths.features; without one, the feature columns of the scores table, if any)")
    parser.add_argument("--report", metavar="PATH",
                        help="where the HTML report goes (default paths.reports/summary_<dataset>_<date>.html)")
    return parser


def parse_date(text):
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise InputError(f"--date must be a date like 2026-01-31, got {text!r}") from None


def positive(value, option, minimum=1):
    if value < minimum:
        raise InputError(f"{option} must be >= {minimum}, got {value}")
    return value


def key_columns(dataset, columns):
    entity_col, location_col = KEY_COLUMNS[dataset]
    if entity_col not in columns:
        raise InputError(f"the {dataset} scores table needs an entity column {entity_col!r}; it has "
                         f"{', '.join(columns)} (wrong --dataset?)")
    return entity_col, location_col if location_col in columns else None


def for_export(df):
    """QuickSight-friendly columns: arrays joined with '|' (CSV cannot hold arrays)."""
    return df.select(*[F.concat_ws("|", F.col(f.name)).alias(f.name) if isinstance(f.dataType, T.ArrayType)
                       else F.col(f.name) for f in df.schema.fields])


def export(spark, df, table, day, root, fmt):
    """Write ``df`` (one date) for QuickSight and its manifests; the manifest paths."""
    folder = quicksight.join(root, "quicksight", table, f"date={day}")
    writer = for_export(df).coalesce(1).write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", "true").option("escape", '"').option("timestampFormat", "yyyy-MM-dd HH:mm:ss") \
            .option("dateFormat", "yyyy-MM-dd").csv(folder)
    else:
        writer.option("timestampFormat", "yyyy-MM-dd HH:mm:ss").json(folder)
    ext = f".{fmt}"
    day_files = [f for f in quicksight.list_part_files(spark, folder) if f.endswith(ext)]
    every_file = [f for f in quicksight.list_part_files(spark, quicksight.join(root, "quicksight", table))
                  if f.endswith(ext)]
    if len(every_file) > quicksight.MAX_MANIFEST_FILES:
        log("summary", f"{table}: {len(every_file)} export files; the all-dates manifest keeps the last "
                       f"{quicksight.MAX_MANIFEST_FILES} (QuickSight's limit)")
        every_file = every_file[-quicksight.MAX_MANIFEST_FILES:]
    manifests = quicksight.join(root, "quicksight", "manifests")
    day_manifest = quicksight.join(manifests, f"{table}_{day}.json")
    quicksight.write_manifest(spark, day_manifest, day_files, fmt)
    quicksight.write_manifest(spark, quicksight.join(manifests, f"{table}.json"), every_file, fmt)
    return day_manifest


def write_ddl(spark, config, dataset, tables, scores_df, source, output):
    """Athena DDL for the features, scores and summary tables; the file paths."""
    athena = config["summary"]["athena"]
    storage_format = config["storage"]["format"]
    options = {"database": athena["database"], "projection": athena["partition_projection"],
               "projection_start": athena["projection_start"]}
    targets = [(f"{dataset}_scores", scores_df.schema, source, storage_format)]
    features_path = config.path("features")
    try:
        targets.insert(0, (f"{dataset}_features", read_table(spark, features_path, storage_format).schema,
                           features_path, storage_format))
    except StorageError:
        log("summary", f"no feature table at {features_path}: its DDL is skipped")
    for name, df in tables.items():
        targets.append((f"{dataset}_summary_{name}", df.schema, quicksight.join(output, name), "parquet"))
    written = []
    for table, schema, location, fmt in targets:
        ddl = quicksight.create_table_ddl(table, schema, location, table_format=fmt, **options,
                                          comment=f"{table}: written by the zen-anomaly jobs at {location}")
        path = quicksight.join(output, "athena", f"{table}.sql")
        quicksight.write_text(spark, path, ddl)
        written.append(path)
    return written


def report_html(tables, *, dataset, day, entity_col, location_col, reference, sources):
    from reporting.daily_report import render_daily_report

    def pandas(name, order=None, limit=None):
        if name not in tables:
            return None
        df = tables[name]
        if order is not None:
            df = df.orderBy(*order)
        if limit:
            df = df.limit(limit)
        return df.toPandas()

    location_order = [F.desc("anomalies"), F.desc("max_risk"), location_col] if location_col else None
    locations = pandas("locations", location_order, LOCATIONS_IN_REPORT) if location_col else None
    return render_daily_report(
        dataset=dataset, day=day, entity_col=entity_col, location_col=location_col,
        daily=pandas("daily"), hourly=pandas("hourly"), histogram=pandas("histogram"),
        top=pandas("top_entities"), locations=locations, drift=pandas("drift"), reference=reference,
        sources=sources)


def drift_features(spark, path, fmt):
    """The feature table for the features' PSI (the scores table holds no features), or None."""
    try:
        return read_table(spark, path, fmt)
    except StorageError:
        log("summary", f"no feature table at {path}: feature drift from the scores table's columns only")
        return None


def run(args, config):
    dataset = config["dataset"]
    conf = config["summary"]
    source = args.input or config.path("scores")
    output = args.output or config.path("summary")
    reference_days = positive(conf["reference_days"] if args.reference_days is None else args.reference_days,
                              "--reference-days", 0)
    history_days = positive(args.history_days or conf["history_days"], "--history-days")
    top = positive(args.top or conf["top"], "--top")
    fmt = args.export_format or conf["export_format"]
    if fmt not in ("csv", "json"):
        raise InputError(f"summary.export_format must be csv or json, got {fmt!r}")

    spark = build_session(config)
    try:
        scores_df = read_table(spark, source, config["storage"]["format"])
    except StorageError as exc:
        raise InputError(str(exc)) from None
    entity_col, location_col = key_columns(dataset, scores_df.columns)
    requested = args.date or conf["date"]
    day = parse_date(requested) if requested else scores_df.agg(F.max("date")).first()[0]
    if day is None:
        raise InputError(f"the scores table {source} has no rows")

    day_df = for_date(scores_df, day).persist(StorageLevel.MEMORY_AND_DISK)
    events = day_df.count()
    if events == 0:
        raise InputError(f"no scores on {day} in {source}")
    reference_from = day - dt.timedelta(days=reference_days)
    reference_rows = between_dates(scores_df, reference_from, day - dt.timedelta(days=1)).count() \
        if reference_days else 0
    log("summary", f"{dataset} {day}: {events:,} events; PSI reference {reference_rows:,} rows "
                   f"({reference_days} days before)")
    if reference_days and not reference_rows:
        log("summary", "no reference rows: the drift table is skipped")
    max_rows = conf["psi_max_rows"]
    features_df = drift_features(spark, args.features or config.path("features"), config["storage"]["format"]) \
        if reference_days and reference_rows else None
    try:
        tables = summary_tables(
            scores_df, day, entity_col=entity_col, location_col=location_col, history_days=history_days,
            reference_days=reference_days if reference_rows else 0, top=top, top_reasons=conf["top_reasons"],
            histogram_bins=conf["histogram_bins"], psi_bins=conf["psi_bins"],
            reference_fraction=min(1.0, max_rows / reference_rows) if reference_rows else 1.0,
            current_fraction=min(1.0, max_rows / events), features_df=features_df)
    except (SummaryInputError, ValueError) as exc:
        raise InputError(str(exc)) from None

    for name, df in tables.items():
        with step("summary", f"writing {name} to {quicksight.join(output, name)}"):
            df = df.persist(StorageLevel.MEMORY_AND_DISK)
            tables[name] = df
            write_table(df, quicksight.join(output, name), "parquet", partition_by=["date"])
    with step("summary", f"exporting {len(tables)} tables for QuickSight ({fmt})"):
        manifests = [export(spark, for_date(df, day), name, day, output, fmt) for name, df in tables.items()]
    ddl_files = write_ddl(spark, config, dataset, tables, scores_df, source, output)

    report = args.report or quicksight.join(config.path("reports"), f"summary_{dataset}_{day}.html")
    reference = (f"the {reference_days} days {reference_from} .. {day - dt.timedelta(days=1)}"
                 if reference_rows else f"no scores in the {reference_days} days before {day}")
    with step("summary", "rendering the HTML report"):
        page = report_html(tables, dataset=dataset, day=day, entity_col=entity_col, location_col=location_col,
                           reference=reference,
                           sources={"scores table": source, "summary tables": output,
                                    "QuickSight manifests": quicksight.join(output, "quicksight", "manifests"),
                                    "Athena DDL": quicksight.join(output, "athena")})
        quicksight.write_text(spark, report, page)
    for df in tables.values():
        df.unpersist()
    day_df.unpersist()
    log("summary", f"QuickSight manifests: {', '.join(manifests)}")
    log("summary", f"Athena DDL: {', '.join(ddl_files)}")
    shown = report if quicksight.has_scheme(report) else "file://" + quicksight.quicksight_uri(report)
    log("summary", f"report: {shown}")


def main(argv=None) -> int:
    return run_main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
