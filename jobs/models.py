"""The `models` job: the model registry of a data set: list its versions, or promote one by hand.

Lists every version of each detector kind (or only --model's) under <paths.models>/<dataset>,
oldest first: the version, when it was made, the decision train took (promoted | challenger)
and why, the threshold with its rule and validation precision / recall / alerts per day, the
test window's average precision, and which version is champion (and whether a person put it
there). --json prints the same as one JSON object {"dataset", "root", "versions": [...]}.

--promote VERSION --model rcf|logistic makes that version the champion (it must exist): the
champion pointer (<kind>/champion.json) then records `promoted_by: manual`, the user, the time,
--reason and the `previous` champion; the next score run uses it. `python -m jobs train
--promote VERSION --model KIND` does the same.

Submitted as `python -m jobs models --conf FILE [--model KIND] [--json]`; it needs no Spark for
a local registry (an s3a:// one starts a session for its file system).
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

import getpass
import json

from jobs.common import job_main, log
from runtime.errors import InputError


def options(parser):
    parser.add_argument("--model", choices=("rcf", "logistic"), help="only this detector kind (required with --promote)")
    parser.add_argument("--promote", metavar="VERSION", help="make VERSION (e.g. v0003) of --model the champion")
    parser.add_argument("--reason", default="", help="why, recorded in the champion pointer with --promote")
    if "--json" not in parser._option_string_actions:  # the common options may carry it already
        parser.add_argument("--json", action="store_true", help="print the listing as one JSON object")


def _root(models_path, config) -> str:
    from scoring.champions import registry_root

    root = registry_root(models_path or config.path("models"), config["dataset"])
    if "://" in root:  # Hadoop file systems need the session
        from runtime.spark import build_session

        build_session(config)
    return root


def promote(args, config, models_path) -> int:
    """Move the champion of ``args.model`` to ``args.promote`` under ``models_path`` (None:
    paths.models); the job's exit code.
    """
    from models import registry

    if args.model not in ("rcf", "logistic"):
        raise InputError("--promote needs --model rcf or --model logistic")
    root = _root(models_path, config)
    try:
        pointer = registry.promote(root, args.model, args.promote, by="manual", user=getpass.getuser(),
                                   reason=args.reason)
    except registry.RegistryError as exc:
        known = [v["version"] for v in registry.versions(root, args.model)]
        raise InputError(f"{exc} (versions: {', '.join(known) or 'none'})") from None
    log("models", f"{args.model} champion is now {pointer['version']} (was {pointer['previous']}), "
                  f"promoted by {pointer['user']}" + (f": {args.reason}" if args.reason else ""))
    return 0


def _fmt(value, spec=".3f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def run(args, config):
    from models import registry

    if args.promote:
        return promote(args, config, args.input or args.output)
    root = _root(args.input or args.output, config)
    rows = registry.listing(root, [args.model] if args.model else None)
    if getattr(args, "json", False):
        print(json.dumps({"dataset": config["dataset"], "root": root, "versions": rows}, sort_keys=True, default=str))
        return 0
    if not rows:
        print(f"no model versions under {root}")
        return 0
    print(f"{'kind':<9} {'version':<7} {'champion':<9} {'decision':<10} {'threshold':>10} {'val.prec':>8} "
          f"{'val.rec':>7} {'alerts/d':>9} {'test AP':>7}  created / reasons")
    for row in rows:
        mark = ("yes" + (" (manual)" if row["promoted_by"] == "manual" else "")) if row["champion"] else ""
        print(f"{row['kind']:<9} {row['version']:<7} {mark:<9} {row['decision'] or '?':<10} "
              f"{_fmt(row['threshold'], '.4f'):>10} {_fmt(row['validation_precision']):>8} "
              f"{_fmt(row['validation_recall']):>7} {_fmt(row['alerts_per_day'], ',.1f'):>9} "
              f"{_fmt(row['test_average_precision']):>7}  {row['created']}")
        notes = [f"rule: {row['rule']}" + (f" (not met: fell back to {row['fallback']})" if row["fallback"] else "")
                 ] if row["rule"] else []
        for line in notes + row["reasons"] + [f"warning: {w}" for w in row["warnings"]]:
            print(f"{'':<17} {line}")
    return 0


main = job_main("models", __doc__, run, options, input_help="the model registry root (default paths.models)",
                output_help="the same as --input (either names the registry root)")

if __name__ == "__main__":
    raise SystemExit(main())
