"""Errors every stage may raise, and the exit codes the jobs turn them into (jobs/common.py).

Exit codes: 0 done, 1 failed (an unexpected error), 2 usage, configuration or unusable input,
3 nothing to do (no input rows for the dates asked; ``--allow-empty`` makes that 0).
"""

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING_TO_DO = 3


class InputError(RuntimeError):
    """Input that cannot be used at all (a file that cannot be read, a bad date, ...): exit code 2."""


class NothingToDo(RuntimeError):
    """No input rows for the dates asked (``dates``: the empty ones): exit code 3; nothing was written."""

    def __init__(self, message: str, dates=()):
        super().__init__(message)
        self.dates = [str(d) for d in dates]
