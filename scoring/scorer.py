"""A :class:`Scorer`: the champions and the scoring options of a run, applied to a frame.

The stream asks for one per micro-batch (``champion_scorer``) and scores with it:
``scorer(features_df)`` on a Spark frame, ``scorer.pandas(frame)`` on a pandas frame that is on
the driver already. Both give the same rows (a test holds them to each other).
"""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from pyspark.sql import DataFrame

from scoring.champions import Champions, load_champions
from scoring.local import score_pandas
from scoring.plan import scoring_options
from scoring.spark import score_events


@runtime_checkable
class FrameScorer(Protocol):
    """What scores both kinds of frame: a Spark frame by calling it, a pandas frame on the driver
    with ``pandas``. :class:`Scorer` is one; a ``stream.scorer`` hook may return another (or a
    plain function, which scores Spark frames only).
    """

    def __call__(self, features_df: DataFrame) -> DataFrame: ...

    def pandas(self, frame): ...


class Scorer:
    """Scores frames with ``champions`` and the options of the config's ``scoring`` section.

    Callable on a Spark frame (scoring/spark.py ``score_events``); :meth:`pandas` scores a
    pandas frame on the driver (scoring/local.py ``score_pandas``). ``versions`` are the
    champions' ``(rcf_version, logistic_version)``.
    """

    def __init__(self, champions: Champions, *, risk_method: str = "max", anomaly_risk: float = 0.5,
                 reasons: int = 3, rcf_attribution: str = "flagged"):
        self.champions = champions
        self.options = dict(risk_method=risk_method, anomaly_risk=anomaly_risk, reasons=reasons,
                            rcf_attribution=rcf_attribution)

    @property
    def versions(self) -> tuple[Optional[str], Optional[str]]:
        return self.champions.versions

    def __call__(self, features_df: DataFrame) -> DataFrame:
        return score_events(features_df, self.champions, **self.options)

    def pandas(self, frame):
        return score_pandas(frame, self.champions, **self.options)


def champion_scorer(config) -> Scorer:
    """A :class:`Scorer` with the champions current when it is made (under ``paths.models``)."""
    return Scorer(load_champions(config.path("models"), config["dataset"]), **scoring_options(config["scoring"]))
