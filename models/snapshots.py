"""The table versions a model is trained on: what ``--as-of`` names, read exactly, recorded in the
registry, and kept readable by lake maintenance.

Training reads the feature table at one Delta version (the latest, or the one ``--as-of``
names) and records it with the model version (``snapshots`` in its ``version.json``), together
with the labels table's version when a labels table exists; a later run with
``--as-of`` re-reads exactly those rows (Delta time travel), so a version can be trained again
from the data it was trained on. ``--as-of`` takes:

- a feature table version (``3``): the labels table at its latest version committed at or
  before that feature version;
- a time (``2026-01-31T08:00:00``, UTC unless it carries an offset): each table at its latest
  version committed at or before it;
- a registry version (``v0002``, or ``logistic:v0002``): exactly the table versions that model
  version recorded; ``champion``: those of the current champions (they must agree).

The feature table carries the labels known when it was built (features/), so the labels
version is recorded for the record: it says which labels existed when the model was trained.

Lake maintenance (:func:`maintain_tables`, ``python -m jobs maintain``) compacts each Delta
table (OPTIMIZE) and vacuums it with a retention that keeps every snapshot a registry version
still names (``maintain.keep``: every version, or the champions only), and never less than
``maintain.retention_hours``.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from pyspark.sql import DataFrame, SparkSession

from models import registry
from runtime import delta, fs
from runtime.errors import InputError
from runtime.progress import RunSummary, log
from runtime.storage import StorageError, read_table

_MODEL_REF = re.compile(r"^(?:(?P<kind>[a-z_]+):)?(?P<version>v\d+)$")


@dataclass
class TrainingData:
    """The feature table as read (``table``) and what to record of it (``snapshots``)."""

    table: DataFrame
    snapshots: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``features v3 (time), labels v1 (time)``: the versions read, for a progress line."""
        parts = [f"{name} {snap_text(snap)}" for name, snap in self.snapshots.items() if isinstance(snap, dict)]
        return ", ".join(parts) or "no table versions (not Delta)"


def snap_text(snap: Optional[Mapping[str, Any]]) -> str:
    """One recorded snapshot as text: ``v3 (2026-...Z)``, or ``parquet (no version)``."""
    if not snap:
        return "-"
    if snap.get("version") is None:
        return f"{snap.get('format', '?')} (no version)"
    return f"v{snap['version']} ({snap.get('timestamp')})"


def _recorded(spark: SparkSession, path: str, info: Mapping[str, Any], name: str, what: str) -> delta.Snapshot:
    """The snapshot of table ``name`` that registry version ``info`` recorded, checked to be the
    table at ``path`` (same Delta table id) and still in its log.
    """
    label = f"{info.get('kind')} {info.get('version')}"
    snap = (info.get("snapshots") or {}).get(name)
    if not snap or snap.get("version") is None:
        raise delta.SnapshotError(f"{label} records no Delta version of its {what} (trained before versions "
                                  "were recorded, or on a Parquet table): give --as-of a version or a time")
    here = delta.current(spark, path, what=what)
    if snap.get("table_id") and snap["table_id"] != here.table_id:
        raise delta.SnapshotError(f"{label} was trained on the {what} {snap.get('location')} (table id "
                                  f"{snap['table_id']}), not on {path} (table id {here.table_id})")
    return delta.resolve(spark, path, int(snap["version"]), what=what)


def _model_infos(root: str, spec: str, kinds: Sequence[str]) -> list[dict[str, Any]]:
    """The registry versions ``spec`` names: ``champion``, ``vNNNN`` (that version of each of
    ``kinds`` that has it) or ``kind:vNNNN``.
    """
    if spec == "champion":
        infos = [info for kind in kinds if (info := registry.champion(root, kind)) is not None]
        if not infos:
            raise InputError(f"--as-of champion: no champion under {root}")
        return infos
    match = _MODEL_REF.match(spec)
    kind_given = match.group("kind")
    infos = []
    for kind in [kind_given] if kind_given else kinds:
        try:
            infos.append(registry.version_info(root, kind, match.group("version")))
        except registry.RegistryError:
            if kind_given:
                raise InputError(f"--as-of {spec}: no version {match.group('version')} of '{kind}' under {root}") \
                    from None
    if not infos:
        raise InputError(f"--as-of {spec}: no version {spec} of {' or '.join(kinds)} under {root}")
    return infos


