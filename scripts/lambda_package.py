#!/usr/bin/env python3
"""Build the AWS Lambda deployment package (a zip) of the scoring API: ``make lambda-package``.

Lambda runtime :data:`RUNTIME` (python3.12; deploy/cdk/stack.py's ``LambdaRuntime`` default, a
test checks they agree), x86_64, handler ``serving.lambda_handler.handler``. The zip holds:

* our packages the handler imports (runtime, ingest, features, models, scoring, serving; .py only);
* ``bundle/``: the champions' snapshot, the per-entity history and the config, written by
  ``python -m jobs serve --write-bundle`` from the lake of --conf (``make run`` builds one);
* the dependencies: numpy, pandas and orjson as manylinux2014 / manylinux_2_28 wheels for CPython
  3.12 (pip ``--platform``; pinned, see WHEELS), and pyspark's Python modules without its jars (the models' classes import
  pyspark; no JVM starts in Lambda) with py4j, and pypa's distutils (setuptools' vendored copy:
  pyspark 3.5 imports ``distutils.version``, which Python 3.12 no longer has). Not numba/llvmlite: with them the unzipped package
  would pass Lambda's 250 MB limit, so the RCF scores with its plain-Python kernels there. boto3
  is part of the Lambda runtime.

The deployed function reads the bundle from S3 (the stack sets ``SERVING_BUNDLE`` to
``s3://<artifacts>/<Project>/serving/<Dataset>/bundle``; README, Deploying to AWS); the copy in the zip
serves when that variable is unset.

Then the zip is checked: unzipped into a scratch folder, the handler is imported by an isolated
CPython 3.12 (the runtime's version: ``--check-python``, else ``python3.12`` on PATH, else pyenv's
3.12; none found is an error naming what is missing) (``-I -S``: no site-packages, only the zip's
folder and the standard library) and
answers an HTTP API (2.0) ``GET /health`` and a ``POST /v1/score`` of the bundle's sample event.
Prints the zip's size and the unzipped size (Lambda's limits: 50 MB zipped for a direct upload,
250 MB unzipped; from S3 the zipped limit does not apply).

    python scripts/lambda_package.py --conf conf/local.yaml [--dataset transactions] [--out build/lambda.zip]
        [--check-python /path/to/python3.12]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "ingest", "features", "models", "scoring", "serving")
#: The Lambda runtime the zip is built for (deploy/cdk/stack.py's LambdaRuntime default must equal it).
RUNTIME = "python3.12"
PYTHON_VERSION = RUNTIME[len("python"):]
# Lambda's python3.12 runtime runs on Amazon Linux 2023 (glibc 2.34): manylinux2014 (glibc 2.17) and
# manylinux_2_28 wheels run there. Pinned to the releases the project is tested with (setup.py's ranges).
WHEELS = ("numpy==2.4.6", "pandas==3.1.1", "orjson==3.10.18")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
CHECK = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from serving.lambda_handler import handler, service
def call(method, path, body=None):
    event = {"version": "2.0", "rawPath": path, "requestContext": {"http": {"method": method}, "stage": "$default"},
             "body": body, "isBase64Encoded": False}
    return handler(event, None)
health = call("GET", "/health")
sample = json.loads(call("GET", "/v1/sample")["body"])
scored = call("POST", "/v1/score", json.dumps(sample))
assert health["statusCode"] == 200 and scored["statusCode"] == 200, (health, scored)
result = json.loads(scored["body"])["results"][0]
print(json.dumps({"health": json.loads(health["body"])["status"], "risk": result["risk"],
                  "python": "%d.%d.%d" % sys.version_info[:3],
                  "versions": result["model_versions"]}))
"""


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_interpreter(wanted: str | None = None) -> str:
    """A CPython of the runtime's version (:data:`PYTHON_VERSION`) to run the packaged handler with:
    ``wanted``, else ``python3.12`` on PATH, else pyenv's newest 3.12; SystemExit naming what is missing.
    """
    candidates = [wanted] if wanted else []
    if not wanted:
        candidates.append(shutil.which(f"python{PYTHON_VERSION}"))
        pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
        candidates += [str(p / "bin" / "python") for p in sorted(pyenv.glob(f"{PYTHON_VERSION}.*"), reverse=True)]
    for candidate in filter(None, candidates):
        try:
            found = subprocess.run([candidate, "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if found.returncode == 0 and found.stdout.strip() == PYTHON_VERSION:
            return candidate
    raise SystemExit(f"no CPython {PYTHON_VERSION} to check the {RUNTIME} package with: tried "
                     f"{wanted or f'python{PYTHON_VERSION} on PATH and ~/.pyenv/versions/{PYTHON_VERSION}.*'}; install "
                     f"one (e.g. pyenv install {PYTHON_VERSION}) or name it with --check-python")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--dataset", default="transactions")
    parser.add_argument("--out", default="build/lambda.zip")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the jobs")
    parser.add_argument("--bundle", help="an existing bundle folder (serve --write-bundle) instead of writing one")
    parser.add_argument("--check-python", help=f"the CPython {PYTHON_VERSION} that checks the package "
                        f"(default: python{PYTHON_VERSION} on PATH, or pyenv's)")
    args = parser.parse_args()
    checker = check_interpreter(args.check_python)
    out = (ROOT / args.out).resolve()
    stage = out.parent / "lambda"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.bundle:
        shutil.copytree(args.bundle, stage / "bundle")
    else:
        subprocess.run([args.python, "-m", "jobs", "serve", "--conf", args.conf, "--dataset", args.dataset,
                        "--write-bundle", str(stage / "bundle")], cwd=ROOT, env=env, check=True)
    for package in PACKAGES:
        for source in (ROOT / package).rglob("*"):
            if source.is_file() and source.suffix in (".py", ".html", ".yaml", ".properties") \
                    and "__pycache__" not in source.parts:
                target = stage / source.relative_to(ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(stage), *platforms,
                    "--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:",
                    "--no-compile", "--no-warn-conflicts", *WHEELS], check=True)
    import py4j
    import pyspark

    shutil.copytree(Path(pyspark.__file__).parent, stage / "pyspark",
                    ignore=shutil.ignore_patterns("jars", "examples", "data", "licenses", "__pycache__", "tests",
                                                  "*.pyc", "bin", "sbin"))
    shutil.copytree(Path(py4j.__file__).parent, stage / "py4j", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # pyspark 3.5 imports distutils.version (pyspark.ml.image, pyspark.sql.pandas), which Python 3.12
    # removed: the zip carries pypa's distutils, the copy setuptools vendors as setuptools._distutils
    import setuptools

    shutil.copytree(Path(setuptools.__file__).parent / "_distutils", stage / "distutils",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "command"))
    for junk in stage.rglob("__pycache__"):
        shutil.rmtree(junk, ignore_errors=True)
    for tests in [p for p in stage.glob("*/tests") if p.is_dir()]:
        shutil.rmtree(tests, ignore_errors=True)
    unzipped = folder_size(stage)
    out.unlink(missing_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(stage))
    with tempfile.TemporaryDirectory(prefix="lambda-check-") as scratch:
        with zipfile.ZipFile(out) as archive:
            archive.extractall(scratch)
        checked = subprocess.run([checker, "-I", "-S", "-c", CHECK, scratch], capture_output=True, text=True,
                                 env={"PATH": os.environ.get("PATH", ""), "SERVING_BUNDLE": f"{scratch}/bundle",
                                      "NUMBA_DISABLE_JIT": "1"}, timeout=600)
        if checked.returncode != 0:
            print(checked.stdout[-2000:], checked.stderr[-4000:], file=sys.stderr)
            raise SystemExit("the packaged handler failed its check (above)")
    answer = json.loads(checked.stdout.strip().splitlines()[-1])
    print(f"[lambda-package] {out}: {out.stat().st_size / 1e6:.1f} MB zipped, {unzipped / 1e6:.1f} MB unzipped "
          f"(Lambda: 250 MB unzipped at most); runtime {RUNTIME}, checked with {checker} "
          f"(Python {answer['python']}); handler serving.lambda_handler.handler checked: "
          f"health {answer['health']}, sample risk {answer['risk']:.4f}, models {answer['versions']}")
    if unzipped > 250e6:
        raise SystemExit(f"unzipped {unzipped / 1e6:.1f} MB is over Lambda's 250 MB limit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
