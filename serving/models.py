"""The champions the scoring API uses, reloaded when the registry's champion pointer moves.

Two sources of :class:`scoring.champions.Champions`, both scored through the one scoring core
(scoring/local.py ``score_pandas``):

* :class:`RegistryChampions`: the registry itself (scoring/champions.py ``load_champions``; the
  models' loaders need the Spark session the ``serve`` job holds). Every ``reload_seconds`` it
  reads the ``champion.json`` pointers; when one moved it loads the new champions and swaps them
  in one assignment, so a request sees either the old set or the new one, never a mix and never
  an error (a failed load keeps the old set and is reported in ``/health``).
* a snapshot (:func:`save_snapshot` / :func:`load_snapshot`): the champions' scoring numbers as
  plain files (the RCF's forest arrays, the logistic model's linear terms, thresholds, versions),
  loaded without Spark: what the AWS Lambda bundle carries.
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable, Optional

from models import registry
from models.logistic import LinearTerms
from models.rcf import Forest
from scoring.risk import Stacker
from runtime import fs
from scoring.champions import Champions, load_champions, registry_root

KINDS = ("rcf", "logistic")


def pointers(models_path: str, dataset: str) -> dict[str, Optional[str]]:
    """The champion version each kind's pointer names now (None: no champion)."""
    root = registry_root(models_path, dataset)
    out = {}
    for kind in KINDS:
        path = fs.join(root, kind, registry.CHAMPION_FILE)
        out[kind] = json.loads(fs.read_text(path))["version"] if fs.exists(path) else None
    return out


def versions_of(champions: Champions) -> dict[str, Optional[str]]:
    return {"rcf": champions.rcf_version, "logistic": champions.logistic_version}


class RegistryChampions:
    """The current champions of ``dataset`` under ``models_path``, re-read when a pointer moves.

    ``current()`` is what a request calls: at most every ``reload_seconds`` it compares the
    pointers with the loaded versions and reloads on a difference. ``loader`` is
    :func:`scoring.champions.load_champions` (a test may pass another).
    """

    def __init__(self, models_path: str, dataset: str, *, reload_seconds: float = 2.0,
                 loader: Callable[[str, str], Champions] = load_champions, clock: Callable[[], float] = time.monotonic):
        self.models_path, self.dataset = models_path, dataset
        self.reload_seconds = float(reload_seconds)
        self.loader, self.clock = loader, clock
        self._lock = threading.Lock()
        self.champions = loader(models_path, dataset)
        self.loaded_at = clock()
        self._checked = self.loaded_at
        self.reloads = 0
        self.last_error: Optional[str] = None

    def current(self) -> Champions:
        now = self.clock()
        if now - self._checked >= self.reload_seconds and self._lock.acquire(blocking=False):
            try:
                self._checked = now
                self._reload_if_moved()
            finally:
                self._lock.release()
        return self.champions

    def _reload_if_moved(self) -> None:
        try:
            wanted = pointers(self.models_path, self.dataset)
            have = versions_of(self.champions)
            if all(wanted[k] == have[k] for k in KINDS if wanted[k] is not None):
                return
            fresh = self.loader(self.models_path, self.dataset)
        except Exception as exc:  # noqa: BLE001 - keep serving the loaded champions; /health reports it
            self.last_error = f"champion reload failed: {type(exc).__name__}: {exc}"
            return
        self.champions = fresh          # one assignment: a request sees the old set or the new one
        self.loaded_at, self.reloads, self.last_error = self.clock(), self.reloads + 1, None


class FixedChampions:
    """Champions that never change (a snapshot in a Lambda bundle)."""

    def __init__(self, champions: Champions):
        self.champions = champions
        self.reloads, self.last_error = 0, None

    def current(self) -> Champions:
        return self.champions


# --------------------------------------------------------------------------- snapshots

SNAPSHOT = "champions.json"
FOREST = "rcf_forest.npz"


def save_snapshot(champions: Champions, folder: str) -> None:
    """The champions' scoring numbers under ``folder`` (``champions.json`` + the forest's arrays)."""
    os.makedirs(folder, exist_ok=True)
    meta: dict[str, Any] = {"feature_cols": list(champions.feature_cols),
                            "rcf_feature_cols": champions.rcf_feature_cols,
                            "rcf": None, "logistic": None, "stacker": None}
    if champions.stacker is not None:     # the stacked risk's combiner (scoring/risk.py), when the registry has one
        meta["stacker"] = {"version": champions.stacker_version, "stacker": champions.stacker.as_dict()}
    if champions.rcf is not None:
        meta["rcf"] = {"version": champions.rcf_version, "threshold": float(champions.rcf.threshold)}
        with open(f"{folder}/{FOREST}", "wb") as out:
            out.write(champions.rcf.forest.to_bytes())
    if champions.logistic is not None:
        meta["logistic"] = {"version": champions.logistic_version, "threshold": float(champions.logistic.threshold),
                            "terms": dataclasses.asdict(champions.logistic.terms)}
    with open(f"{folder}/{SNAPSHOT}", "w", encoding="utf-8") as out:
        json.dump(meta, out, indent=1)


def load_snapshot(folder: str) -> Champions:
    """:class:`Champions` from :func:`save_snapshot`'s files, without Spark: the models are plain
    stand-ins holding what scoring reads (``forest`` and ``threshold``; ``terms`` and ``threshold``).
    """
    with open(f"{folder}/{SNAPSHOT}", encoding="utf-8") as f:
        meta = json.load(f)
    rcf = logistic = None
    if meta["rcf"]:
        with open(f"{folder}/{FOREST}", "rb") as f:
            rcf = SimpleNamespace(forest=Forest.from_bytes(f.read()), threshold=meta["rcf"]["threshold"])
    if meta["logistic"]:
        t = meta["logistic"]["terms"]
        terms = LinearTerms(**{k: tuple(v) if isinstance(v, list) else v for k, v in t.items()})
        logistic = SimpleNamespace(terms=terms, threshold=meta["logistic"]["threshold"])
    stacker = meta.get("stacker")
    return Champions(feature_cols=meta["feature_cols"], rcf=rcf,
                     rcf_version=meta["rcf"]["version"] if meta["rcf"] else None,
                     logistic=logistic, logistic_version=meta["logistic"]["version"] if meta["logistic"] else None,
                     rcf_feature_cols=meta["rcf_feature_cols"],
                     stacker=Stacker.from_dict(stacker["stacker"]) if stacker else None,
                     stacker_version=stacker["version"] if stacker else None)
