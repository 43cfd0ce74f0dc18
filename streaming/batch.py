"""The values a micro-batch carries between the processor and its feature engine."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

    from ingest.decode import Decoded


@dataclass
class StreamSettings:
    """Plain values the processor needs (from ``stream.*`` and ``schema.<dataset>``)."""

    dataset: str
    schema_conf: Mapping[str, Any]
    output: str
    checkpoint: str
    dead_letter: str
    history_seconds: int
    allowed_lateness_seconds: int = 0
    max_event_skew_seconds: int | None = None     # None: no "future" check (tests of other rules)
    warm_from: str | None = None        # the batch feature table a new stream seeds its history from (None: cold)
    warm_format: str = "delta"
    max_record_bytes: int = 65536


@dataclass
class BatchReport:
    batch_id: int
    records: int = 0
    scored: int = 0
    dead_letters: int = 0
    alerts_sent: int = 0
    alerts_skipped: int = 0
    alerts_failed: int = 0              # not delivered by this batch: alerts_pending + alerts_dead
    alerts_retried: int = 0             # of alerts_sent: kept from earlier batches
    alerts_pending: int = 0             # SNS did not take them yet: retried on later batches
    alerts_dead: int = 0                # in the alert dead letters (refused, ambiguous, expired)
    sink_skipped: bool = False
    sink_topped_up: int = 0             # a re-run batch's rows the first attempt had not written
    dead_letters_topped_up: int = 0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_max_s: float | None = None
    seconds: float = 0.0
    dead_reasons: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)

    def phase(self, name: str, since: float) -> float:
        """Record the seconds spent in ``name`` since ``since``; returns now (the next phase's start)."""
        now = time.time()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - since, 3)
        return now

    def timings(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.phases.items())

    def line(self) -> str:
        lat = ("n/a" if self.latency_p50_s is None else
               f"p50 {self.latency_p50_s:.1f} s, p95 {self.latency_p95_s:.1f} s, max {self.latency_max_s:.1f} s")
        again = ""
        if self.sink_skipped:
            again = (f" (sink already committed: {self.sink_topped_up:,} new events and "
                     f"{self.dead_letters_topped_up:,} new dead letters topped up, the rest not rewritten)")
        undelivered = ""
        if self.alerts_pending or self.alerts_dead:
            undelivered = (f", NOT delivered: {self.alerts_pending:,} kept for retry, "
                           f"{self.alerts_dead:,} to the alert dead letters")
        retried = f", {self.alerts_retried:,} of them kept from earlier batches" if self.alerts_retried else ""
        return (f"batch {self.batch_id}: {self.records:,} records, {self.scored:,} events scored{again}, "
                f"{self.alerts_sent:,} alerts raised ({self.alerts_skipped} already sent{retried}{undelivered}), "
                f"{self.dead_letters:,} dead letters, event-to-sink latency {lat}, batch took {self.seconds:.1f} s"
                + (f" ({self.timings()})" if self.phases else ""))


@dataclass(frozen=True)
class BatchStats:
    """What the latency line and the next batch's state need from the scored rows."""

    n: int                                  # events scored
    q: Sequence[float | None] | None        # arrival-time quantiles 0.5, 0.05, 0 (epoch microseconds)
    newest: dt.datetime | None              # the newest event time of the batch


@dataclass
class PreparedBatch:
    """One micro-batch after its feature engine: the rows to score and what follows the sink commit.

    ``features()`` gives the batch's feature rows as a Spark frame; ``pandas()`` (driver-local
    engines only) the same rows as a pandas frame, for a scorer with a pandas twin. ``decoded``
    holds the records the Spark decoder judged (its dead letters), ``rejected`` the late and
    duplicate events. ``stats``, ``commit`` and ``dead_reasons`` are known already when the
    engine ran on the driver (None: the processor computes them from the scored rows).
    ``save_state(newest event time)`` runs after the sink commit; ``cleanup()`` at the end.
    """

    features: Callable[[], DataFrame]
    save_state: Callable[[dt.datetime | None], None]
    cleanup: Callable[[], None]
    decoded: Decoded | None = None
    rejected: DataFrame | None = None
    pandas: Callable[[], pd.DataFrame] | None = None
    stats: BatchStats | None = None
    commit: Mapping[str, Any] | None = None
    dead_reasons: dict[str, int] | None = None
