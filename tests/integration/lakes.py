"""Small lakes the integration tests build: a config and the jobs run on it."""
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from aws_local import DUMMY_ENV

ROOT = Path(__file__).resolve().parents[2]

SMALL_LAKE = """
spark: {{master: "local[2]", shuffle_partitions: 4, extra_jars: ""}}
storage: {{lake: "{lake}"}}
generate: {{transactions: {{customers: 120, terminals: 240, days: 30}}}}
train:
  test_days: 4
  rcf: {{num_trees: 50, num_samples_per_tree: 64}}
  logistic: {{reg_params: [0.001], validation_days: 4}}
{train_extra}"""


def small_lake(root, jobs, *, train_extra: str = "", json: bool = False) -> dict:
    """A small transactions lake under ``root``: its config, then each of ``jobs`` (job modules, in
    order) run on it; ``train_extra``: more ``train:`` keys (YAML lines indented by two). Returns
    the common arguments and each job's stdout by module name.
    """
    conf = root / "conf.yaml"
    conf.write_text(SMALL_LAKE.format(lake=root / "lake", train_extra=train_extra))
    args = ["--conf", str(conf), "--dataset", "transactions"]
    stdout = {}
    for job in jobs:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = job.main(args + (["--json"] if json else []))
        assert code == 0, out.getvalue()[-3000:]
        stdout[job.__name__.rsplit(".", 1)[-1]] = out.getvalue()
    return {"root": root, "args": args, "stdout": stdout}


# Runs each job of argv[1] (a JSON list of argument lists) as `python -m jobs` would, in one
# process; stops at the first that fails.
_RUNNER = """
import json, sys
from jobs.__main__ import main
for argv in json.loads(sys.argv[1]):
    code = main(argv)
    print(f"@@ {argv[0]} exit {code}", flush=True)
    if code != 0:
        sys.exit(code)
"""


def run_jobs_in_one_process(argv: list[list[str]], cwd, timeout: float, pythonpath=()) -> str:
    """Run the jobs ``argv`` (argument lists of ``python -m jobs``) one after the other in one new
    Python process (one JVM) in ``cwd``, with dummy AWS credentials and this interpreter for the
    Python workers; fails the test on the first job that fails. Its stdout. ``pythonpath``: more
    folders to import from (e.g. a test scorer's), after the project's root.
    """
    env = {**os.environ, **DUMMY_ENV, "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT), *pythonpath])}
    done = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout
