"""The EMR bootstrap action, run in a fresh virtualenv without pyspark (as on a node before EMR
installs Spark), with ``sudo``, ``dnf`` and ``aws`` stubbed by small scripts on PATH.

``sagemaker_pyspark==1.4.5`` comes from PyPI through pip (pip reuses its wheel cache), exactly as on
a node. The project wheel is a tiny stand-in that the ``aws`` stub copies from a local folder
playing S3. The heavy dependency list (sagemaker SDK, pandas, pyarrow, numba, matplotlib) is
replaced through the script's ``FRAUD_PYTHON_DEPS`` override by one small package, to keep the
suite fast; set ``FRAUD_BOOTSTRAP_FULL_DEPS=1`` to install the real list.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy/bootstrap/install-sagemaker-pyspark.sh"
ARTIFACTS = "s3://your-artifact-bucket/fraud-anomaly"
# What sagemaker_pyspark 1.4.5 ships (its jars folder) and what EMR lacks of it.
EXPECTED_JARS = {
    "sagemaker-spark_2.12-spark_3.3.0-1.4.5.jar",
    "aws-java-sdk-sagemaker-1.12.262.jar",
    "aws-java-sdk-sagemakerruntime-1.12.262.jar",
}

STUBS = {
    "sudo": '#!/bin/sh\necho "sudo $*" >> "$STUB_LOG"\nexec "$@"\n',
    "dnf": '#!/bin/sh\necho "dnf $*" >> "$STUB_LOG"\n',
    # aws s3 cp --recursive ... --include '*.whl' s3://BUCKET/KEY/ DEST/: copy the wheels from
    # $FAKE_S3/BUCKET/KEY/ (anything else is an error).
    "aws": """#!/bin/sh
echo "aws $*" >> "$STUB_LOG"
[ "$1 $2" = "s3 cp" ] || { echo "aws stub: only 's3 cp' is stubbed, got: $*" >&2; exit 1; }
for arg do src="$dest"; dest="$arg"; done
case "$src" in s3://*) ;; *) echo "aws stub: source must be s3://, got $src" >&2; exit 1;; esac
cp "$FAKE_S3/${src#s3://}"*.whl "$dest"
""",
}


def _fake_project_wheel(folder: Path) -> Path:
    """A minimal wheel with the two files fraud-submit relies on (jobs/_bootstrap.py and a job)."""
    wheel = folder / "zen_anomaly-0.1.0-py3-none-any.whl"
    files = {
        "jobs/__init__.py": "",
        "jobs/_bootstrap.py": "# stands in for the project's jobs/_bootstrap.py\n",
        "jobs/train.py": "print('train')\n",
        "zen_anomaly-0.1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: zen-anomaly\nVersion: 0.1.0\n",
        "zen_anomaly-0.1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                             "Tag: py3-none-any\n",
        "zen_anomaly-0.1.0.dist-info/top_level.txt": "jobs\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "zen_anomaly-0.1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in {**files, "zen_anomaly-0.1.0.dist-info/RECORD": record}.items():
            archive.writestr(name, text)
    return wheel


def _stub_bin(folder: Path) -> Path:
    folder.mkdir()
    for name, text in STUBS.items():
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def test_bootstrap_finds_the_jars_in_a_fresh_virtualenv_without_pyspark(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    no_pyspark = subprocess.run([str(python), "-c", "import pyspark"], capture_output=True, text=True)
    assert no_pyspark.returncode != 0, "the fresh virtualenv must not have pyspark"

    s3 = tmp_path / "s3"
    dist = s3 / ARTIFACTS.removeprefix("s3://") / "dist"
    dist.mkdir(parents=True)
    _fake_project_wheel(dist)
    home = tmp_path / "fraud-anomaly"
    log = tmp_path / "stubs.log"
    env = {
        **os.environ,
        "PATH": f"{_stub_bin(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "FAKE_S3": str(s3),
        "FRAUD_PYTHON": str(python),
        "FRAUD_HOME_DIR": str(home),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    if not os.environ.get("FRAUD_BOOTSTRAP_FULL_DEPS"):
        env["FRAUD_PYTHON_DEPS"] = "pyyaml>=6,<7"
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SPARK_HOME"):
        env.pop(key, None)

    started = time.perf_counter()
    done = subprocess.run(["bash", str(SCRIPT), ARTIFACTS], env=env, capture_output=True, text=True, timeout=1200)
    print(f"bootstrap ran in {time.perf_counter() - started:.1f} s")
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"

    assert {p.name for p in (home / "jars").iterdir()} == EXPECTED_JARS
    assert (home / "lib" / "jobs" / "_bootstrap.py").is_file()
    wrapper = home / "bin" / "fraud-submit"
    assert os.access(wrapper, os.X_OK)
    assert subprocess.run(["bash", "-n", str(wrapper)]).returncode == 0
    calls = log.read_text()
    assert "dnf install -y -q python3.11 python3.11-pip" in calls
    assert f"{ARTIFACTS}/dist/" in calls
    # sagemaker_pyspark is installed and still cannot be imported there: the script never imported it.
    assert subprocess.run([str(python), "-m", "pip", "show", "-q", "sagemaker_pyspark"]).returncode == 0
    assert subprocess.run([str(python), "-c", "import sagemaker_pyspark"], capture_output=True).returncode != 0
