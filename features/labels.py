"""Late labels: the labels table, the MERGE of a label file into it, and labels in the feature table.

The labels table (Delta, ``paths.labels``) holds one row per labelled event: the data set's
event id, ``label`` (0/1), ``known_at`` (when the label became known), ``source`` (the file it
came from) and ``merged_at`` (when the row was last written). ``python -m jobs labels`` merges a
label file into it (ingest/labels.py says what a valid file is):

* **Bad rows** are reported with their reasons (counts and examples) and, unless the caller
  skips them, stop the run before anything is written: a file is merged whole or not at all.
* **Newest notice wins**: an event's row is replaced only by a row known later (``known_at``
  greater; on the same ``known_at`` a 1 replaces a 0). An older row is reported as
  ``superseded`` and not applied, so the table does not depend on the order files are merged in,
  and merging a file again writes nothing (no new table version): only new and changed rows go
  into the MERGE. Keyed by event id, the table keeps an event's latest label only: a label that
  a later notice reverses is gone for the rows before the reversal too.
* **Unknown events**: a label whose event id is not in the feature table is stored all the same
  and reported (count and examples in the log and the summary line): raw events can arrive after
  their label (late data, dates not built yet), and the feature build applies a label to its event
  whenever that event is built. A label known before its event happened is rejected.
* **Scores**: the labels of the file's events are then merged into the scores table's ``label``
  column (when the scores table is Delta), only where they differ, so evaluation and the daily
  summary see each scored event's eventual label.

The feature build (features/build.py) reads the labels table: the terminal features count a
late label only from its ``known_at`` (features/transactions.py), and the feature table's
``label`` column is the event's latest label (the labels table's where it has a row, else the
raw one), which is what ``train`` and ``evaluate`` read. Features built before a label arrived
keep what was known then: rebuild the dates from the first labelled event's date on
(``features --from-date``; the labels job's summary names those dates).
"""
from __future__ import annotations

import datetime as dt
from typing import Mapping, Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.datasets import dataset as dataset_named
from ingest.labels import KNOWN_AT, LABEL, SOURCE, LabelFileError, validate_labels, with_file_facts
from ingest.validation import REASON
from runtime import fs
from runtime.errors import InputError, NothingToDo
from runtime.delta import is_delta, merge_rows
from runtime.progress import RunSummary, log, step
from runtime.storage import StorageError, date_runs, read_raw, read_table

MERGED_AT = "merged_at"
EXAMPLES = 5                     # examples of rejected rows and unknown ids in the log and summary
FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json"}
# a row replaces the stored one when it is newer: known later, or on the same instant a fraud
NEWER = "s.known_at > t.known_at OR (s.known_at = t.known_at AND s.label > t.label)"


def with_eventual_labels(df: DataFrame, labels_df: Optional[DataFrame], id_column: str) -> DataFrame:
    """``df`` with ``label`` replaced by the labels table's label where ``labels_df`` has a row for
    the event (whenever it became known: this is the training target, not a feature), else as it was.
    """
    if labels_df is None:
        return df
    late = labels_df.select(id_column, F.col(LABEL).cast("int").alias("_late_label"))
    return (df.join(late, id_column, "left")
            .withColumn(LABEL, F.coalesce(F.col("_late_label"), F.col(LABEL)).cast("int"))
            .drop("_late_label").select(*df.columns))


def read_labels(spark: SparkSession, path: str) -> Optional[DataFrame]:
    """The labels table at ``path``; None when there is none (an existing non-Delta folder is an error)."""
    if not fs.exists(path):
        return None  # asked first: a session without the Delta jars (Parquet lakes) can say this too
    if is_delta(spark, path):
        return read_table(spark, path, "delta")
    raise InputError(f"{path} is not a Delta table: the labels table is written by 'python -m jobs labels'")


def file_format(source: str, given: Optional[str]) -> str:
    """``given``, or the format the file name says (.csv; .json, .jsonl, .ndjson: JSON lines)."""
    if given:
        return given
    for suffix, fmt in FILE_FORMATS.items():
        if source.lower().endswith(suffix):
            return fmt
    raise InputError(f"cannot tell the format of {source} from its name (.csv, .json, .jsonl, .ndjson): "
                     "give --format csv or --format json")


def event_facts(spark: SparkSession, features: str, fmt: str, id_column: str) -> Optional[DataFrame]:
    """(event id, ``event_time``, ``date``) of every event of the feature table; None when there is none."""
    try:
        table = read_table(spark, features, fmt)
    except StorageError:
        return None
    return table.select(id_column, F.col("event_time").alias("_event_time"), F.col("date").alias("_date"))


