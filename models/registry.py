"""Model registry: versioned model folders under one root (a local folder or an ``s3a://`` URI).

Layout::

    <root>/<kind>/v0001/model/         artifacts written by the model's own ``save(path)``
    <root>/<kind>/v0001/version.json   {"kind", "version", "created", "params", "data_window",
                                        "metrics", "metric", "path", "snapshots", ...}
    <root>/<kind>/champion.json        {"version": "v0001", "metric": ..., "value": ..., "updated"}

``register`` writes ``version.json`` last, so a folder without it is an unfinished write and is
ignored by ``versions``. The champion moves to the new version when it passed its promotion
gates (``gate_failures`` empty: the caller judges them, models/training.py ``check_gates``) and
is not worse than the current champion on ``metric`` by more than ``tolerance``
(``new >= champion - tolerance`` when higher is better); otherwise the version is a challenger.
Each version's ``decision`` (``promoted`` | ``challenger``), ``reasons``, ``warnings`` and
``gate_metrics`` are recorded in its ``version.json``. :func:`promote` moves the champion by
hand; the pointer then says ``promoted_by: manual``, who, when, why and the ``previous``
champion. There is no locking: two concurrent ``register`` calls for the same kind may
pick the same version number, so run training jobs for one kind one at a time.

``snapshots`` (given by training, models/snapshots.py) names the Delta version of each table a
version was trained on: ``{"features": {"location", "version", "timestamp", "table_id", "path"},
"labels": {...}}``; :func:`snapshots_in_use` lists them for lake maintenance, which keeps them
readable.

Files go through runtime/fs (plain paths need no Spark; ``s3a://`` and other URIs use the active
SparkSession's Hadoop file systems). The registry knows no model class: whoever loads a version
says how (``load_version(..., loader=...)``), so it depends on no detector.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runtime.fs import exists, join, json_safe, list_dirs, read_text, write_text

__all__ = [
    "RegistryError",
    "champion",
    "kinds",
    "listing",
    "load_version",
    "promote",
    "register",
    "snapshots_in_use",
    "version_info",
    "versions",
]

_VERSION_RE = re.compile(r"^v(\d+)$")
VERSION_FILE = "version.json"
CHAMPION_FILE = "champion.json"
MODEL_DIR = "model"


class RegistryError(RuntimeError):
    """The registry has no such kind/version, or a version folder is unreadable."""


def _dumps(data: Mapping) -> str:
    return json.dumps(json_safe(data), indent=2, sort_keys=True, default=str)


def versions(root: str, kind: str) -> list[dict[str, Any]]:
    """Every complete version of ``kind`` (its ``version.json``), oldest first."""
    out = []
    for name in list_dirs(join(root, kind)):
        if _VERSION_RE.match(name) and exists(join(root, kind, name, VERSION_FILE)):
            out.append(json.loads(read_text(join(root, kind, name, VERSION_FILE))))
    return sorted(out, key=lambda info: int(_VERSION_RE.match(info["version"]).group(1)))


def version_info(root: str, kind: str, version: str) -> dict[str, Any]:
    path = join(root, kind, version, VERSION_FILE)
    if not exists(path):
        raise RegistryError(f"no version {version} of '{kind}' under {root}")
    return json.loads(read_text(path))


def champion(root: str, kind: str) -> dict[str, Any] | None:
    """The champion's ``version.json`` (plus ``champion`` with the pointer), or None."""
    pointer_path = join(root, kind, CHAMPION_FILE)
    if not exists(pointer_path):
        return None
    pointer = json.loads(read_text(pointer_path))
    info = version_info(root, kind, pointer["version"])
    info["champion"] = pointer
    return info


def _next_version(root: str, kind: str) -> str:
    numbers = [int(m.group(1)) for m in map(_VERSION_RE.match, list_dirs(join(root, kind))) if m]
    return f"v{max(numbers, default=0) + 1:04d}"


def _is_not_worse(new: float | None, old: float | None, tolerance: float,
                  higher_is_better: bool) -> bool:
    if new is None or (isinstance(new, float) and math.isnan(new)):
        return old is None or (isinstance(old, float) and math.isnan(old))
    if old is None or (isinstance(old, float) and math.isnan(old)):
        return True
    return new >= old - tolerance if higher_is_better else new <= old + tolerance


