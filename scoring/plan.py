"""The scoring core: from a batch's columns (numpy arrays) to scores, risk, flag and reasons.

Every scoring path runs this module on numpy arrays; the adapters only say where a batch's
columns come from and where the results go: scoring/spark.py (a Spark frame, through one
``mapInArrow`` step), scoring/files.py (a Parquet table's files, read and written by the Python
workers), scoring/local.py (a pandas frame on the driver, the stream's micro-batches), and the
SageMaker backend (endpoint scores in, risk, flag and reasons out).

* :class:`ScoringPlan`: what scoring needs from the champions and the options, as plain values
  (it travels to the executors).
* :class:`Columns`: the one column accessor: a batch's columns by name as float64 arrays
  (NaN = null), each converted once.
* :func:`score_batch`: the detectors' scores of a batch (the logistic closed form in numpy,
  models/logistic.py ``probability_array``; the RCF kernels, models/rcf.py), then
  :func:`score_arrays`: risk, ``is_anomaly`` and reasons (scoring/risk.py).

``reasons`` (strongest first, e.g. ``rcf:bytes_down``) explains flagged rows only: it is the
empty list wherever ``is_anomaly`` is false. A flagged row's reasons are the ``reasons`` largest
positive shares (scoring/risk.py ``reason_codes_array``) of the detectors that flag it on their
own (whose own risk component reaches the cut): the RCF's per-feature attribution and the
logistic model's coefficient x standardized value, each weighted by that detector's risk
component. A row flagged only by the two detectors together (noisy_or, each under its
threshold) is explained by the RCF. ``rcf_attribution="all"`` adds the RCF's shares to every
flagged row (the rows the logistic model flags alone included); the RCF computes attribution
only for the rows it explains.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from models.logistic import LinearTerms, feature_contributions, probability_array
from scoring.risk import (
    RISK_METHODS,
    Stacker,
    combine_risks,
    detector_reasons,
    logistic_probability_at_risk,
    logistic_risk_array,
    rcf_risk_array,
    reason_codes_array,
)

SCORE_COLUMNS = ("rcf_score", "logistic_score", "risk", "is_anomaly", "reasons", "rcf_version",
                 "logistic_version")


class ScoringError(RuntimeError):
    """No model to score with, or a feature table that does not fit the models."""


def scoring_options(section: Mapping[str, Any]) -> dict[str, Any]:
    """The scoring options of the config's ``scoring`` section, as keyword arguments of the
    adapters (``score_events``, ``score_pandas``, ``Scorer``, ...).
    """
    return {key: section[key] for key in ("risk_method", "anomaly_risk", "reasons", "rcf_attribution")}


def check_columns(columns: Sequence[str], needed: Sequence[str], what: str = "the models need") -> None:
    """Raise :class:`ScoringError` naming the ``needed`` columns missing from ``columns``."""
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ScoringError(f"the feature table lacks column(s) {what}: {', '.join(missing)}")


@dataclass(frozen=True)
class ScoringPlan:
    """What the Python side needs to score, as plain values (it travels to the executors).

    ``logistic_cut``: the probability at which the logistic model alone reaches ``anomaly_risk``
    (scoring/risk.py ``logistic_probability_at_risk``), or when stacked, at which it alone brings
    the stacker to its threshold (``Stacker.alone_at``); the JVM sends a row's logistic inputs
    exactly where ``logistic_score >= logistic_cut``, and the reasons use them there. So a stacked
    flag is explained by the detectors that drive it (whose term alone would flag), the RCF where
    none does.
    """

    rcf_threshold: Optional[float]
    rcf_features: tuple[str, ...]
    logistic_threshold: Optional[float]
    logistic_terms: Optional[LinearTerms]
    logistic_cut: float
    risk_method: str = "max"
    anomaly_risk: float = 0.5
    reasons: int = 3
    rcf_attribution: str = "flagged"
    stacker: Optional[Stacker] = None   # risk_method "stacked": the registry's stacker (scoring/risk.py)

    @property
    def alert_risk(self) -> float:
        """The risk at which a row is flagged: the stacker's threshold when stacked, else ``anomaly_risk``."""
        return self.stacker.threshold if self.risk_method == "stacked" else self.anomaly_risk

    def own_risk(self, name: str) -> float:
        """The risk component at which detector ``name`` flags a row on its own and explains it:
        ``anomaly_risk``, or when stacked the component at which it alone reaches the stacker's threshold.
        """
        return self.stacker.alone_at(name) if self.risk_method == "stacked" else self.anomaly_risk

    @property
    def inputs(self) -> list[str]:
        """The columns the models read: the RCF's, then the logistic model's, each once."""
        features = self.logistic_terms.features if self.logistic_terms is not None else ()
        return list(dict.fromkeys([*self.rcf_features, *features]))

    @classmethod
    def of_thresholds(cls, *, rcf: Optional[float] = None, logistic: Optional[float] = None, risk_method: str = "max",
                      anomaly_risk: float = 0.5, reasons: int = 3, stacker: Optional[Stacker] = None) -> ScoringPlan:
        """A plan for detectors known only by their scores and thresholds (a None threshold: no
        such detector), for :func:`score_detector_arrays`.
        """
        return cls(rcf_threshold=rcf, rcf_features=(), logistic_threshold=logistic, logistic_terms=None,
                   logistic_cut=float("inf"), risk_method=_method(risk_method, stacker),
                   anomaly_risk=float(anomaly_risk), reasons=int(reasons), stacker=stacker)

    @classmethod
    def of(cls, champions: Any, *, risk_method: str = "max", anomaly_risk: float = 0.5, reasons: int = 3,
           rcf_attribution: str = "flagged") -> ScoringPlan:
        """The plan of ``champions`` (scoring/champions.py ``Champions``) and the scoring options."""
        if rcf_attribution not in ("flagged", "all"):
            raise ValueError(f"rcf_attribution must be 'flagged' or 'all', got {rcf_attribution!r}")
        if risk_method not in RISK_METHODS:
            raise ValueError(f"risk_method must be one of {', '.join(RISK_METHODS)}, got {risk_method!r}")
        stacker = getattr(champions, "stacker", None)
        rcf, logistic = champions.rcf, champions.logistic
        if rcf is None and logistic is None:
            raise ScoringError("no model to score with: the champions hold neither an RCF nor a logistic model")
        return cls(
            rcf_threshold=rcf.threshold if rcf is not None else None,
            rcf_features=tuple(champions.rcf_feature_cols or champions.feature_cols) if rcf is not None else (),
            logistic_threshold=logistic.threshold if logistic is not None else None,
            logistic_terms=logistic.terms if logistic is not None else None,
            logistic_cut=(logistic_probability_at_risk(
                logistic.threshold, float(anomaly_risk) if _method(risk_method, stacker) != "stacked"
                else stacker.alone_at("logistic")) if logistic is not None else float("inf")),
            risk_method=_method(risk_method, stacker), anomaly_risk=float(anomaly_risk), reasons=int(reasons),
            rcf_attribution=rcf_attribution, stacker=stacker)