def classified(incoming: DataFrame, current: Optional[DataFrame], id_column: str) -> DataFrame:
    """``incoming`` valid labels with ``_status`` against the labels table ``current``: new (no row
    there), unchanged (the same label and known_at), changed (newer than the stored row) or
    superseded (the stored row is newer).
    """
    if current is None:
        return incoming.withColumn("_status", F.lit("new"))
    stored = current.select(id_column, F.col(LABEL).alias("_t_label"), F.col(KNOWN_AT).alias("_t_known"))
    newer = (F.col(KNOWN_AT) > F.col("_t_known")) | ((F.col(KNOWN_AT) == F.col("_t_known"))
                                                     & (F.col(LABEL) > F.col("_t_label")))
    status = (F.when(F.col("_t_known").isNull(), "new")
              .when((F.col(KNOWN_AT) == F.col("_t_known")) & (F.col(LABEL) == F.col("_t_label")), "unchanged")
              .when(newer, "changed").otherwise("superseded"))
    return incoming.join(stored, id_column, "left").withColumn("_status", status).drop("_t_label", "_t_known")


def _report_rejected(rows: DataFrame, rejected: int, rows_in: int, source: str) -> dict[str, int]:
    """Log the rejected rows' reasons (counts) and a few examples; returns reason -> count."""
    reasons = {r[REASON]: r["count"] for r in rows.where(F.col(REASON).isNotNull()).groupBy(REASON).count()
               .orderBy(F.desc("count"), REASON).collect()}
    log("labels", f"{rejected:,} of {rows_in:,} rows of {source} rejected:")
    for reason, count in reasons.items():
        log("labels", f"  rejected {count:>9,}  {reason}")
    for row in rows.where(F.col(REASON).isNotNull()).select("record", REASON).limit(EXAMPLES).collect():
        log("labels", f"  e.g. {row['record']}  ({row[REASON]})")
    return reasons


def merge_label_file(spark: SparkSession, config: Mapping, *, source: str, labels: str, features: str,
                     scores: Optional[str], fmt: Optional[str] = None, skip_bad_rows: bool = False) -> RunSummary:
    """Validate the label file ``source`` and MERGE it into the labels table ``labels``, then into
    the ``label`` column of the scores table ``scores`` (when it is a Delta table).

    ``config``: the whole config (``dataset``, ``storage.format``); ``features``: the feature
    table the event ids are looked up in; ``fmt``: csv or json (None: from the file name);
    ``skip_bad_rows``: merge the valid rows of a file with rejected ones (else nothing is merged
    and InputError says why). The summary: rows in, rows written to the labels table, the event
    dates of the labels applied, and the counts by outcome.
    """
    dataset = dataset_named(config["dataset"])
    id_column = dataset.event_id
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    fmt = file_format(source, fmt)
    try:
        checked = validate_labels(with_file_facts(read_raw(spark, source, fmt)), id_column, F.lit(started))
    except (StorageError, LabelFileError) as exc:
        raise InputError(str(exc)) from None
    if checked.ignored_columns:
        log("labels", f"columns not used: {', '.join(checked.ignored_columns)}")
    events = event_facts(spark, features, config["storage"]["format"], id_column)
    rows = checked.checked
    if events is None:
        log("labels", f"no feature table at {features}: no event can be looked up, every label's event is unknown")
        rows = rows.withColumn("_event_time", F.lit(None).cast("timestamp")).withColumn("_date", F.lit(None).cast("date"))
    else:
        rows = rows.join(events, id_column, "left")
    early = F.col(REASON).isNull() & (F.col(KNOWN_AT) < F.col("_event_time"))
    rows = rows.withColumn(REASON, F.when(early, F.lit(f"{KNOWN_AT} before the event time")).otherwise(F.col(REASON)))
    rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _merge(spark, rows, source=source, labels=labels, scores=scores, id_column=id_column,
                      dataset_name=dataset.name, started=started, skip_bad_rows=skip_bad_rows)
    finally:
        rows.unpersist()


