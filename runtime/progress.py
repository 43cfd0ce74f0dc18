"""Progress lines with timings, so long work shows what it is doing."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


def log(job: str, message: str) -> None:
    print(f"[{job}] {message}", flush=True)


@contextlib.contextmanager
def step(job: str, what: str) -> Iterator[None]:
    """Print what starts and how long it took."""
    log(job, f"{what} ...")
    started = time.perf_counter()
    yield
    log(job, f"{what}: done in {time.perf_counter() - started:.1f} s")
