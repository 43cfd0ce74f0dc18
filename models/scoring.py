"""One scoring path for the nightly job, the evaluation and the stream.

``score_events(features_df, champions)`` adds, to a feature table's rows:
``rcf_score``, ``logistic_score`` (null without a logistic champion), ``risk`` in [0, 1]
(models/risk.py: each detector squashed to 0.5 at its own threshold, then the max, or noisy-OR),
``is_anomaly`` (risk >= the configured cut; with max and 0.5: some detector over its threshold),
``reasons`` (top reason codes such as ``rcf:bytes_down_zscore_1d``) and the model versions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from models import registry
from models.risk import with_risk

SCORE_COLUMNS = ("rcf_score", "logistic_score", "risk", "is_anomaly", "reasons", "rcf_version",
                 "logistic_version")
_VEC, _ATTR, _CONTRIB = "_score_features", "_rcf_attribution", "_logistic_contributions"


class ScoringError(RuntimeError):
    """No model to score with, or a feature table that does not fit the models."""


@dataclass
class Champions:
    """The models a scoring run uses, with the versions written next to every score."""

    feature_cols: list[str]
    rcf: Any = None
    rcf_version: Optional[str] = None
    logistic: Any = None
    logistic_version: Optional[str] = None
    info: dict = field(default_factory=dict)

    @property
    def versions(self) -> tuple[Optional[str], Optional[str]]:
        return self.rcf_version, self.logistic_version


def registry_root(models_path: str, dataset: str) -> str:
    return registry.join(models_path, dataset)


def load_champions(models_path: str, dataset: str, kinds: Sequence[str] = ("rcf", "logistic")) -> Champions:
    """The current champion of each kind for ``dataset`` (a kind without one is left out)."""
    root = registry_root(models_path, dataset)
    loaded: dict[str, tuple[Any, dict]] = {}
    for kind in kinds:
        if registry.champion(root, kind) is not None:
            loaded[kind] = registry.load_version(root, kind)
    if not loaded:
        raise ScoringError(f"no champion model under {root}: run the train job first "
                           f"(python -m jobs train --conf ... --dataset {dataset})")
    feature_cols = next(iter(loaded.values()))[1]["params"].get("feature_cols")
    rcf, rcf_info = loaded.get("rcf", (None, None))
    logistic, log_info = loaded.get("logistic", (None, None))
    return Champions(
        feature_cols=list(feature_cols or getattr(logistic, "feature_cols", [])),
        rcf=rcf, rcf_version=rcf_info["version"] if rcf_info else None,
        logistic=logistic, logistic_version=log_info["version"] if log_info else None,
        info={k: v[1] for k, v in loaded.items()},
    )


def assemble(df: DataFrame, feature_cols: Sequence[str], out: str = _VEC) -> DataFrame:
    """The feature columns as one vector column (nulls kept; the RCF scores them as null)."""
    missing = [c for c in feature_cols if c not in df.columns]
    if missing:
        raise ScoringError(f"the feature table lacks column(s) the models need: {', '.join(missing)}")
    return VectorAssembler(inputCols=list(feature_cols), outputCol=out, handleInvalid="keep").transform(df)


def score_events(features_df: DataFrame, champions: Champions, *, risk_method: str = "max",
                 anomaly_risk: float = 0.5, reasons: int = 3) -> DataFrame:
    """``features_df`` plus the score columns (see the module docstring)."""
    cols = champions.feature_cols
    out = features_df
    rcf_threshold = logistic_threshold = None
    if champions.rcf is not None:
        model = champions.rcf.copy().setFeaturesCol(_VEC).setScoreCol("rcf_score") \
            .setAttributionCol(_ATTR).setPredictionCol("")
        out = model.transform(assemble(out, cols))
        rcf_threshold = model.threshold
    else:
        out = out.withColumn("rcf_score", F.lit(None).cast("double"))
    if champions.logistic is not None:
        out = champions.logistic.transform(out, score_col="logistic_score", flag_col="_logistic_flag",
                                           contributions_col=_CONTRIB).drop("_logistic_flag")
        logistic_threshold = champions.logistic.threshold
    else:
        out = out.withColumn("logistic_score", F.lit(None).cast("double"))
    out = with_risk(
        out, rcf_threshold=rcf_threshold, logistic_threshold=logistic_threshold,
        rcf_attribution_col=_ATTR if rcf_threshold is not None else None, rcf_features=cols,
        logistic_contributions_col=_CONTRIB if logistic_threshold is not None else None,
        logistic_features=champions.logistic.feature_cols if champions.logistic is not None else (),
        method=risk_method, reasons=reasons, risk_col="risk", reasons_col="reasons",
    )
    return (out.withColumn("is_anomaly", F.col("risk") >= F.lit(float(anomaly_risk)))
            .withColumn("rcf_version", F.lit(champions.rcf_version).cast("string"))
            .withColumn("logistic_version", F.lit(champions.logistic_version).cast("string"))
            .drop(_VEC, _ATTR, _CONTRIB, "risk_rcf", "risk_logistic"))


def champion_scorer(config) -> Callable[[DataFrame], DataFrame]:
    """For the stream: a ``score(features_df)`` that uses the champions current when it is made."""
    dataset = config["dataset"]
    champions = load_champions(config.path("models"), dataset)
    scoring = config["scoring"]

    def score(features_df: DataFrame) -> DataFrame:
        return score_events(features_df, champions, risk_method=scoring["risk_method"],
                            anomaly_risk=scoring["anomaly_risk"], reasons=scoring["reasons"])

    score.versions = champions.versions  # type: ignore[attr-defined]
    return score