def _merge(spark: SparkSession, rows: DataFrame, *, source: str, labels: str, scores: Optional[str],
           id_column: str, dataset_name: str, started: dt.datetime, skip_bad_rows: bool) -> RunSummary:
    with step("labels", f"validating {source}"):
        counts = rows.agg(F.count(F.lit(1)).alias("rows_in"), F.count(REASON).alias("rejected"),
                          F.count(F.when(F.col(REASON).isNull() & F.col("_event_time").isNull(), 1)).alias("unknown")
                          ).first()
    rows_in, rejected, unknown = counts["rows_in"], counts["rejected"], counts["unknown"]
    if rows_in == 0:
        raise NothingToDo(f"no label rows in {source}")
    valid = rows_in - rejected
    log("labels", f"rows in {rows_in:,} = valid {valid:,} + rejected {rejected:,}")
    reasons = _report_rejected(rows, rejected, rows_in, source) if rejected else {}
    if rejected and not skip_bad_rows:
        raise InputError(f"{source}: {rejected:,} of {rows_in:,} rows rejected ("
                         + "; ".join(f"{n:,} {reason}" for reason, n in reasons.items())
                         + f"), nothing merged; fix them, or --skip-bad-rows merges the {valid:,} valid rows")
    good = rows.where(F.col(REASON).isNull())
    unknown_examples = [r[id_column] for r in good.where(F.col("_event_time").isNull()).select(id_column)
                        .orderBy(id_column).limit(EXAMPLES).collect()] if unknown else []
    if unknown:
        log("labels", f"{unknown:,} labels for events not in the feature table (stored all the same, applied "
                      f"when their events are built), e.g. {', '.join(unknown_examples)}")
    current = read_labels(spark, labels)
    incoming = good.select(id_column, LABEL, KNOWN_AT, SOURCE, "_date")
    outcome = classified(incoming, current, id_column).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        status = {r["_status"]: r["count"] for r in outcome.groupBy("_status").count().collect()}
        applied = outcome.where(F.col("_status").isin("new", "changed"))
        written = status.get("new", 0) + status.get("changed", 0)
        dates = sorted(r["_date"] for r in applied.select("_date").distinct().collect() if r["_date"] is not None)
        if written:
            table_rows = applied.select(id_column, LABEL, KNOWN_AT, SOURCE, F.lit(started).alias(MERGED_AT))
            with step("labels", f"merging {written:,} labels into {labels}"):
                commit = merge_rows(spark, table_rows, labels, keys=[id_column], update_when=NEWER,
                                    update={c: f"s.`{c}`" for c in (LABEL, KNOWN_AT, SOURCE, MERGED_AT)})
            log("labels", f"labels table version {commit.version}: {int(commit.metrics.get('numTargetRowsInserted', 0)):,} "
                          f"inserted, {int(commit.metrics.get('numTargetRowsUpdated', 0)):,} updated")
        else:
            log("labels", f"nothing new for {labels}: no table version written")
        if status.get("superseded"):
            log("labels", f"{status['superseded']:,} labels not applied: the table holds a newer one for their events")
        scores_updated = merge_into_scores(spark, outcome.select(id_column, "_date"), labels, scores, id_column)
    finally:
        outcome.unpersist()
    if dates:
        log("labels", f"events labelled on {date_runs(dates)}: rebuild features from {dates[0]} "
                      "(features --from-date) for the terminal features and labels to see them")
    extra = {"rejected": rejected, "new": status.get("new", 0), "changed": status.get("changed", 0),
             "unchanged": status.get("unchanged", 0), "superseded": status.get("superseded", 0),
             "unknown_ids": unknown}
    if unknown_examples:
        extra["unknown_examples"] = unknown_examples
    if reasons:
        extra["rejected_reasons"] = reasons
    if scores_updated is not None:
        extra["scores_updated"] = scores_updated
    return RunSummary("labels", dataset=dataset_name, dates=[str(d) for d in dates], rows_in=rows_in,
                      rows_out=written, extra=extra)


def merge_into_scores(spark: SparkSession, events: DataFrame, labels: str, scores: Optional[str],
                      id_column: str) -> Optional[int]:
    """Set the scores table's ``label`` of ``events`` (event id, ``_date``) to their label in the
    labels table, where it differs; returns the rows changed (None: no Delta scores table there).
    Rows that already agree are left out of the MERGE, so nothing changed means no new version.
    """
    if not scores or not is_delta(spark, scores):
        log("labels", f"no Delta scores table at {scores}: scores not updated")
        return None
    table = read_table(spark, scores, "delta")
    if LABEL not in table.columns or "date" not in table.columns:
        log("labels", f"the scores table {scores} has no label/date column: scores not updated")
        return None
    known = events.where(F.col("_date").isNotNull())
    dates = sorted(str(r["_date"]) for r in known.select("_date").distinct().collect())
    if not dates:
        return 0
    eventual = (read_table(spark, labels, "delta").select(id_column, LABEL)
                .join(known.withColumnRenamed("_date", "date"), id_column))
    differ = (table.where(F.col("date").isin(dates)).select(id_column, "date", F.col(LABEL).alias("_old"))
              .join(eventual, [id_column, "date"])
              .where(~F.col("_old").eqNullSafe(F.col(LABEL))).select(id_column, "date", LABEL)).localCheckpoint()
    changed = differ.count()
    if changed:
        where = "t.date IN (" + ", ".join(f"DATE'{d}'" for d in dates) + ")"
        with step("labels", f"merging {changed:,} labels into the scores table {scores}"):
            merge_rows(spark, differ, scores, keys=[id_column, "date"], update={LABEL: "s.label"},
                       update_when="NOT (t.label <=> s.label)", insert=False, where=where)
    else:
        log("labels", f"the scores table {scores} already shows these labels: no version written")
    return changed
