"""Model registry: versioned model folders under one root (a local folder or an ``s3a://`` URI).

Layout::

    <root>/<kind>/v0001/model/         artifacts written by the model's own ``save(path)``
    <root>/<kind>/v0001/version.json   {"kind", "version", "created", "params", "data_window",
                                        "metrics", "metric", "path", ...}
    <root>/<kind>/champion.json        {"version": "v0001", "metric": ..., "value": ..., "updated"}

``register`` writes ``version.json`` last, so a folder without it is an unfinished write and is
ignored by ``versions``. The champion moves to the new version when it is not worse than the
current champion on ``metric`` by more than ``tolerance`` (``new >= champion - tolerance`` when
higher is better). There is no locking: two concurrent ``register`` calls for the same kind may
pick the same version number, so run training jobs for one kind one at a time.

Files go through runtime/fs (plain paths need no Spark; ``s3a://`` and other URIs use the active
SparkSession's Hadoop file systems). The registry knows no model class: whoever loads a version
says how (``load_version(..., loader=...)``), so it depends on no detector.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from runtime.fs import exists, join, json_safe, list_dirs, read_text, write_text

__all__ = [
    "RegistryError",
    "champion",
    "load_version",
    "register",
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
             save: Callable[[Any, str], None] | None = None) -> dict[str, Any]:
    """Write ``model`` as a new version of ``kind`` and move the champion if it is not worse.

    ``model`` is saved with ``save(model, path)`` or else ``model.save(path)`` into
    ``<version>/model``. ``metrics`` must hold ``metric``. Returns the new ``version.json``
    contents with ``promoted`` (bool) and ``previous_champion`` (version or None).
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
    promoted = current is None or _is_not_worse(new_value, old_value, tolerance, higher_is_better)
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
        **dict(extra or {}),
    }
    write_text(join(root, kind, version, VERSION_FILE), _dumps(info))
    if promoted:
        write_text(join(root, kind, CHAMPION_FILE), _dumps({
            "version": version, "metric": metric, "value": new_value,
            "updated": info["created"], "previous": info["champion_at_registration"],
        }))
    return {**json.loads(_dumps(info)), "promoted": promoted,
            "previous_champion": info["champion_at_registration"]}


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
