"""The `replay` job: not built yet (issue 6, replay).

Submitted as `python -m jobs replay --conf FILE` or `spark-submit jobs/replay.py --conf FILE`.
"""
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import base_parser, not_built, run_main

PROG = "python -m jobs replay"


def build_parser():
    return base_parser(PROG, __doc__.splitlines()[0])


def main(argv=None) -> int:
    return run_main(PROG, build_parser, not_built("replay", "issue 6, replay"), argv)


if __name__ == "__main__":
    sys.exit(main())
