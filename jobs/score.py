"""The `score` job: not built yet (issue 5, nightly scoring).

Submitted as `python -m jobs score --conf FILE` or `spark-submit jobs/score.py --conf FILE`.
"""
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import base_parser, not_built, run_main

PROG = "python -m jobs score"


def build_parser():
    return base_parser(PROG, __doc__.splitlines()[0])


def main(argv=None) -> int:
    return run_main(PROG, build_parser, not_built("score", "issue 5, nightly scoring"), argv)


if __name__ == "__main__":
    sys.exit(main())
