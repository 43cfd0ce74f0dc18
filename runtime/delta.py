"""Delta tables' own operations: versions, time travel, history, MERGE, OPTIMIZE and VACUUM
(replaceWhere, with retries after a conflict, is runtime/storage.replace_where).

Pure I/O through delta-spark's ``DeltaTable`` API, on local paths and ``s3a://`` alike. A
:class:`Snapshot` names one version of one table (its location, version, commit time and the
table's id, which survives renames and spellings of the path); :func:`resolve` turns what a user
asks for (a version number or a timestamp) into one, :func:`read` reads exactly it.

Commit times come from the table's history (``DESCRIBE HISTORY``): the times Delta's own
``timestampAsOf`` resolves against. A timestamp names the latest version committed at or before
it, so a table read "as of" a time is the table as a reader saw it then.

VACUUM deletes the files no version newer than its retention needs; what retention keeps which
snapshot is the caller's decision (:func:`retention_hours`). Delta refuses a retention shorter
than the table's ``delta.deletedFileRetentionDuration`` (7 days by default) unless
``spark.databricks.delta.retentionDurationCheck.enabled`` is false: :func:`vacuum` turns that
check off for its own call, because its caller computed the retention from the snapshots it
must keep. Time travel also needs the transaction log of a version: Delta deletes log entries
older than ``delta.logRetentionDuration`` (30 days by default) when it writes a checkpoint, so
:func:`keep_log` lengthens that property for a table whose kept snapshots are older.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
from dataclasses import asdict, dataclass
from typing import Iterator, Mapping, Optional, Sequence, Union

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from runtime.storage import StorageError, first_line

AsOf = Union[int, dt.datetime]

DEFAULT_LOG_RETENTION_HOURS = 30 * 24.0   # Delta's delta.logRetentionDuration default
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
# VACUUM lists the table's folders in a Spark job with this many tasks (Spark's default 10000:
# minutes of empty tasks on a small table); the number of folders to list is what matters.
_LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
_UNITS = {"second": 1 / 3600, "minute": 1 / 60, "hour": 1.0, "day": 24.0, "week": 168.0}


class SnapshotError(StorageError):
    """A version or time a table does not have, or a table that has no versions (not Delta)."""


@dataclass(frozen=True)
class Snapshot:
    """One version of one Delta table: ``location`` (as Delta qualifies it, e.g.
    ``file:/lake/features/transactions``), ``version``, ``timestamp`` (its commit time, UTC, ISO
    8601) and ``table_id`` (the table's id in its metadata).
    """

    location: str
    version: int
    timestamp: str
    table_id: str

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.timestamp)

    def describe(self) -> str:
        return f"v{self.version} ({self.timestamp})"


@dataclass(frozen=True)
class Commit:
    """One entry of a table's history."""

    version: int
    time: dt.datetime
    operation: str
    metrics: Mapping[str, str]


def is_delta(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` holds a Delta table (False when it does not exist or holds plain files)."""
    from delta.tables import DeltaTable

    try:
        return bool(DeltaTable.isDeltaTable(spark, path))
    except Exception:  # py4j: a file system that cannot be reached is no table of ours
        return False


def _table(spark: SparkSession, path: str, what: str):
    from delta.tables import DeltaTable

    if not is_delta(spark, path):
        raise SnapshotError(f"the {what} {path} is not a Delta table (no _delta_log): it has no versions to "
                            "read or record (storage.format delta writes one)")
    return DeltaTable.forPath(spark, path)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


def history(spark: SparkSession, path: str, limit: Optional[int] = None, *, what: str = "table") -> list[Commit]:
    """The commits of the Delta table at ``path`` whose log entries still exist, oldest first."""
    table = _table(spark, path, what)
    frame = table.history(limit) if limit else table.history()
    # epoch seconds, not the timestamp itself: Python would turn that into this machine's local time
    rows = frame.select("version", F.col("timestamp").cast("double").alias("seconds"), "operation",
                        "operationMetrics").collect()
    return sorted((Commit(int(r["version"]), _utc(r["seconds"]), r["operation"], dict(r["operationMetrics"] or {}))
                   for r in rows), key=lambda c: c.version)


def _identity(spark: SparkSession, path: str, what: str) -> tuple[str, str]:
    detail = _table(spark, path, what).detail().select("location", "id").first()
    return detail["location"], detail["id"]


def current(spark: SparkSession, path: str, *, what: str = "table") -> Snapshot:
    """The latest version of the Delta table at ``path``."""
    location, table_id = _identity(spark, path, what)
    last = history(spark, path, 1, what=what)[-1]
    return Snapshot(location, last.version, _iso(last.time), table_id)


def resolve(spark: SparkSession, path: str, as_of: Optional[AsOf] = None, *, what: str = "table") -> Snapshot:
    """The snapshot of the Delta table at ``path`` that ``as_of`` names: a version number, a time
    (the latest version committed at or before it), or None (the latest version).

    Raises :class:`SnapshotError` naming the table and the versions it has when there is no such
    version, when the time is before its first commit, or when ``path`` is no Delta table.
    """
    if as_of is None:
        return current(spark, path, what=what)
    commits = history(spark, path, what=what)
    location, table_id = _identity(spark, path, what)
    have = f"it has v{commits[0].version}..v{commits[-1].version}, " \
           f"{_iso(commits[0].time)}..{_iso(commits[-1].time)}"
    if isinstance(as_of, dt.datetime):
        moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=dt.timezone.utc)
        before = [c for c in commits if c.time <= moment]
        if not before:
            raise SnapshotError(f"the {what} {path} has no version committed at or before {_iso(moment)} ({have})")
        chosen = before[-1]
    else:
        chosen = next((c for c in commits if c.version == int(as_of)), None)
        if chosen is None:
            raise SnapshotError(f"the {what} {path} has no version {as_of} ({have}; older versions' log entries "
                                "are removed after delta.logRetentionDuration)")
    return Snapshot(location, chosen.version, _iso(chosen.time), table_id)


def read(spark: SparkSession, snapshot: Snapshot) -> DataFrame:
    """The rows of exactly ``snapshot`` (Delta time travel, ``versionAsOf``)."""
    try:
        return spark.read.format("delta").option("versionAsOf", snapshot.version).load(snapshot.location)
    except AnalysisException as exc:
        raise SnapshotError(f"cannot read {snapshot.location} at version {snapshot.version}: {first_line(exc)}") \
            from None


def parse_as_of(text: str, option: str = "--as-of") -> AsOf:
    """A version number (``12``) or a time (``2026-01-31``, ``2026-01-31T08:00:00``, with an
    optional UTC offset; UTC without one) from ``text``; a bad value names ``option``.
    """
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise SnapshotError(f"{option} must be a table version (a number like 3) or a time like "
                            f"2026-01-31T08:00:00, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


# ----------------------------------------------------------------------------------- maintenance

def retention_hours(now: dt.datetime, keep_since: Optional[dt.datetime], *, minimum: float, margin: float) -> int:
    """The VACUUM retention (whole hours) that keeps every snapshot committed at or after
    ``keep_since``: its age plus ``margin`` (for clocks, and for a writer that removed a file of
    that snapshot while it was being committed), and at least ``minimum``, rounded up.

    VACUUM deletes a file no longer in the latest version once it was removed more than the
    retention ago; every file of a snapshot that a later version removed was removed after
    that snapshot's commit, so it stays. Delta rounds a retention to the nearest whole hour
    (VacuumCommand: ``math.round(hours)``): rounding it up here first keeps that from
    shortening it.
    """
    hours = float(minimum)
    if keep_since is not None:
        age = (now - keep_since).total_seconds() / 3600.0
        hours = max(hours, max(age, 0.0) + float(margin))
    return math.ceil(hours - 1e-9)


@contextlib.contextmanager
def _session_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    saved = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def optimize(spark: SparkSession, path: str) -> dict[str, int]:
    """Compact the small files of the Delta table at ``path`` (OPTIMIZE, bin-packing within each
    partition); ``files_removed`` (the small files, now only in older versions) and
    ``files_added``.
    """
    metrics = _table(spark, path, "table").optimize().executeCompaction().first()["metrics"]
    return {"files_removed": int(metrics["numFilesRemoved"]), "files_added": int(metrics["numFilesAdded"])}


def vacuum(spark: SparkSession, path: str, hours: int, *, listing_tasks: int = 8) -> dict[str, Optional[int]]:
    """VACUUM the Delta table at ``path`` with a retention of ``hours`` (whole hours: Delta
    rounds them); ``files_deleted`` (files and emptied folders, from the VACUUM END entry Delta
    logs; None when vacuum logging is off).

    Delta's check against short retentions is off for this call (module docstring): the caller
    chose ``hours``. ``listing_tasks``: tasks of the folder listing.
    """
    table = _table(spark, path, "table")
    before = history(spark, path, 1)[-1].version
    with _session_conf(spark, {_RETENTION_CHECK: "false", _LISTING_PARALLELISM: str(max(1, listing_tasks))}):
        table.vacuum(float(int(hours)))
    ends = [c for c in history(spark, path, 4) if c.version > before and c.operation == "VACUUM END"]
    deleted = ends[-1].metrics.get("numDeletedFiles") if ends else None
    return {"files_deleted": None if deleted is None else int(deleted)}


def properties(spark: SparkSession, path: str) -> dict[str, str]:
    """The table properties of the Delta table at ``path``."""
    return dict(_table(spark, path, "table").detail().first()["properties"] or {})


def interval_hours(text: Optional[str], default: float) -> float:
    """Hours of a Delta interval property like ``interval 30 days`` (``default`` when unset)."""
    if not text:
        return default
    match = re.fullmatch(r"\s*(?:interval\s+)?(\d+(?:\.\d+)?)\s*(second|minute|hour|day|week)s?\s*", text, re.I)
    if match is None:
        raise SnapshotError(f"cannot read the Delta interval {text!r} (like 'interval 30 days')")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def keep_log(spark: SparkSession, path: str, hours: float) -> Optional[str]:
    """Make the Delta table at ``path`` keep at least ``hours`` of transaction log (the
    ``delta.logRetentionDuration`` property, in whole days); the new value, or None when it
    already keeps that much.
    """
    have = interval_hours(properties(spark, path).get("delta.logRetentionDuration"), DEFAULT_LOG_RETENTION_HOURS)
    if have >= hours:
        return None
    value = f"interval {math.ceil(hours / 24.0)} days"
    location = _identity(spark, path, "table")[0]
    spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ('delta.logRetentionDuration' = '{value}')")
    return value


def merge_rows(spark: SparkSession, source_df: DataFrame, path: str, *, keys: Sequence[str],
               update: Mapping[str, str], update_when: str | None = None, insert: bool = True,
               where: str | None = None) -> Commit:
    """MERGE ``source_df`` (alias ``s``) into the Delta table at ``path`` (alias ``t``) on equal
    ``keys``, in one commit, and return that commit.

    A matched row for which ``update_when`` holds (SQL over ``t.`` and ``s.``; None: always)
    gets ``update`` (target column -> SQL expression); with ``insert`` an unmatched source row
    is inserted whole (the table's columns taken from ``s`` by name). With ``insert`` a missing
    table is created first with ``source_df``'s schema (its own commit, version 0); without it
    the table must exist. ``where`` (SQL over ``t.``, e.g. ``t.date IN (DATE'2026-01-31')``)
    narrows the target rows looked at, so a table partitioned by it is read only there.
    ``source_df`` must hold at most one row per key (Delta refuses a MERGE where two source rows
    match one target row). Every source row is looked at, and Delta rewrites the files of the
    matched rows even where ``update_when`` leaves them as they are: give it only the rows that
    change, and no MERGE at all when none does (then no table version is written).
    """
    from delta.tables import DeltaTable

    if insert:
        (DeltaTable.createIfNotExists(spark).location(path).addColumns(source_df.schema).execute())
    table = DeltaTable.forPath(spark, path)
    on = " AND ".join(f"t.`{key}` = s.`{key}`" for key in keys) + (f" AND ({where})" if where else "")
    merge = (table.alias("t").merge(source_df.alias("s"), on)
             .whenMatchedUpdate(condition=update_when, set=dict(update)))
    if insert:
        merge = merge.whenNotMatchedInsertAll()
    merge.execute()
    return history(spark, path, 1)[-1]



def sql_string(value: str) -> str:
    """``value`` as a Spark SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