def _method(risk_method: str, stacker: Optional[Stacker]) -> str:
    """``stacked`` where a stacker is at hand; ``max`` in its place where the registry has none
    (models trained one detector at a time, or before stacking existed).
    """
    return "max" if risk_method == "stacked" and stacker is None else risk_method


def score_arrays(plan: ScoringPlan, rcf_score: Optional[np.ndarray], logistic_score: Optional[np.ndarray], *,
                 rcf_attribution_of: Callable[[np.ndarray], np.ndarray],
                 logistic_inputs_of: Callable[[np.ndarray], np.ndarray]) -> tuple:
    """``(risk, is_anomaly, reasons)`` from the detectors' scores: the one definition every path runs.

    ``rcf_score``/``logistic_score``: float arrays (NaN where missing) or None without that
    detector. ``rcf_attribution_of(rows)`` returns the RCF attribution (rows x RCF features) of the
    given row positions; ``logistic_inputs_of(rows)`` the logistic model's raw inputs (rows x its
    features, NaN = null) of rows with ``logistic_score >= plan.logistic_cut``. Both are called
    for flagged rows only. ``reasons`` is a list with one list of names per row (rows that are
    not flagged share one empty list).
    """
    risk_rcf, risk_log, risk, is_anomaly = _risk(plan, rcf_score, logistic_score)
    n = len(risk)
    none: list[str] = []
    codes = [none] * n
    flagged = np.flatnonzero(is_anomaly)
    if plan.reasons <= 0 or not len(flagged):
        return risk, is_anomaly, codes
    with np.errstate(invalid="ignore"):  # a missing score (NaN) flags nothing
        rcf_own = (risk_rcf[flagged] >= plan.own_risk("rcf") if risk_rcf is not None
                   else np.zeros(len(flagged), bool))
        log_own = (logistic_score[flagged] >= plan.logistic_cut if risk_log is not None
                   else np.zeros(len(flagged), bool))
    attribution = contributions = None
    if risk_rcf is not None:
        explain = rcf_own | ~log_own if plan.rcf_attribution == "flagged" else np.ones(len(flagged), bool)
        attribution = np.full((len(flagged), len(plan.rcf_features)), np.nan)
        if explain.any():
            attribution[explain] = rcf_attribution_of(flagged[explain])
    if risk_log is not None:
        terms = plan.logistic_terms
        contributions = np.full((len(flagged), len(terms.features)), np.nan)
        if log_own.any():
            contributions[log_own] = feature_contributions(terms, logistic_inputs_of(flagged[log_own]))
    ranked = reason_codes_array(
        n=plan.reasons,
        rcf_attribution=attribution, rcf_features=plan.rcf_features,
        rcf_weight=risk_rcf[flagged] if risk_rcf is not None else None,
        logistic_contributions=contributions,
        logistic_features=plan.logistic_terms.features if risk_log is not None else (),
        logistic_weight=risk_log[flagged] if risk_log is not None else None)
    for i, names in zip(flagged, ranked, strict=True):
        codes[i] = names
    return risk, is_anomaly, codes


