"""The champions a scoring run uses: the current champion of each kind in the model registry."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from models import registry
from models.logistic import LogisticDetector
from models.rcf import RandomCutForestModel
from runtime import fs
from scoring.plan import ScoringError
from scoring.risk import Stacker


@dataclass
class Champions:
    """The models a scoring run uses, with the versions written next to every score.

    ``feature_cols``: the feature table's model inputs (written next to the scores);
    ``rcf_feature_cols``: the columns the RCF was trained on, in its order, when they differ
    (None: ``feature_cols``). The logistic model carries its own list.
    """

    feature_cols: list[str]
    rcf: Any = None
    rcf_version: Optional[str] = None
    logistic: Any = None
    logistic_version: Optional[str] = None
    info: dict = field(default_factory=dict)
    rcf_feature_cols: Optional[list[str]] = None
    stacker: Any = None            # the stacked risk's champion (scoring/risk.py Stacker), when the registry has one
    stacker_version: Optional[str] = None

    @property
    def versions(self) -> tuple[Optional[str], Optional[str]]:
        return self.rcf_version, self.logistic_version


_LOADERS = {"rcf": RandomCutForestModel.load, "logistic": LogisticDetector.load}


STACKER = "stacker"        # the registry kind of the stacked risk (models/training.py registers it)


def load_stacker(path: str) -> Stacker:
    """The stacker saved in a registry version's model folder."""
    return Stacker.from_dict(json.loads(fs.read_text(fs.join(path, "stacker.json"))))


def registry_root(models_path: str, dataset: str) -> str:
    """The registry folder of ``dataset``'s models under ``models_path``."""
    return fs.join(models_path, dataset)


def load_champions(models_path: str, dataset: str, kinds: Sequence[str] = ("rcf", "logistic")) -> Champions:
    """The current champion of each kind for ``dataset`` (a kind without one is left out)."""
    root = registry_root(models_path, dataset)
    loaded: dict[str, tuple[Any, dict]] = {}
    for kind in kinds:
        if registry.champion(root, kind) is not None:
            loaded[kind] = registry.load_version(root, kind, loader=_LOADERS[kind])
    if not loaded:
        raise ScoringError(f"no champion model under {root}: run the train job first "
                           f"(python -m jobs train --conf ... --dataset {dataset})")
    rcf, rcf_info = loaded.get("rcf", (None, None))
    logistic, log_info = loaded.get("logistic", (None, None))
    rcf_cols = list((rcf_info or {}).get("params", {}).get("feature_cols") or [])
    log_cols = list((log_info or {}).get("params", {}).get("feature_cols") or getattr(logistic, "feature_cols", []))
    feature_cols = list(dict.fromkeys([*log_cols, *rcf_cols]))  # each model's columns, in order, once
    stacker, stacker_info = None, None
    if registry.champion(root, STACKER) is not None:
        stacker, stacker_info = registry.load_version(root, STACKER, loader=load_stacker)
        if not set(stacker.detectors) <= set(loaded):
            stacker, stacker_info = None, None  # it combines a detector that has no champion: not usable
    return Champions(
        stacker=stacker, stacker_version=stacker_info["version"] if stacker_info else None,
        feature_cols=feature_cols,
        rcf=rcf, rcf_version=rcf_info["version"] if rcf_info else None,
        logistic=logistic, logistic_version=log_info["version"] if log_info else None,
        info={k: v[1] for k, v in loaded.items()},
        rcf_feature_cols=rcf_cols if rcf_cols and rcf_cols != feature_cols else None,
    )
