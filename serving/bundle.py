"""Building the scoring service: from the lake (the ``serve`` job) or from a bundle (AWS Lambda).

* :func:`service_from_lake`: the registry's champions (reloaded when a pointer moves) and the
  history seeded from the feature table (serving/history.py); records the fast decoder leaves
  over are judged by the stream's Spark decoder (``serve.spark_reasons``).
* :func:`write_bundle` / :func:`load_bundle`: the same service as files loaded without Spark:
  ``config.json`` (the config the bundle was made with), the champions' snapshot
  (serving/models.py) and the history (``history.csv.gz``).
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Optional

from serving.history import TransactionHistory, history_from_features, load_history, save_history
from serving.models import FixedChampions, RegistryChampions, load_snapshot, save_snapshot
from serving.service import ScoringService, SparkJudge, no_spark_judge

CONFIG = "config.json"
HISTORY = "history.csv.gz"


def history_from_lake(config: Mapping, *, days: Optional[int] = None) -> TransactionHistory:
    """The per-entity history from the config's feature table (``paths.features``)."""
    conf = config["features"]["transactions"]
    return history_from_features(config.path("features"), config["storage"]["format"],
                                 windows_days=conf["windows_days"], delay_days=conf["delay_days"],
                                 days=days if days is not None else config["serve"]["history_days"])


def service_from_lake(config, *, history: Optional[TransactionHistory] = None,
                      champions=None) -> ScoringService:
    """The service of the ``serve`` job (module docstring)."""
    serve = config["serve"]
    champions = champions or RegistryChampions(config.path("models"), config["dataset"],
                                               reload_seconds=serve["reload_seconds"])
    judge = SparkJudge(config) if serve["spark_reasons"] else no_spark_judge
    return ScoringService(config, champions, history if history is not None else history_from_lake(config), judge)


def write_bundle(config, folder: str, *, history: Optional[TransactionHistory] = None) -> dict:
    """Write the Lambda bundle of ``config``'s current champions and history under ``folder``;
    what it holds (versions, history rows).
    """
    from scoring.champions import load_champions

    os.makedirs(folder, exist_ok=True)
    champions = load_champions(config.path("models"), config["dataset"])
    save_snapshot(champions, folder)
    history = history if history is not None else history_from_lake(config)
    save_history(history, os.path.join(folder, HISTORY))
    with open(os.path.join(folder, CONFIG), "w", encoding="utf-8") as out:
        json.dump(dict(config), out, indent=1, default=str)
    return {"rcf": champions.rcf_version, "logistic": champions.logistic_version, "history_rows": len(history)}


def load_bundle(folder: str) -> ScoringService:
    """The service of a bundle (no Spark: leftover records get the generic reason)."""
    with open(os.path.join(folder, CONFIG), encoding="utf-8") as f:
        config = json.load(f)
    return ScoringService(config, FixedChampions(load_snapshot(folder)), load_history(os.path.join(folder, HISTORY)),
                          no_spark_judge)
