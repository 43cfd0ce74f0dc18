"""numba compilation shared by the numeric kernels (the RCF's, the stream's incremental features).

numba is what makes these kernels fast; where it is missing they run as plain Python.
"""
from __future__ import annotations

from typing import Any

try:  # numba is what makes scoring fast; fall back to plain Python kernels when missing
    import numba

    HAVE_NUMBA = True
    # Unsigned indices: numba skips the negative-index wraparound for them, which is what lets
    # LLVM vectorise the per-feature loops of the scoring kernels.
    _U = numba.uint64
except ImportError:  # pragma: no cover - exercised only where numba is not installed
    numba = None
    HAVE_NUMBA = False
    _U = int


def njit(func: Any) -> Any:
    """Compile with numba, caching the machine code on disk where the package is writable.

    Every Spark Python worker would otherwise recompile (seconds each). Caching is impossible
    when the module is imported from a zip (``--py-files``); numba refuses at decoration time,
    and we compile in memory instead. ``error_model="numpy"``: a float division by zero would
    give inf/nan instead of raising, so divisions carry no zero check (a check per division
    keeps LLVM from vectorising the loop around it); every divisor whose quotient is used is
    positive.
    """
    if not HAVE_NUMBA:  # pragma: no cover
        return func
    try:
        return numba.njit(nogil=True, cache=True, error_model="numpy")(func)
    except RuntimeError:  # no cache locator (e.g. imported from a zip)
        return numba.njit(nogil=True, cache=False, error_model="numpy")(func)
