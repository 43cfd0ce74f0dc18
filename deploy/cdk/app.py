"""The CDK app: one stack, FraudAnomalyStack (deploy/cdk/stack.py).

    make iac                                    # cdk synth into build/cdk.out, then cfn-lint
    python deploy/cdk/app.py --outdir DIR       # the same synthesis without the CDK CLI

The stack name is the context value ``stack`` (``cdk synth -c stack=NAME``), default fraud-anomaly.
The synthesiser needs no bootstrap: the stack has no assets (the Lambda code is a parameter naming
an object in the artifact bucket), so ``aws cloudformation deploy`` takes the template as it is.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import aws_cdk as cdk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import FraudAnomalyStack  # noqa: E402

DEFAULT_STACK = "fraud-anomaly"


def build(outdir: str | None = None) -> cdk.App:
    """The app with its stack; ``outdir``: where synth writes (default: CDK_OUTDIR, set by the CLI)."""
    app = cdk.App(outdir=outdir, analytics_reporting=False)
    name = app.node.try_get_context("stack") or DEFAULT_STACK
    FraudAnomalyStack(app, name, synthesizer=cdk.BootstraplessSynthesizer())
    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", default=os.environ.get("CDK_OUTDIR"),
                        help="cloud assembly folder (default: $CDK_OUTDIR, as the CDK CLI sets it)")
    args = parser.parse_args(argv)
    build(args.outdir).synth()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
