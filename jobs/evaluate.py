"""The `evaluate` job: not built yet (issue 3, detectors).

Submitted as `python -m jobs evaluate --conf FILE` or `spark-submit jobs/evaluate.py --conf FILE`.
"""
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import base_parser, not_built, run_main

PROG = "python -m jobs evaluate"


def build_parser():
    return base_parser(PROG, __doc__.splitlines()[0])


def main(argv=None) -> int:
    return run_main(PROG, build_parser, not_built("evaluate", "issue 3, detectors"), argv)


if __name__ == "__main__":
    sys.exit(main())
