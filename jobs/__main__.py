"""``python -m jobs <job> --conf FILE [--set key=value ...]``: one entry point for every job."""
from __future__ import annotations

import argparse
import importlib
import sys

# job name -> (module, one-line summary)
JOBS = {
    "generate": ("jobs.generate", "write synthetic telemetry or card transactions (labeled anomalies)"),
    "features": ("jobs.build_features", "validate raw events (bad rows to quarantine) and write the feature table"),
    "labels": ("jobs.labels", "merge a file of late labels into the labels table (and the scores' label column)"),
    "train": ("jobs.train", "train the RCF and/or logistic detectors, register a version, move the champion"),
    "evaluate": ("jobs.evaluate", "evaluate the champion models on a test window (metrics, plots, HTML report)"),
    "score": ("jobs.score", "nightly batch scoring of one date or a range into the scores table"),
    "stream": ("jobs.stream", "Structured Streaming scoring of Kinesis / landing files with SNS alerts"),
    "summary": ("jobs.summary", "daily summary, QuickSight export and manifest, HTML report"),
    "models": ("jobs.models", "list the model registry's versions and decisions, or promote a version by hand"),
    "replay": ("jobs.replay", "send a data set into a Kinesis stream (or landing folder) at a given rate"),
    "serve": ("jobs.serve", "HTTP scoring API for single events (and the demo page); --write-bundle: the Lambda bundle"),
    "maintain": ("jobs.maintain", "OPTIMIZE and VACUUM the Delta tables, keeping the registry's training snapshots"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m jobs",
        description="Anomaly and fraud detection jobs on Spark. Each job is also runnable as "
                    "'spark-submit jobs/<file>.py --conf FILE ...'.",
        epilog="jobs:\n" + "\n".join(f"  {name:<9} {summary}" for name, (_, summary) in JOBS.items())
               + "\n\nEvery job ends with one summary line (with --json: one JSON line). Exit codes: 0 done, "
                 "1 failed,\n2 usage, configuration or unusable input, 3 nothing to do (no input rows for the dates "
                 "asked;\n--allow-empty makes it 0). 'python -m jobs <job> --help' documents every option of a job.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("job", choices=list(JOBS), metavar="job", help="one of: " + ", ".join(JOBS))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(JOBS[args.job][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
