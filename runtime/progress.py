"""Progress lines with timings, so long work shows what it is doing."""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator


def log(job: str, message: str) -> None:
    print(f"[{job}] {message}", flush=True)


@contextlib.contextmanager
def step(job: str, what: str) -> Iterator[None]:
    """Print what starts and how long it took."""
    log(job, f"{what} ...")
    started = time.perf_counter()
    yield
    log(job, f"{what}: done in {time.perf_counter() - started:.1f} s")


@dataclass
class RunSummary:
    """What a job did, for its last line: the grep-able text and, with ``--json``, one JSON line.

    A stage returns one; ``jobs/common.py`` adds the wall time and prints it. ``extra`` holds what
    only some jobs have (e.g. ``promoted``/``challenger`` for train, ``quarantined`` for features).
    """

    job: str
    dataset: str | None = None
    dates: list[str] = field(default_factory=list)      # first and last date (or every date) worked on
    rows_in: int | None = None
    rows_out: int | None = None
    versions: dict[str, str | None] = field(default_factory=dict)   # kind -> model version used/made
    alerts: int | None = None                          # anomalies flagged / alerts raised
    status: str = "done"                               # done | nothing-to-do | challenger | ...
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, [], {})} | {"status": self.status}

    def line(self) -> str:
        """One line an operator can grep: ``key value`` pairs in a fixed order."""
        parts = [f"status {self.status}"]
        if self.dataset:
            parts.append(f"dataset {self.dataset}")
        if self.dates:
            parts.append("dates " + (self.dates[0] if len(self.dates) == 1 else f"{self.dates[0]}..{self.dates[-1]}"))
        for name in ("rows_in", "rows_out", "alerts"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name} {value:,}")
        if self.versions:
            parts.append("versions " + ",".join(f"{k}={v or 'none'}" for k, v in self.versions.items()))
        parts += [f"{k} {_text(v)}" for k, v in self.extra.items()]
        if self.seconds is not None:
            parts.append(f"seconds {self.seconds:.1f}")
        return "; ".join(parts)


def _text(value: Any) -> str:
    """A summary value as text: lists comma-joined ('-' when empty), the rest as str."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    return str(value)