def _risk(plan: ScoringPlan, rcf_score: Optional[np.ndarray], logistic_score: Optional[np.ndarray]) -> tuple:
    """``(rcf component, logistic component, risk, is_anomaly)``; a component is None without its detector."""
    risk_rcf = rcf_risk_array(rcf_score, plan.rcf_threshold) if rcf_score is not None else None
    risk_log = logistic_risk_array(logistic_score, plan.logistic_threshold) if logistic_score is not None else None
    risk = combine_risks({"rcf": risk_rcf, "logistic": risk_log}, method=plan.risk_method, stacker=plan.stacker)
    return risk_rcf, risk_log, risk, risk >= plan.alert_risk


def score_detector_arrays(plan: ScoringPlan, rcf_score: Optional[np.ndarray],
                          logistic_score: Optional[np.ndarray]) -> tuple:
    """``(risk, is_anomaly, reasons)`` from the detectors' scores alone, without per-feature parts
    (the SageMaker endpoints return none): the risk and flag of :func:`score_arrays`, and reasons
    that name the detectors at or above their own threshold (scoring/risk.py ``detector_reasons``).
    """
    risk_rcf, risk_log, risk, is_anomaly = _risk(plan, rcf_score, logistic_score)
    components = {name: c for name, c in (("rcf", risk_rcf), ("logistic", risk_log)) if c is not None}
    return risk, is_anomaly, detector_reasons(components, plan.reasons)


class Columns:
    """A batch's columns by name as float64 arrays (NaN = null), each converted once.

    ``get(name)`` returns the column as the adapter holds it (an Arrow array, a pandas Series);
    ``convert`` turns that into float64 (the default: ``np.asarray``).
    """

    def __init__(self, get: Callable[[str], Any], rows: int, convert: Callable[[Any], np.ndarray] | None = None):
        self.get, self.rows, self.convert = get, rows, convert or (lambda c: np.asarray(c, np.float64))
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = np.asarray(self.convert(self.get(name)), np.float64)
        return self._cache[name]

    def matrix(self, names: Sequence[str], rows: Optional[np.ndarray] = None) -> np.ndarray:
        """The matrix rows x ``names`` (all rows, or the row positions ``rows``)."""
        out = np.empty((self.rows if rows is None else len(rows), len(names)))
        for j, name in enumerate(names):
            out[:, j] = self(name) if rows is None else self(name)[rows]
        return out


class Scored(NamedTuple):
    """What :func:`score_batch` returns: float arrays (None without that detector) and lists."""

    rcf_score: Optional[np.ndarray]
    logistic_score: Optional[np.ndarray]
    risk: np.ndarray
    is_anomaly: np.ndarray
    reasons: list


def score_batch(plan: ScoringPlan, forest: Any, columns: Columns, *, logistic_score: Optional[np.ndarray] = None,
                logistic_inputs_of: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                threads: bool = False) -> Scored:
    """Score one batch whose model inputs ``columns`` reads: the one setup every adapter runs.

    ``forest``: the RCF's :class:`~models.rcf.Forest` (None without an RCF), scored in threads
    on large batches with ``threads``. ``logistic_score``: the probability when the JVM computed
    it already (else the numpy closed form here); ``logistic_inputs_of(rows)``: the logistic
    inputs of those rows when they do not come from ``columns``.
    """
    terms = plan.logistic_terms
    if terms is not None and logistic_score is None:
        logistic_score = probability_array(terms, lambda j: columns(terms.features[j]), columns.rows)
    rcf_score = X = None
    if forest is not None:
        X = columns.matrix(plan.rcf_features)
        rcf_score = rcf_in_threads(forest, X) if threads else forest.score(X)
    risk, is_anomaly, reasons = score_arrays(
        plan, rcf_score, logistic_score,
        rcf_attribution_of=lambda rows: forest.score_and_attribution(X[rows])[1],
        logistic_inputs_of=logistic_inputs_of or (lambda rows: columns.matrix(terms.features, rows)))
    return Scored(rcf_score, logistic_score, risk, is_anomaly, reasons)


def rcf_in_threads(forest, X, min_rows: int = 20_000):
    """RCF scores of ``X``, in row chunks on all cores for large ``X``.

    The compiled kernels release the GIL, so threads score chunks side by side; every row's
    number is the same as in one call (rows are scored independently).
    """
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or len(X) < min_rows:
        return forest.score(X)
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(forest.score, np.array_split(X, workers))))
