"""The `summary` job: not built yet (issue 5, daily summary).

Submitted as `python -m jobs summary --conf FILE` or `spark-submit jobs/summary.py --conf FILE`.
"""
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import base_parser, not_built, run_main

PROG = "python -m jobs summary"


def build_parser():
    return base_parser(PROG, __doc__.splitlines()[0])


def main(argv=None) -> int:
    return run_main(PROG, build_parser, not_built("summary", "issue 5, daily summary"), argv)


if __name__ == "__main__":
    sys.exit(main())
