"""The daily summary run behind `python -m jobs summary`: one date of the scores table summarised
(``reporting.summary``), written as Parquet tables, exported for QuickSight with manifests
(``reporting.quicksight``), described in Athena DDL and rendered as an HTML report
(``reporting.daily_report``). The job's docstring lists the files it writes.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.datasets import Dataset
from reporting import quicksight
from reporting.summary import SummaryInputError, between_dates, for_date, summary_tables
from runtime import fs
from runtime.config import AthenaConfig, SummaryConfig
from runtime.errors import InputError
from runtime.progress import log, step
from runtime.storage import StorageError, read_table, write_table

__all__ = ["run_summary"]

LOCATIONS_IN_REPORT = 15


def key_columns(ds: Dataset, columns: list[str]) -> tuple[str, str | None]:
    """(entity column, location column or None when the scores table has none)."""
    if ds.entity not in columns:
        raise InputError(f"the {ds.name} scores table needs an entity column {ds.entity!r}; it has "
                         f"{', '.join(columns)} (wrong --dataset?)")
    return ds.entity, ds.location if ds.location in columns else None


def export(df: DataFrame, table: str, day: dt.date, root: str, fmt: str) -> str:
    """Write ``df`` (one date) for QuickSight and its manifests; the date's manifest path."""
    folder = fs.join(root, "quicksight", table, f"date={day}")
    writer = quicksight.for_export(df).coalesce(1).write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", "true").option("escape", '"').option("timestampFormat", "yyyy-MM-dd HH:mm:ss") \
            .option("dateFormat", "yyyy-MM-dd").csv(folder)
    else:
        writer.option("timestampFormat", "yyyy-MM-dd HH:mm:ss").json(folder)
    ext = f".{fmt}"
    day_files = quicksight.part_files(folder, ext)
    every_file = quicksight.part_files(fs.join(root, "quicksight", table), ext)
    if len(every_file) > quicksight.MAX_MANIFEST_FILES:
        log("summary", f"{table}: {len(every_file)} export files; the all-dates manifest keeps the last "
                       f"{quicksight.MAX_MANIFEST_FILES} (QuickSight's limit)")
        every_file = every_file[-quicksight.MAX_MANIFEST_FILES:]
    manifests = fs.join(root, "quicksight", "manifests")
    day_manifest = fs.join(manifests, f"{table}_{day}.json")
    quicksight.write_manifest(day_manifest, day_files, fmt)
    quicksight.write_manifest(fs.join(manifests, f"{table}.json"), every_file, fmt)
    return day_manifest


def write_ddl(spark: SparkSession, athena: AthenaConfig, dataset: str, tables: Mapping[str, DataFrame],
              scores_df: DataFrame, scores: str, features: str, output: str, storage_format: str) -> list[str]:
    """Athena DDL for the features, scores and summary tables; the file paths."""
    options = {"database": athena.database, "projection": athena.partition_projection,
               "projection_start": athena.projection_start}
    targets = [(f"{dataset}_scores", scores_df.schema, scores, storage_format)]
    try:
        targets.insert(0, (f"{dataset}_features", read_table(spark, features, storage_format).schema,
                           features, storage_format))
    except StorageError:
        log("summary", f"no feature table at {features}: its DDL is skipped")
    for name, df in tables.items():
        targets.append((f"{dataset}_summary_{name}", df.schema, fs.join(output, name), "parquet"))
    written = []
    for table, schema, location, fmt in targets:
        ddl = quicksight.create_table_ddl(table, schema, location, table_format=fmt, **options,
                                          comment=f"{table}: written by the zen-anomaly jobs at {location}")
        path = fs.join(output, "athena", f"{table}.sql")
        fs.write_text(path, ddl)
        written.append(path)
    return written


def report_html(tables: Mapping[str, DataFrame], *, dataset: str, day: dt.date, entity_col: str,
                location_col: str | None, reference: str, sources: Mapping[str, str]) -> str:
    from reporting.daily_report import render_daily_report  # matplotlib: only when a report is drawn

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


