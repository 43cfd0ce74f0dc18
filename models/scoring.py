"""One scoring path for the nightly job, the evaluation and the stream.

``score_events(features_df, champions)`` adds, to a feature table's rows:
``rcf_score``, ``logistic_score`` (null without a logistic champion), ``risk`` in [0, 1]
(models/risk.py: each detector squashed to 0.5 at its own threshold, then the max, or noisy-OR),
``is_anomaly`` (risk >= the configured cut; with max and 0.5: some detector over its threshold),
``reasons`` and the model versions.

``reasons`` (array<string>, strongest first, e.g. ``rcf:bytes_down_z``) explains flagged rows
only: it is the empty array wherever ``is_anomaly`` is false. It is evaluated inside a
``CASE WHEN is_anomaly``, so the other rows pay nothing for it. For a flagged row it holds the
``reasons`` largest positive shares of the two detectors (models/risk.py ``reason_codes``): the
RCF's per-feature attribution and the logistic model's coefficient x standardized value, each
weighted by that detector's risk component. The RCF computes attribution only for rows scoring
above its own threshold (``rcf_attribution="flagged"``, the default: the model's
``attributionScope``), so RCF reasons appear exactly when the RCF itself flags the row; a row
flagged by the logistic model alone is explained by logistic reasons only.
``rcf_attribution="all"`` computes attribution for every row (far slower: it is the
most expensive part of scoring) and gives RCF shares to logistic-only flags too.

Cost per row (not flagged): the RCF score-only kernel and one closed-form expression for the
logistic probability (models/logistic.py); the features go to the RCF as one array column built
from the input columns (no vector assembly). The logistic expression is large: run with
``spark.sql.codegen.hugeMethodLimit=8000`` (see models/logistic.py) or whole-stage codegen makes
a method too big for the JIT, and its stage runs interpreted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from pyspark.ml.feature import VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from models import registry
from models.risk import reason_codes, with_risk

SCORE_COLUMNS = ("rcf_score", "logistic_score", "risk", "is_anomaly", "reasons", "rcf_version",
                 "logistic_version")
_VEC, _ATTR, _CONTRIB = "_score_features", "_rcf_attribution", "_logistic_contributions"


class ScoringError(RuntimeError):
    """No model to score with, or a feature table that does not fit the models."""


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
    rcf, rcf_info = loaded.get("rcf", (None, None))
    logistic, log_info = loaded.get("logistic", (None, None))
    rcf_cols = list((rcf_info or {}).get("params", {}).get("feature_cols") or [])
    log_cols = list((log_info or {}).get("params", {}).get("feature_cols") or getattr(logistic, "feature_cols", []))
    feature_cols = list(dict.fromkeys([*log_cols, *rcf_cols]))  # each model's columns, in order, once
    return Champions(
        feature_cols=feature_cols,
        rcf=rcf, rcf_version=rcf_info["version"] if rcf_info else None,
        logistic=logistic, logistic_version=log_info["version"] if log_info else None,
        info={k: v[1] for k, v in loaded.items()},
        rcf_feature_cols=rcf_cols if rcf_cols and rcf_cols != feature_cols else None,
    )


def assemble(df: DataFrame, feature_cols: Sequence[str], out: str = _VEC) -> DataFrame:
    """Add the feature columns as one vector column (nulls kept; the RCF scores them as null)."""
    _check_columns(df, feature_cols)
    return VectorAssembler(inputCols=list(feature_cols), outputCol=out, handleInvalid="keep").transform(df)


def _check_columns(df: DataFrame, feature_cols: Sequence[str]) -> None:
    missing = [c for c in feature_cols if c not in df.columns]
    if missing:
        raise ScoringError(f"the feature table lacks column(s) the models need: {', '.join(missing)}")


def feature_array(feature_cols: Sequence[str]) -> Column:
    """array<double> of the feature columns (a null feature is a null element: a null RCF score)."""
    return F.array(*[F.col(c).cast("double") for c in feature_cols])


def score_events(features_df: DataFrame, champions: Champions, *, risk_method: str = "max",
                 anomaly_risk: float = 0.5, reasons: int = 3, rcf_attribution: str = "flagged") -> DataFrame:
    """Return ``features_df`` plus the score columns (see the module docstring)."""
    if rcf_attribution not in ("flagged", "all"):
        raise ValueError(f"rcf_attribution must be 'flagged' or 'all', got {rcf_attribution!r}")
    rcf, logistic = champions.rcf, champions.logistic
    rcf_cols = list(champions.rcf_feature_cols or champions.feature_cols)
    _check_columns(features_df, [*(rcf_cols if rcf is not None else []),
                                 *(logistic.feature_cols if logistic is not None else [])])
    out = features_df
    rcf_threshold = logistic_threshold = None
    if logistic is not None:
        out = logistic.score_column(out, "logistic_score")
        logistic_threshold = logistic.threshold
    else:
        out = out.withColumn("logistic_score", F.lit(None).cast("double"))
    if rcf is not None:
        model = rcf.copy().setFeaturesCol(_VEC).setScoreCol("rcf_score") \
            .setAttributionCol(_ATTR if reasons > 0 else "").setPredictionCol("")
        if reasons > 0 and rcf_attribution == "flagged":
            model.setAttributionScope("flagged")
        out = model.transform(out.withColumn(_VEC, feature_array(rcf_cols))).drop(_VEC)
        rcf_threshold = model.threshold
    else:
        out = out.withColumn("rcf_score", F.lit(None).cast("double"))
    out = with_risk(out, rcf_threshold=rcf_threshold, logistic_threshold=logistic_threshold,
                    method=risk_method, risk_col="risk")
    out = out.withColumn("is_anomaly", F.col("risk") >= F.lit(float(anomaly_risk)))
    no_reasons = F.array().cast("array<string>")
    if reasons > 0:
        if logistic is not None:
            # compiled, and only for flagged rows; the reason codes below are interpreted
            out = out.withColumn(_CONTRIB, F.when(F.col("is_anomaly"), logistic.contributions_column()))
        codes = reason_codes(
            n=reasons,
            rcf_attribution=_ATTR if rcf is not None else None, rcf_features=rcf_cols,
            rcf_weight=F.col("risk_rcf") if rcf is not None else None,
            logistic_contributions=_CONTRIB if logistic is not None else None,
            logistic_features=logistic.feature_cols if logistic is not None else (),
            logistic_weight=F.col("risk_logistic") if logistic is not None else None)
        out = out.withColumn("reasons", F.when(F.col("is_anomaly"), codes).otherwise(no_reasons))
    else:
        out = out.withColumn("reasons", no_reasons)
    kept = [c for c in features_df.columns if c not in SCORE_COLUMNS]
    return out.select(*kept, "rcf_score", "logistic_score", "risk", "reasons", "is_anomaly",
                      F.lit(champions.rcf_version).cast("string").alias("rcf_version"),
                      F.lit(champions.logistic_version).cast("string").alias("logistic_version"))


def score_pandas(frame, champions: Champions, *, risk_method: str = "max", anomaly_risk: float = 0.5,
                 reasons: int = 3, rcf_attribution: str = "flagged"):
    """:func:`score_events` on a pandas frame, computed on the driver with numpy (no Spark job).

    The same definition, operation for operation: the RCF kernels of the model, the logistic
    closed form (models/logistic.py ``probability_array``), the risk formulas' numpy twins and the
    reason codes ranked as Spark ranks them; ``tests/unit/test_scoring.py`` checks it against
    :func:`score_events`. For micro-batches that are on the driver already (the stream's
    incremental engine): a few hundred thousand rows score in about a second on one core, where
    a Spark pass would ship them to a Python worker and back. Returns a new frame: ``frame``'s
    columns plus ``rcf_score``, ``logistic_score``, ``risk``, ``reasons``, ``is_anomaly`` and the
    versions (a missing score is NaN).
    """
    import numpy as np

    from models.logistic import probability_array, standardized_matrix
    from models.risk import combine_risk_array, logistic_risk_array, rcf_risk_array, reason_codes_array

    if rcf_attribution not in ("flagged", "all"):
        raise ValueError(f"rcf_attribution must be 'flagged' or 'all', got {rcf_attribution!r}")
    rcf, logistic = champions.rcf, champions.logistic
    rcf_cols = list(champions.rcf_feature_cols or champions.feature_cols)
    needed = [*(rcf_cols if rcf is not None else []), *(logistic.feature_cols if logistic is not None else [])]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ScoringError(f"the feature table lacks column(s) the models need: {', '.join(missing)}")
    n = len(frame)
    out = frame.drop(columns=[c for c in SCORE_COLUMNS if c in frame.columns]).copy()
    rcf_score = logistic_score = risk_rcf = risk_logistic = attribution = z = None
    if logistic is not None:
        z = standardized_matrix(logistic.terms, frame)
        logistic_score = probability_array(logistic.terms, z)
        risk_logistic = logistic_risk_array(logistic_score, logistic.threshold)
    if rcf is not None:
        X = np.empty((n, len(rcf_cols)))
        for j, c in enumerate(rcf_cols):
            X[:, j] = frame[c].to_numpy(dtype=np.float64, na_value=np.nan)
        min_score = rcf.threshold if rcf_attribution == "flagged" else None
        rcf_score, attribution = _rcf_in_threads(rcf.forest, X, attribution=reasons > 0, min_score=min_score)
        risk_rcf = rcf_risk_array(rcf_score, rcf.threshold)
    risk = combine_risk_array(risk_rcf, risk_logistic, method=risk_method)
    is_anomaly = risk >= float(anomaly_risk)
    none: list[str] = []
    codes = [none] * n     # one shared empty list; flagged rows get their own below
    flagged = np.flatnonzero(is_anomaly)
    if reasons > 0 and len(flagged):
        ranked = reason_codes_array(
            n=reasons,
            rcf_attribution=attribution[flagged] if attribution is not None else None, rcf_features=rcf_cols,
            rcf_weight=risk_rcf[flagged] if risk_rcf is not None else None,
            logistic_contributions=(np.asarray(logistic.terms.weights) * z[flagged]) if logistic is not None else None,
            logistic_features=logistic.feature_cols if logistic is not None else (),
            logistic_weight=risk_logistic[flagged] if risk_logistic is not None else None)
        for i, codes_i in zip(flagged, ranked, strict=True):
            codes[i] = codes_i
    out["rcf_score"] = rcf_score if rcf_score is not None else np.full(n, np.nan)
    out["logistic_score"] = logistic_score if logistic_score is not None else np.full(n, np.nan)
    out["risk"] = risk
    out["reasons"] = codes
    out["is_anomaly"] = is_anomaly
    out["rcf_version"] = champions.rcf_version
    out["logistic_version"] = champions.logistic_version
    return out


def _rcf_in_threads(forest, X, *, attribution: bool, min_score, min_rows: int = 20_000):
    """RCF scores (and attributions) of ``X``, in row chunks on all cores for large ``X``.

    The compiled kernels release the GIL, so threads score chunks side by side; every row's
    numbers are the same as in one call (rows are scored independently).
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def one(part):
        if attribution:
            return forest.score_and_attribution(part, min_score=min_score)
        return forest.score(part), None

    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or len(X) < min_rows:
        return one(X)
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(one, np.array_split(X, workers)))
    scores = np.concatenate([p[0] for p in parts])
    return scores, (np.concatenate([p[1] for p in parts]) if attribution else None)


def champion_scorer(config) -> Callable[[DataFrame], DataFrame]:
    """For the stream: a ``score(features_df)`` that uses the champions current when it is made."""
    dataset = config["dataset"]
    champions = load_champions(config.path("models"), dataset)
    scoring = config["scoring"]

    def score(features_df: DataFrame) -> DataFrame:
        return score_events(features_df, champions, risk_method=scoring["risk_method"],
                            anomaly_risk=scoring["anomaly_risk"], reasons=scoring["reasons"],
                            rcf_attribution=scoring["rcf_attribution"])

    def score_frame(frame):
        return score_pandas(frame, champions, risk_method=scoring["risk_method"],
                            anomaly_risk=scoring["anomaly_risk"], reasons=scoring["reasons"],
                            rcf_attribution=scoring["rcf_attribution"])

    score.versions = champions.versions  # type: ignore[attr-defined]
    score.pandas = score_frame  # type: ignore[attr-defined]  # the driver-local twin (score_pandas)
    return score
