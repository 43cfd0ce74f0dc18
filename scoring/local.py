"""The local frame adapter: :func:`score_pandas` scores a pandas frame on the driver, with numpy.

For micro-batches that are on the driver already (the stream's incremental engine): a Spark pass
would ship them to a Python worker and back. The RCF kernels release the GIL, so large frames
are scored in row chunks on all cores (scoring/plan.py ``rcf_in_threads``).
"""
from __future__ import annotations

import numpy as np

from scoring.champions import Champions
from scoring.plan import SCORE_COLUMNS, Columns, ScoringPlan, check_columns, score_batch


def _floats(series) -> np.ndarray:
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def score_pandas(frame, champions: Champions, *, risk_method: str = "max", anomaly_risk: float = 0.5,
                 reasons: int = 3, rcf_attribution: str = "flagged"):
    """scoring/spark.py ``score_events`` on a pandas frame, computed on the driver (no Spark job).

    The same scoring core (scoring/plan.py ``score_batch``); ``tests/unit/test_scoring.py``
    checks it against ``score_events``. Returns a new frame: ``frame``'s columns plus
    ``rcf_score``, ``logistic_score``, ``risk``, ``reasons``, ``is_anomaly`` and the versions
    (a missing score is NaN).
    """
    plan = ScoringPlan.of(champions, risk_method=risk_method, anomaly_risk=anomaly_risk, reasons=reasons,
                          rcf_attribution=rcf_attribution)
    check_columns(frame.columns, plan.inputs)
    n = len(frame)
    forest = champions.rcf.forest if champions.rcf is not None else None
    scored = score_batch(plan, forest, Columns(frame.__getitem__, n, _floats), threads=True)
    out = frame.drop(columns=[c for c in SCORE_COLUMNS if c in frame.columns]).copy()
    missing = np.full(n, np.nan)
    out["rcf_score"] = scored.rcf_score if scored.rcf_score is not None else missing
    out["logistic_score"] = scored.logistic_score if scored.logistic_score is not None else missing
    out["risk"] = scored.risk
    out["reasons"] = scored.reasons
    out["is_anomaly"] = scored.is_anomaly
    out["rcf_version"] = champions.rcf_version
    out["logistic_version"] = champions.logistic_version
    return out