def _agreed(spark: SparkSession, path: str, infos: Sequence[Mapping[str, Any]], name: str,
            what: str) -> Optional[delta.Snapshot]:
    """The one snapshot of table ``name`` that every one of ``infos`` recorded (an error when
    they differ); None when none of them recorded that table (``labels`` may be absent).
    """
    if name != "features" and not any((info.get("snapshots") or {}).get(name) for info in infos):
        return None
    snaps = {(info["kind"], info["version"]): _recorded(spark, path, info, name, what) for info in infos}
    if len({s.version for s in snaps.values()}) > 1:
        named = ", ".join(f"{k} {v}: v{s.version}" for (k, v), s in snaps.items())
        raise InputError(f"the model versions were trained on different versions of the {what} ({named}): "
                         "name one, e.g. --as-of logistic:v0001")
    return next(iter(snaps.values()))


def _labels_at(spark: SparkSession, labels: Optional[str], moment: Optional[dt.datetime]) -> Optional[delta.Snapshot]:
    """The labels table's snapshot at ``moment`` (the latest when None); None without a labels
    table or when it had no version yet then.
    """
    if not labels or not delta.is_delta(spark, labels):
        return None
    try:
        return delta.resolve(spark, labels, moment, what="labels table")
    except delta.SnapshotError:
        if moment is None:
            raise
        return None  # the labels table did not exist yet at that time


def _record(snapshot: delta.Snapshot, path: str) -> dict[str, Any]:
    return {**snapshot.as_dict(), "path": path}


def open_training_data(spark: SparkSession, *, features: str, fmt: str, labels: Optional[str] = None,
                       as_of: Optional[str] = None, registry_root: Optional[str] = None,
                       kinds: Sequence[str] = ("rcf", "logistic")) -> TrainingData:
    """The feature table at ``features`` as of ``as_of`` (module docstring; None: its latest
    version) and the snapshots to record: ``features`` and, when the ``labels`` path holds a
    Delta table, ``labels``. ``registry_root`` and ``kinds`` resolve ``vNNNN`` and ``champion``.

    A table that is not Delta (``storage.format: parquet``) is read as it is and recorded without
    a version; ``as_of`` then is an error. Raises :class:`InputError` naming the table, the
    version or time asked and the versions it has.
    """
    try:
        if as_of is None:
            if not delta.is_delta(spark, features):
                table = read_table(spark, features, fmt)
                return TrainingData(table, {"features": {"path": features, "format": fmt, "version": None}})
            snap = delta.resolve(spark, features, what="feature table")
            label_snap = _labels_at(spark, labels, None)
        else:
            spec = as_of.strip()
            if spec == "champion" or _MODEL_REF.match(spec):
                if registry_root is None:
                    raise InputError(f"--as-of {spec} needs the model registry")
                infos = _model_infos(registry_root, spec, kinds)
                snap = _agreed(spark, features, infos, "features", "feature table")
                label_snap = (_agreed(spark, labels, infos, "labels", "labels table")
                              if labels and delta.is_delta(spark, labels) else None)
            else:
                point = delta.parse_as_of(spec)
                snap = delta.resolve(spark, features, point, what="feature table")
                label_snap = _labels_at(spark, labels, point if isinstance(point, dt.datetime) else snap.time)
        table = delta.read(spark, snap)
    except (StorageError, registry.RegistryError) as exc:
        raise InputError(str(exc)) from None
    recorded = {"features": _record(snap, features)}
    if label_snap is not None:
        recorded["labels"] = _record(label_snap, labels)
    if as_of is not None:
        recorded["as_of"] = as_of
    return TrainingData(table, recorded)


# ----------------------------------------------------------------------------------- maintenance

