"""Errors every stage may raise that the jobs turn into exit codes (jobs/common.py ``run_main``)."""


class InputError(RuntimeError):
    """Input that cannot be used at all (a file that cannot be read, a bad date, ...): exit code 2."""