def drift_features(spark: SparkSession, path: str, fmt: str) -> DataFrame | None:
    """The feature table for the features' PSI (the scores table holds no features), or None."""
    try:
        return read_table(spark, path, fmt)
    except StorageError:
        log("summary", f"no feature table at {path}: feature drift from the scores table's columns only")
        return None


def run_summary(spark: SparkSession, conf: SummaryConfig, *, dataset: Dataset, day: dt.date | None,
                scores: str, output: str, features: str, drift_from: str, report: str | None, reports: str,
                storage_format: str) -> None:
    """Summarise ``day`` (None: the latest date) of the scores table at ``scores`` into ``output``.

    ``features`` is the feature table the Athena DDL describes, ``drift_from`` the one the
    features' PSI is measured on; the report goes to ``report`` (None: a file named after the
    data set and date in ``reports``).
    """
    try:
        scores_df = read_table(spark, scores, storage_format)
    except StorageError as exc:
        raise InputError(str(exc)) from None
    entity_col, location_col = key_columns(dataset, scores_df.columns)
    day = day or scores_df.agg(F.max("date")).first()[0]
    if day is None:
        raise InputError(f"the scores table {scores} has no rows")

    day_df = for_date(scores_df, day).persist(StorageLevel.MEMORY_AND_DISK)
    events = day_df.count()
    if events == 0:
        raise InputError(f"no scores on {day} in {scores}")
    reference_days = conf.reference_days
    reference_from = day - dt.timedelta(days=reference_days)
    reference_rows = between_dates(scores_df, reference_from, day - dt.timedelta(days=1)).count() \
        if reference_days else 0
    log("summary", f"{dataset.name} {day}: {events:,} events; PSI reference {reference_rows:,} rows "
                   f"({reference_days} days before)")
    if reference_days and not reference_rows:
        log("summary", "no reference rows: the drift table is skipped")
    features_df = drift_features(spark, drift_from, storage_format) if reference_days and reference_rows else None
    try:
        tables = summary_tables(
            scores_df, day, entity_col=entity_col, location_col=location_col, history_days=conf.history_days,
            reference_days=reference_days if reference_rows else 0, top=conf.top, top_reasons=conf.top_reasons,
            histogram_bins=conf.histogram_bins, psi_bins=conf.psi_bins,
            reference_fraction=min(1.0, conf.psi_max_rows / reference_rows) if reference_rows else 1.0,
            current_fraction=min(1.0, conf.psi_max_rows / events), features_df=features_df)
    except (SummaryInputError, ValueError) as exc:
        raise InputError(str(exc)) from None

    for name, df in tables.items():
        with step("summary", f"writing {name} to {fs.join(output, name)}"):
            df = df.persist(StorageLevel.MEMORY_AND_DISK)
            tables[name] = df
            write_table(df, fs.join(output, name), "parquet", partition_by=["date"])
    fmt = conf.export_format
    with step("summary", f"exporting {len(tables)} tables for QuickSight ({fmt})"):
        manifests = [export(for_date(df, day), name, day, output, fmt) for name, df in tables.items()]
    ddl_files = write_ddl(spark, conf.athena, dataset.name, tables, scores_df, scores, features, output,
                          storage_format)

    report = report or fs.join(reports, f"summary_{dataset.name}_{day}.html")
    reference = (f"the {reference_days} days {reference_from} .. {day - dt.timedelta(days=1)}"
                 if reference_rows else f"no scores in the {reference_days} days before {day}")
    with step("summary", "rendering the HTML report"):
        page = report_html(tables, dataset=dataset.name, day=day, entity_col=entity_col, location_col=location_col,
                           reference=reference,
                           sources={"scores table": scores, "summary tables": output,
                                    "QuickSight manifests": fs.join(output, "quicksight", "manifests"),
                                    "Athena DDL": fs.join(output, "athena")})
        fs.write_text(report, page)
    for df in tables.values():
        df.unpersist()
    day_df.unpersist()
    log("summary", f"QuickSight manifests: {', '.join(manifests)}")
    log("summary", f"Athena DDL: {', '.join(ddl_files)}")
    shown = report if fs.has_scheme(report) else "file://" + quicksight.quicksight_uri(report)
    log("summary", f"report: {shown}")