def delta_tables(spark: SparkSession, locations: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(name, path)`` of each Delta table at the ``locations`` (name -> path): the location
    itself when it is one, else each folder directly inside it that is one (the summary tables,
    ``<summary>/<table>``). Locations that do not exist are left out.
    """
    found = []
    for name, path in locations.items():
        if delta.is_delta(spark, path):
            found.append((name, path))
            continue
        found += [(f"{name}/{folder}", fs.join(path, folder)) for folder in fs.list_dirs(path)
                  if not folder.startswith(("_", ".")) and "=" not in folder  # not a partition of a plain table
                  and delta.is_delta(spark, fs.join(path, folder))]
    return found


def kept_versions(spark: SparkSession, path: str, in_use: Sequence[tuple[str, str, Mapping[str, Any]]]
                  ) -> tuple[dict[int, list[str]], Optional[dt.datetime], list[str]]:
    """For the Delta table at ``path``: (its versions the registry names -> the model versions
    naming them, the commit time of the oldest of them, warnings for versions whose log is gone).
    """
    table_id = delta.current(spark, path).table_id
    kept: dict[int, list[str]] = {}
    for kind, version, snaps in in_use:
        for snap in snaps.values():
            if isinstance(snap, dict) and snap.get("table_id") == table_id and snap.get("version") is not None:
                kept.setdefault(int(snap["version"]), []).append(f"{kind} {version}")
    if not kept:
        return kept, None, []
    times = {c.version: c.time for c in delta.history(spark, path)}
    gone = sorted(v for v in kept if v not in times)
    warnings = [f"v{v} (trained on by {', '.join(kept[v])}) is no longer in the table's log: it cannot be read"
                for v in gone]
    alive = [times[v] for v in kept if v in times]
    return kept, (min(alive) if alive else None), warnings


def maintain_tables(spark: SparkSession, locations: Mapping[str, str], *, registry_root: str, keep: str,
                    minimum_hours: float, margin_hours: float, optimize: bool = True,
                    listing_tasks: int = 8) -> RunSummary:
    """OPTIMIZE and VACUUM each Delta table at ``locations`` (name -> path; see
    :func:`delta_tables`), keeping every snapshot the registry at ``registry_root`` names
    (``keep``: all | champions) readable; prints one line per table. The summary's ``extra``:
    tables, files compacted and deleted.
    """
    in_use = registry.snapshots_in_use(registry_root, keep) if fs.exists(registry_root) else []
    tables = delta_tables(spark, locations)
    summary = RunSummary("maintain", extra={"tables": len(tables), "compacted": 0, "deleted": 0, "kept_versions": 0})
    absent = [name for name in locations if not any(t == name or t.startswith(name + "/") for t, _ in tables)]
    if absent:
        log("maintain", f"no Delta table at {', '.join(absent)}: nothing to do there")
    for name, path in tables:
        kept, since, warnings = kept_versions(spark, path, in_use)
        for warning in warnings:
            log("maintain", f"WARNING {name}: {warning}")
        compacted = delta.optimize(spark, path) if optimize else {"files_removed": 0, "files_added": 0}
        hours = delta.retention_hours(dt.datetime.now(dt.timezone.utc), since, minimum=minimum_hours,
                                      margin=margin_hours)
        log_kept = delta.keep_log(spark, path, hours)
        vacuumed = delta.vacuum(spark, path, hours, listing_tasks=listing_tasks)
        deleted = vacuumed["files_deleted"]
        keeps = ("; keeps " + ", ".join(f"v{v} ({', '.join(kept[v])})" for v in sorted(kept))) if kept else ""
        log("maintain", f"{name} {path}: optimize {compacted['files_removed']} files -> {compacted['files_added']}; "
                        f"vacuum retention {hours:,} h: {'?' if deleted is None else deleted} files deleted{keeps}"
                        + (f"; delta.logRetentionDuration set to '{log_kept}'" if log_kept else ""))
        summary.extra["compacted"] += compacted["files_removed"]
        summary.extra["deleted"] += deleted or 0
        summary.extra["kept_versions"] += len(kept)
    return summary
