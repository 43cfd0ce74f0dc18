"""The `models` job: the model registry of a data set: list its versions, or promote one by hand.

Lists every version of each detector kind (or only --model's) under <paths.models>/<dataset>,
oldest first: the version, when it was made, the decision train took (promoted | challenger)
and why, the threshold with its rule and validation precision / recall / alerts per day, the
test window's average precision, which version is champion (and whether a person put it
there), and the Delta versions of the feature (and labels) table it was trained on, which
`train --as-of` reads again. --json prints the same as one JSON object: the summary fields (dataset, status,
extra.champions, ...) plus "root" and "versions": [...] (one object per version).

--promote VERSION --model rcf|logistic|som makes that version the champion (it must exist): the
champion pointer (<kind>/champion.json) then records `promoted_by: manual`, the user, the time,
--reason and the `previous` champion; the next score run uses it. `python -m jobs train
--promote VERSION --model KIND` does the same.

Submitted as `python -m jobs models --conf FILE [--model KIND] [--json]`; it needs no Spark for
a local registry (an s3a:// one starts a session for its file system).
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

import getpass

from jobs.common import JobResult, job_main


def options(parser):
    parser.add_argument("--model", choices=("rcf", "logistic", "som"),
                        help="only this detector kind (required with --promote)")
    parser.add_argument("--promote", metavar="VERSION", help="make VERSION (e.g. v0003) of --model the champion")
    parser.add_argument("--reason", default="", help="why, recorded in the champion pointer with --promote")


def run(args, config):
    from reporting.registry import list_versions, open_registry, promote_version

    root = open_registry(config, args.input or args.output or config.path("models"))
    if args.promote:
        return promote_version(root, args.model, args.promote, user=getpass.getuser(), reason=args.reason)
    summary, rows = list_versions(root, args.model, show=not args.json)
    return JobResult(summary, {"root": root, "versions": rows})


main = job_main("models", __doc__, run, options, input_help="the model registry root (default paths.models)",
                output_help="the same as --input (either names the registry root)")

if __name__ == "__main__":
    raise SystemExit(main())