def register(root: str, kind: str, model: Any, *, metrics: Mapping[str, Any],
             params: Mapping[str, Any] | None = None, data_window: Mapping[str, Any] | None = None,
             metric: str = "average_precision", tolerance: float = 0.0, higher_is_better: bool = True,
             extra: Mapping[str, Any] | None = None,
             save: Callable[[Any, str], None] | None = None,
             gate_failures: Sequence[str] = (), warnings: Sequence[str] = (),
             gate_metrics: Mapping[str, Any] | None = None,
             snapshots: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` as a new version of ``kind``; move the champion if it passed its gates and
    is not worse.

    ``model`` is saved with ``save(model, path)`` or else ``model.save(path)`` into
    ``<version>/model``. ``metrics`` must hold ``metric``. ``gate_failures``: why the version
    may not become champion (any: a challenger); ``warnings`` and ``gate_metrics`` are recorded
    as they are; ``snapshots``: the table versions the model was trained on (module docstring).
    Returns the new ``version.json`` contents with ``promoted`` (bool) and
    ``previous_champion`` (version or None).
    """
    if metric not in metrics:
        raise RegistryError(f"metrics lack the registry metric '{metric}' (have {sorted(metrics)})")
    version = _next_version(root, kind)
    model_path = join(root, kind, version, MODEL_DIR)
    if save is not None:
        save(model, model_path)
    else:
        model.save(model_path)
    current = champion(root, kind)
    new_value = metrics[metric]
    old_value = None if current is None else current.get("metrics", {}).get(metric)
    reasons = list(gate_failures)
    if current is not None and not _is_not_worse(new_value, old_value, tolerance, higher_is_better):
        reasons.append(f"{metric} {_fmt(new_value)} is worse than champion {current['version']}'s "
                       f"{_fmt(old_value)} by more than {tolerance:g}")
    promoted = not reasons
    info = {
        "kind": kind,
        "version": version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_path": model_path,
        "params": dict(params or {}),
        "data_window": dict(data_window or {}),
        "metrics": dict(metrics),
        "metric": metric,
        "tolerance": tolerance,
        "higher_is_better": higher_is_better,
        "champion_at_registration": None if current is None else current["version"],
        "decision": "promoted" if promoted else "challenger",
        "reasons": reasons,
        "warnings": list(warnings),
        "gate_metrics": dict(gate_metrics or {}),
        "snapshots": dict(snapshots or {}),
        **dict(extra or {}),
    }
    write_text(join(root, kind, version, VERSION_FILE), _dumps(info))
    if promoted:
        write_text(join(root, kind, CHAMPION_FILE), _dumps({
            "version": version, "metric": metric, "value": new_value,
            "updated": info["created"], "previous": info["champion_at_registration"],
            "promoted_by": "train",
        }))
    return {**json.loads(_dumps(info)), "promoted": promoted,
            "previous_champion": info["champion_at_registration"]}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def promote(root: str, kind: str, version: str, *, by: str = "manual", user: str | None = None,
            reason: str = "") -> dict[str, Any]:
    """Make ``version`` of ``kind`` the champion by hand; the new pointer (``previous``: the
    champion it replaced, ``promoted_by``, ``user``, ``reason``, ``updated``).

    Raises :class:`RegistryError` when the version does not exist (or is unfinished).
    """
    info = version_info(root, kind, version)
    current = champion(root, kind)
    pointer = {
        "version": version, "metric": info.get("metric"), "value": info.get("metrics", {}).get(info.get("metric")),
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "previous": None if current is None else current["version"],
        "promoted_by": by, "user": user, "reason": reason,
    }
    write_text(join(root, kind, CHAMPION_FILE), _dumps(pointer))
    return json.loads(_dumps(pointer))


def kinds(root: str) -> list[str]:
    """The model kinds under ``root`` that hold at least one version folder."""
    return sorted(name for name in list_dirs(root) if any(_VERSION_RE.match(v) for v in list_dirs(join(root, name))))


# ------------------------------------------------------------------------------------- loading

def load_version(root: str, kind: str, version: str | None = None, *,
                 loader: Callable[[str], Any]) -> tuple:
    """``(model, version_info)`` for ``version`` of ``kind`` (the champion when None), the model
    read from its artifact folder by ``loader(path)`` (e.g. ``RandomCutForestModel.load``).
    """
    if version is None:
        info = champion(root, kind)
        if info is None:
            raise RegistryError(f"'{kind}' has no champion under {root}")
    else:
        info = version_info(root, kind, version)
    return loader(join(root, kind, info["version"], MODEL_DIR)), info


def listing(root: str, kinds_: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per version of each kind (all kinds under ``root`` by default), oldest first:
    version, created, decision, reasons, warnings, test metrics, validation numbers at the
    threshold, and ``champion`` (True for the current one) with the pointer's ``promoted_by``.
    """
    rows = []
    for kind in kinds_ or kinds(root):
        pointer_path = join(root, kind, CHAMPION_FILE)
        pointer = json.loads(read_text(pointer_path)) if exists(pointer_path) else {}
        for info in versions(root, kind):
            validation = info.get("params", {}).get("validation", {}) or {}
            choice = validation.get("threshold_choice", {}) or {}
            metrics = info.get("metrics", {})
            is_champion = pointer.get("version") == info["version"]
            rows.append({
                "kind": kind, "version": info["version"], "created": info.get("created"),
                "champion": is_champion, "promoted_by": pointer.get("promoted_by") if is_champion else None,
                "decision": info.get("decision", "promoted" if info.get("champion_at_registration") is None else None),
                "reasons": info.get("reasons", []), "warnings": info.get("warnings", []),
                "threshold": info.get("params", {}).get("threshold"), "rule": choice.get("rule"),
                "fallback": choice.get("fallback"),
                "validation_precision": choice.get("precision"), "validation_recall": choice.get("recall"),
                "alerts_per_day": choice.get("alerts_per_day"),
                "validation_average_precision": validation.get("average_precision"),
                "test_average_precision": metrics.get("average_precision"), "test_auc_roc": metrics.get("auc_roc"),
                "data_window": info.get("data_window", {}), "snapshots": info.get("snapshots", {}),
            })
    return rows


def snapshots_in_use(root: str, keep: str = "all") -> list[tuple[str, str, dict[str, Any]]]:
    """``(kind, version, snapshots)`` of the versions whose training snapshots must stay readable:
    every complete version (``keep`` "all") or each kind's champion (``keep`` "champions").
    Versions that recorded no snapshot (older ones, or trained on Parquet) are left out.
    """
    if keep not in ("all", "champions"):
        raise RegistryError(f"keep must be 'all' or 'champions', got {keep!r}")
    out = []
    for kind in kinds(root):
        if keep == "all":
            infos = versions(root, kind)
        else:
            info = champion(root, kind)
            infos = [info] if info is not None else []
        out += [(kind, info["version"], info["snapshots"]) for info in infos if info.get("snapshots")]
    return out
