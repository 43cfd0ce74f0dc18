"""What every job shares: the common options, config loading, the exit codes and the summary
line every job ends with, ``job_main``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence, Union

from features.datasets import DATASETS
from runtime.config import Config, ConfigError, load_config
from runtime.errors import EXIT_DONE, EXIT_FAILED, EXIT_NOTHING_TO_DO, EXIT_USAGE, InputError, NothingToDo
from runtime.progress import RunSummary, log, step  # noqa: F401  (the jobs' progress lines)

EPILOG = """\
Configuration: runtime/defaults.yaml holds every key and its default; --conf FILE overrides it;
each --set dotted.key=value overrides that (the value is read as YAML: 5 is a number,
[1,2] a list). An unknown key or a wrong type stops the job with a message naming the key.
Paths may be local folders or s3a:// URIs (aws.endpoint_url points s3a at any S3-compatible
endpoint).

Last line: the job ends with one summary line an operator can grep, '[<job>] status done;
dataset ...; dates ...; rows_in ...; rows_out ...; alerts ...; versions ...; seconds ...' (the
fields the job knows), or with --json one JSON object of the same fields (job, status, dataset,
dates, rows_in, rows_out, alerts, versions, extra, seconds; a field the job does not know is
left out) as the last line of stdout. It is printed on exit 0 and 3.

Exit codes: 0 done; 1 failed (an unexpected error, or a run that finished with failures);
2 usage, configuration or unusable input (the message names it); 3 nothing to do: no input rows
for the dates asked (the message names them; nothing was written). --allow-empty turns 3 into 0
(status nothing-to-do)."""

JSON_HELP = "print the summary as one JSON line (the last line of stdout) for a scheduler"


class JobResult(NamedTuple):
    """A stage's summary plus the fields ``--json`` prints beside the summary's own (evaluate: its
    metrics, a documented contract), in the same one JSON object.
    """

    summary: RunSummary
    json_fields: Mapping[str, Any]


Outcome = Union[RunSummary, JobResult, int, None]


def base_parser(prog: str, description: str, *, input_help: str = "what the job reads",
                output_help: str = "what the job writes", json_help: str = JSON_HELP) -> argparse.ArgumentParser:
    """A parser with the options every job takes; ``input_help``/``output_help``/``json_help`` say what they are."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=EPILOG,
        allow_abbrev=False,  # the CLI contract: --model must never be taken as --models
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
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--allow-empty", action="store_true",
                        help="no input rows for the dates asked is not an error: exit 0 with status nothing-to-do "
                             "instead of 3")
    return parser


REGISTRY_HELP = "model registry root (default paths.models)"


def add_registry_option(parser: argparse.ArgumentParser, help: str = REGISTRY_HELP) -> None:
    """``--registry PATH``: the model registry root, spelled the same in every job that reads or
    writes it (``args.registry``). ``--models PATH`` is kept as a deprecated alias of the same
    option: abbreviations are refused (``allow_abbrev=False``), so ``--model KIND`` can never be
    taken for it.
    """
    parser.add_argument("--registry", "--models", dest="registry", metavar="PATH",
                        help=help + " (--models PATH: deprecated spelling of the same option)")


def load(args: argparse.Namespace) -> Config:
    """The validated config for parsed ``args`` (``--dataset`` is applied as an override)."""
    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"dataset={args.dataset}")
    return load_config(args.conf, overrides)


def as_summary(job: str, outcome: Outcome) -> tuple[RunSummary, Mapping[str, Any]]:
    """(summary, extra JSON fields) of what a stage returned: a RunSummary, a :class:`JobResult`,
    or an exit code (None is 0) from a stage that does not make a summary yet.
    """
    if isinstance(outcome, JobResult):
        return outcome.summary, outcome.json_fields
    if isinstance(outcome, RunSummary):
        return outcome, {}
    return RunSummary(job, status="failed" if outcome else "done"), {}


def print_summary(job: str, summary: RunSummary, as_json: bool, json_fields: Mapping[str, Any] = ()) -> None:
    """The job's last line: ``[<job>] <summary.line()>``, or with ``as_json`` one JSON object."""
    if as_json:
        print(json.dumps({**dict(json_fields), **summary.as_dict()}, sort_keys=True, default=str), flush=True)
    else:
        log(job, summary.line())


def run_main(prog: str, parser_factory: Callable[[], argparse.ArgumentParser],
             run: Callable[[argparse.Namespace, Config], Outcome], argv: Sequence[str] | None = None) -> int:
    """Parse, load config, run; print the run's summary as the last line; the exit code.

    Configuration and input errors become one line on stderr and exit 2; ``NothingToDo`` one line
    naming the empty dates and exit 3 (0 with ``--allow-empty``); a summary whose status is
    ``failed`` (or a non-zero int from the stage) exit 1 (or that int). Other exceptions propagate.
    """
    parser = parser_factory()
    args = parser.parse_args(argv)
    job = prog.split()[-1]
    try:
        config = load(args)
    except ConfigError as exc:
        parser.exit(EXIT_USAGE, f"{prog}: error: {exc}\n")
    started = time.perf_counter()
    try:
        outcome = run(args, config)
    except (ConfigError, InputError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except NothingToDo as exc:
        print(f"{prog}: nothing to do: {exc}", file=sys.stderr, flush=True)
        outcome = RunSummary(job, status="nothing-to-do", dates=exc.dates)
    summary, json_fields = as_summary(job, outcome)
    summary.job = job
    summary.dataset = summary.dataset or config.dataset
    summary.seconds = time.perf_counter() - started
    print_summary(job, summary, args.json, json_fields)
    if summary.status == "nothing-to-do":
        return EXIT_DONE if args.allow_empty else EXIT_NOTHING_TO_DO
    if isinstance(outcome, int) and outcome:
        return outcome
    return EXIT_FAILED if summary.status == "failed" else EXIT_DONE


def job_main(name: str, description: str, run: Callable[[argparse.Namespace, Config], Outcome],
             options: Callable[[argparse.ArgumentParser], None] | None = None, *,
             input_help: str = "what the job reads", output_help: str = "what the job writes",
             json_help: str = JSON_HELP) -> Callable[..., int]:
    """The ``main(argv) -> exit code`` of job ``name``: the common options plus ``options(parser)``,
    then :func:`run_main` with ``run``. A job module is its ``options``, its ``run`` and this line.
    ``main(argv, run=other)`` runs another ``run`` with the same options (a test's fault hook).
    """
    prog = f"python -m jobs {name}"

    def parser_factory() -> argparse.ArgumentParser:
        parser = base_parser(prog, description, input_help=input_help, output_help=output_help,
                             json_help=json_help)
        if options is not None:
            options(parser)
        return parser

    def main(argv: Sequence[str] | None = None, *, run=run) -> int:
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
