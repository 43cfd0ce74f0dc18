"""The `stream` job: not built yet (issue 6, streaming).

Submitted as `python -m jobs stream --conf FILE` or `spark-submit jobs/stream.py --conf FILE`.
"""
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import base_parser, not_built, run_main

PROG = "python -m jobs stream"


def build_parser():
    return base_parser(PROG, __doc__.splitlines()[0])


def main(argv=None) -> int:
    return run_main(PROG, build_parser, not_built("stream", "issue 6, streaming"), argv)


if __name__ == "__main__":
    sys.exit(main())
