"""The daily summary run behind `python -m jobs summary`: one date of the scores table summarised
(``reporting.summary``), written as tables in ``storage.format`` (Delta by default, Parquet by
config), exported for QuickSight as CSV/JSON with manifests (``reporting.quicksight``; QuickSight
cannot read Delta or Parquet from S3), described in Athena DDL (Athena's Delta form for Delta
tables) and rendered as an HTML report (``reporting.daily_report``). The job's docstring lists
the files it writes.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.datasets import Dataset
from reporting import quicksight
from reporting.summary import JumpLimits, SummaryInputError, between_dates, for_date, summary_tables
from runtime import fs
from runtime.config import AthenaConfig, SummaryConfig
from runtime.errors import InputError
from runtime.progress import RunSummary, log, step
from runtime.storage import StorageError, read_table, write_table

__all__ = ["describe_previous", "jump_lines", "run_summary"]

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
    """Athena DDL for the features, scores and summary tables, all in ``storage_format`` (Delta:
    Athena reads the schema and partitions from the table's log); the file paths.
    """
    options = {"database": athena.database, "projection": athena.partition_projection,
               "projection_start": athena.projection_start}
    targets = [(f"{dataset}_scores", scores_df.schema, scores, storage_format)]
    try:
        targets.insert(0, (f"{dataset}_features", read_table(spark, features, storage_format).schema,
                           features, storage_format))
    except StorageError:
        log("summary", f"no feature table at {features}: its DDL is skipped")
    for name, df in tables.items():
        targets.append((f"{dataset}_summary_{name}", df.schema, fs.join(output, name), storage_format))
    written = []
    for table, schema, location, fmt in targets:
        ddl = quicksight.create_table_ddl(table, schema, location, table_format=fmt, **options,
                                          comment=f"{table}: written by the zen-anomaly jobs at {location}")
        path = fs.join(output, "athena", f"{table}.sql")
        fs.write_text(path, ddl)
        written.append(path)
    return written


def describe_previous(day: dt.date, previous: dt.date) -> str:
    """'yesterday' for the day before ``day``, else 'on <date>' (a gap without scores between)."""
    return "yesterday" if previous == day - dt.timedelta(days=1) else f"on {previous}"


def jump_lines(rows: list[Mapping], day: dt.date) -> list[str]:
    """One line per flagged row of the ``compare`` table (``reporting.summary.day_comparison``),
    e.g. ``JUMP: alerts 412 vs 95 yesterday (x4.3)``.
    """
    lines = []
    for row in rows:
        if not row["jump"]:
            continue
        when = describe_previous(day, row["compared_with"])
        if row["kind"] == "score":
            lines.append(f"JUMP: {row['measure']} PSI {row['psi']:.2f} against {when.removeprefix('on ')} "
                         f"({row['rule']}; mean {row['value']:.3g} vs {row['previous']:.3g})")
            continue
        if row["kind"] == "rate":
            value, previous = f"{100 * row['value']:.2f}%", f"{100 * row['previous']:.2f}%"
        else:
            value, previous = f"{row['value']:,.0f}", f"{row['previous']:,.0f}"
        ratio = row["ratio"]
        factor = "" if ratio is None else f" (x{ratio:.1f})" if ratio >= 1 else f" (x{ratio:.2g})"
        lines.append(f"JUMP: {row['measure']} {value} vs {previous} {when}{factor}")
    return lines


def report_html(tables: Mapping[str, DataFrame], *, dataset: str, day: dt.date, entity_col: str,
                location_col: str | None, reference: str, sources: Mapping[str, str]) -> str:
    import pandas as pd

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
        sources=sources, comparison=pandas("compare") if "compare" in tables else pd.DataFrame(),  # empty: no earlier date
        expected=pandas("expected"))


def drift_features(spark: SparkSession, path: str, fmt: str) -> DataFrame | None:
    """The feature table for the features' PSI (the scores table holds no features), or None."""
    try:
        return read_table(spark, path, fmt)
    except StorageError:
        log("summary", f"no feature table at {path}: feature drift from the scores table's columns only")
        return None


def run_summary(spark: SparkSession, conf: SummaryConfig, *, dataset: Dataset, day: dt.date | None,
                scores: str, output: str, features: str, drift_from: str, report: str | None, reports: str,
                storage_format: str) -> RunSummary:
    """Summarise ``day`` (None: the latest date) of the scores table at ``scores`` into ``output``.

    ``features`` is the feature table the Athena DDL describes, ``drift_from`` the one the
    features' PSI is measured on; the report goes to ``report`` (None: a file named after the
    data set and date in ``reports``). ``day`` is compared with the latest earlier date with
    scores (the day before, or the last one before a gap); a jump beyond ``conf``'s limits prints
    a ``JUMP:`` line. Returns the run's summary: the day's scored rows and alerts, the model
    versions in its scores, and in ``extra`` the ``jumps`` (measure names, empty when none), the
    date ``compared_with`` (None on the first date) and the ``expected_alerts`` of the next day.
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
    events, alerts = day_df.agg(F.count(F.lit(1)), F.sum(F.col("is_anomaly").cast("long"))).first() \
        if "is_anomaly" in scores_df.columns else (day_df.count(), None)
    if events == 0:
        raise InputError(f"no scores on {day} in {scores}")
    previous = scores_df.where(F.col("date") < F.lit(str(day)).cast("date")).agg(F.max("date")).first()[0]
    # persisted like day_df: the comparison reads the previous date four times (counts, quantiles, PSI)
    previous_df = for_date(scores_df, previous).persist(StorageLevel.MEMORY_AND_DISK) if previous else None
    previous_rows = previous_df.count() if previous else 0
    if previous:
        which = "the day before" if previous == day - dt.timedelta(days=1) else "the latest earlier date with scores"
        log("summary", f"compared with {previous} ({which}, {previous_rows:,} rows)")
    else:
        log("summary", f"no scores before {day}: no comparison with a previous date")
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
            current_fraction=min(1.0, conf.psi_max_rows / events), features_df=features_df,
            previous=previous, previous_fraction=min(1.0, conf.psi_max_rows / previous_rows) if previous_rows else 1.0,
            limits=JumpLimits(alert_ratio=conf.jump_alert_ratio, min_alerts=conf.jump_min_alerts,
                              events_ratio=conf.jump_events_ratio, psi=conf.jump_psi),
            expected_days=conf.expected_days)
    except (SummaryInputError, ValueError) as exc:
        raise InputError(str(exc)) from None

    for name, df in tables.items():
        with step("summary", f"writing {name} to {fs.join(output, name)}"):
            df = df.persist(StorageLevel.MEMORY_AND_DISK)
            tables[name] = df
            write_table(df, fs.join(output, name), storage_format, partition_by=["date"])
    fmt = conf.export_format
    with step("summary", f"exporting {len(tables)} tables for QuickSight ({fmt})"):
        manifests = [export(for_date(df, day), name, day, output, fmt) for name, df in tables.items()]
    ddl_files = write_ddl(spark, conf.athena, dataset.name, tables, scores_df, scores, features, output,
                          storage_format)
    compared = tables["compare"].collect() if "compare" in tables else []
    for line in jump_lines(compared, day):
        log("summary", line)
    if previous and not any(row["jump"] for row in compared):
        log("summary", f"no jump against {previous}")
    expected = tables["expected"].first()
    log("summary", f"expected alerts on {expected['for_date']}: {expected['median_alerts']:,.1f} (median of the "
                   f"{expected['days']} dates with scores {expected['first_date']} .. {expected['last_date']}; "
                   f"range {expected['min_alerts']:,} .. {expected['max_alerts']:,})")
    kinds = [kind for kind in ("rcf", "logistic") if f"{kind}_version" in scores_df.columns]
    seen = day_df.agg(*[F.sort_array(F.collect_set(f"{kind}_version")).alias(kind) for kind in kinds]).first() \
        if kinds else {}
    versions = {kind: "+".join(seen[kind]) or None for kind in kinds}  # "+": more than one version that day

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
    if previous_df is not None:
        previous_df.unpersist()
    log("summary", f"QuickSight manifests: {', '.join(manifests)}")
    log("summary", f"Athena DDL: {', '.join(ddl_files)}")
    shown = report if fs.has_scheme(report) else "file://" + quicksight.quicksight_uri(report)
    log("summary", f"report: {shown}")
    return RunSummary(job="summary", dataset=dataset.name, dates=[str(day)], rows_in=events, alerts=alerts,
                      versions=versions, extra={"jumps": [row["measure"] for row in compared if row["jump"]],
                                                "compared_with": str(previous) if previous else None,
                                                "expected_alerts": expected["median_alerts"]})
