"""What every job shares: the common options, config loading, progress with timings, ``job_main``."""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Callable, Sequence

from features.datasets import DATASETS
from runtime.config import Config, ConfigError, load_config
from runtime.errors import InputError
from runtime.progress import RunSummary, log, step  # noqa: F401  (the jobs' progress lines)

EPILOG = """\
Configuration: runtime/defaults.yaml holds every key and its default; --conf FILE overrides it;
each --set dotted.key=value overrides that (the value is read as YAML: 5 is a number,
[1,2] a list). An unknown key or a wrong type stops the job with a message naming the key.
Paths may be local folders or s3a:// URIs (aws.endpoint_url points s3a at any S3-compatible
endpoint)."""


def base_parser(prog: str, description: str, *, input_help: str = "what the job reads",
                output_help: str = "what the job writes") -> argparse.ArgumentParser:
    """A parser with the options every job takes; ``input_help``/``output_help`` say what they are."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", required=True, metavar="FILE",
                        help="YAML config file, e.g. conf/local.yaml (embedded default) or conf/emr.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set spark.shuffle_partitions=4 (repeatable)")
    parser.add_argument("--dataset", choices=tuple(DATASETS),
                        help="which data set to work on (default: the config's 'dataset' key)")
    parser.add_argument("--input", metavar="PATH",
                        help=f"{input_help}: local path or s3a:// URI")
    parser.add_argument("--output", metavar="PATH",
                        help=f"{output_help}: local path or s3a:// URI")
    return parser


def load(args: argparse.Namespace) -> Config:
    """The validated config for parsed ``args`` (``--dataset`` is applied as an override)."""
    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"dataset={args.dataset}")
    return load_config(args.conf, overrides)


def run_main(prog: str, parser_factory: Callable[[], argparse.ArgumentParser],
             run: Callable[[argparse.Namespace, Config], int | None],
             argv: Sequence[str] | None = None) -> int:
    """Parse, load config, run; turn configuration and input errors into one clear line."""
    parser = parser_factory()
    args = parser.parse_args(argv)
    try:
        config = load(args)
    except ConfigError as exc:
        parser.exit(2, f"{prog}: error: {exc}\n")
    started = time.perf_counter()
    try:
        code = run(args, config) or 0
    except (ConfigError, InputError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    if isinstance(code, RunSummary):  # a stage's summary (printing it is jobs/common.py's to come): done
        code = 0
    if code == 0 and not getattr(args, "json", False):  # --json promises one JSON object on stdout
        log(prog.split()[-1], f"finished in {time.perf_counter() - started:.1f} s")
    return code


def job_main(name: str, description: str, run: Callable[[argparse.Namespace, Config], int | None],
             options: Callable[[argparse.ArgumentParser], None] | None = None, *,
             input_help: str = "what the job reads", output_help: str = "what the job writes",
             ) -> Callable[[Sequence[str] | None], int]:
    """The ``main(argv) -> exit code`` of job ``name``: the common options plus ``options(parser)``,
    then :func:`run_main` with ``run``. A job module is its ``options``, its ``run`` and this line.
    """
    prog = f"python -m jobs {name}"

    def parser_factory() -> argparse.ArgumentParser:
        parser = base_parser(prog, description, input_help=input_help, output_help=output_help)
        if options is not None:
            options(parser)
        return parser

    def main(argv: Sequence[str] | None = None) -> int:
        return run_main(prog, parser_factory, run, argv)

    return main


def parse_date(text, option: str) -> "dt.date | None":
    """``text`` (yyyy-MM-dd) as a date, None for None; a bad value names ``option``."""
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise InputError(f"{option} must be a date like 2026-01-31, got {text!r}") from None


def parse_range(first, last, first_option: str, last_option: str) -> "tuple[dt.date | None, dt.date | None]":
    """(first, last) dates of an optional range; ``last`` defaults to ``first``; both None: no range."""
    first_date = parse_date(first, first_option)
    last_date = parse_date(last, last_option) or first_date
    if last_date and not first_date:
        raise InputError(f"{last_option} needs {first_option}")
    if first_date and last_date < first_date:
        raise InputError(f"{last_option} {last_date} is before {first_option} {first_date}")
    return first_date, last_date
