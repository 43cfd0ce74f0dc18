"""`python -m jobs stream` that kills itself with SIGKILL at a fault point of one micro-batch.

Usage: python stream_with_fault.py POINT BATCH_ID <the stream job's options>. POINT is one of the
processor's fault points (after-sink, after-alerts, before-commit: streaming/processor.py); the
exactly-once tests run it in a subprocess.
"""
import functools
import os
import signal
import sys

from jobs import stream
from streaming.processor import FAULT_POINTS


def kill_at(point: str, batch_id: int):
    """A fault hook that kills this process at ``point`` of micro-batch ``batch_id``."""
    def fault(at: str, batch: int) -> None:
        if (at, batch) == (point, batch_id):
            os.kill(os.getpid(), signal.SIGKILL)
    return fault


if __name__ == "__main__":
    point, batch_id, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if point not in FAULT_POINTS:
        sys.exit(f"unknown fault point {point!r}: one of {', '.join(FAULT_POINTS)}")
    sys.exit(stream.main(argv, run=functools.partial(stream.run, fault=kill_at(point, batch_id))))
