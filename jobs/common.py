"""What every job shares: the common options, config loading and progress with timings."""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Callable, Sequence

from runtime.config import Config, ConfigError, load_config
from runtime.errors import InputError
from runtime.progress import log, step  # noqa: F401  (the jobs' progress lines)

DATASETS = ("telemetry", "transactions")

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
    parser.add_argument("--dataset", choices=DATASETS,
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
    if code == 0 and not getattr(args, "json", False):  # --json promises one JSON object on stdout
        log(prog.split()[-1], f"finished in {time.perf_counter() - started:.1f} s")
    return code


def parse_date(text, option: str) -> "dt.date | None":
    """``text`` (yyyy-MM-dd) as a date, None for None; a bad value names ``option``."""
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise InputError(f"{option} must be a date like 2026-01-31, got {text!r}") from None
