"""A Spark standalone cluster (a master and two workers, each its own JVM, from the installed
pyspark) plus moto's S3 server, for tests/integration/test_cluster.py, and the submission of our
jobs to it the way the EMR wrapper submits them (deploy/bootstrap/install-sagemaker-pyspark.sh's
``fraud-submit``):

- the project's packages (what ``make package``'s wheel holds, zipped here without a build tool)
  shipped with ``--py-files``: the executors import our code from it, not from this machine's
  folders; the driver runs ``jobs/<job>.py`` of the same zip unpacked (EMR installs the wheel
  into a lib folder);
- the config shipped with ``--files`` and read by its name (``--conf cluster.yaml``);
- ``PYSPARK_PYTHON`` this interpreter (else executors use the machine's python);
- ``--packages`` Delta (resolved from the Ivy cache ``make install`` filled) and ``--jars``
  hadoop-aws with its AWS SDK (the ones the s3a test uses, from sagemaker-pyspark's jar folder),
  also on the driver's launch classpath: the job's own ``spark.jars.packages`` and extraClassPath
  come too late under ``spark-submit`` (the driver JVM is already running);
- client deploy mode: Spark's standalone master refuses cluster deploy mode for Python
  applications ("Cluster deploy mode is currently not supported for python applications on
  standalone clusters"). The driver then runs here, in a folder of its own that holds the
  config as YARN's container folder would (a job writing to a local path would show there).

Each application keeps an event log (``spark.eventLog.dir``), from which the test reads which
executors ran its tasks, and the workers' work folders of finished applications (a copy of every
jar each) are removed after each submission.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import boto3
import pytest
from aws_local import DUMMY_ENV, REGION, moto_server_process

from runtime import cluster as runtime_cluster
from runtime.aws import sagemaker_jars

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "zen-cluster-lake"
DELTA_PACKAGE = "io.delta:delta-spark_2.12:3.3.2"


def s3a_jars() -> list[str]:
    """hadoop-aws and its AWS SDK bundle (what s3a needs), from sagemaker-pyspark's jar folder."""
    jars = [j for j in sagemaker_jars(include_protobuf=False)
            if os.path.basename(j).startswith(("hadoop-aws-", "aws-java-sdk-bundle-"))]
    if len(jars) != 2:
        pytest.skip("sagemaker_pyspark's hadoop-aws and aws-java-sdk-bundle jars are not installed (make install)")
    return jars


def build_zip(out: Path) -> Path:
    """The project's packages as one zip for ``--py-files``: what ``make package``'s wheel holds
    (setup.py's packages and package data), built here with no build tool and no network.
    """
    import ast

    from setuptools import find_packages

    tree = ast.parse((ROOT / "setup.py").read_text())
    [packages] = [ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "PACKAGES"]
    found = find_packages(str(ROOT), include=[f"{p}{s}" for p in packages for s in ("", ".*")])
    out.mkdir(parents=True, exist_ok=True)
    archive_path = out / "zen_anomaly.zip"
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in found:
            folder = ROOT / package.replace(".", "/")
            for path in sorted(folder.iterdir()):
                if path.suffix == ".py" or (package == "runtime" and path.name == "defaults.yaml"):
                    archive.write(path, str(path.relative_to(ROOT)))
    return archive_path


class Submitter:
    """Submits ``jobs/<file>.py`` to a cluster as fraud-submit does; one application per call."""

    def __init__(self, cluster: runtime_cluster.Cluster, work: Path, package: Path, conf_text: str, moto_url: str):
        self.cluster = cluster
        self.package = package
        self.lib = work / "lib"                     # unpacked: the driver's copy
        with zipfile.ZipFile(package) as archive:
            archive.extractall(self.lib)
        self.driver_dir = work / "driver"           # the driver's working folder
        self.driver_dir.mkdir()
        self.conf = work / "conf" / "cluster.yaml"  # shipped with --files
        self.conf.parent.mkdir()
        self.conf.write_text(conf_text)
        shutil.copy(self.conf, self.driver_dir / self.conf.name)
        self.events = work / "events"
        self.events.mkdir()
        self.moto_url = moto_url
        self.jars = s3a_jars()
        self.ran: list[dict] = []

    def submit(self, job_file: str, *args: str, timeout: float = 600) -> dict:
        """Run ``jobs/<job_file>.py --conf cluster.yaml --json <args>`` on the cluster; the job's
        JSON summary, with ``app_id`` (its event log's name), ``stdout``, ``stderr`` and ``seconds``.
        """
        before = set(os.listdir(self.events))
        command = [
            os.path.join(self.cluster.spark_home, "bin", "spark-submit"),
            "--master", self.cluster.master_url, "--deploy-mode", "client",
            "--name", f"cluster-test-{job_file}",
            "--packages", DELTA_PACKAGE,
            "--jars", ",".join(self.jars),
            "--driver-class-path", os.pathsep.join(self.jars),
            "--py-files", str(self.package),
            "--files", str(self.conf),
            "--conf", f"spark.pyspark.python={sys.executable}",
            "--conf", f"spark.pyspark.driver.python={sys.executable}",
            "--conf", "spark.executor.memory=1g",
            "--conf", "spark.eventLog.enabled=true",
            "--conf", f"spark.eventLog.dir=file://{self.events}",
            "--conf", "spark.ui.port=0",
            str(self.lib / "jobs" / f"{job_file}.py"),
            "--conf", self.conf.name, "--json", *args,
        ]
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "SPARK_HOME")}
        env.update(DUMMY_ENV)
        env.update(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
        started = time.monotonic()
        done = subprocess.run(command, cwd=self.driver_dir, env=env, capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - started
        removed = self.cluster.clean_work()
        assert done.returncode == 0, (f"{job_file} exited {done.returncode}\n{done.stdout[-3000:]}\n"
                                      f"{done.stderr[-6000:]}")
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert lines, f"{job_file} printed no JSON summary\n{done.stdout[-3000:]}"
        new = sorted(set(os.listdir(self.events)) - before)
        assert len(new) == 1, f"expected one event log for {job_file}, found {new}"
        summary = {**json.loads(lines[-1]), "app_id": new[0], "stdout": done.stdout, "stderr": done.stderr,
                   "seconds": seconds, "work_folders_removed": len(removed)}
        self.ran.append(summary)
        print(f"cluster: {job_file} {' '.join(args)} -> {summary['status']} as {new[0]} in {seconds:.0f} s",
              flush=True)
        return summary

    def event_log(self, app_id: str) -> list[dict]:
        """The events of application ``app_id`` (one JSON object per line)."""
        with open(self.events / app_id) as log:
            return [json.loads(line) for line in log]


@pytest.fixture(scope="module")
def cluster_moto():
    with moto_server_process() as url:
        boto3.client("s3", region_name=REGION, endpoint_url=url).create_bucket(Bucket=BUCKET)
        yield url


@pytest.fixture(scope="module")
def spark_cluster(cluster_moto, tmp_path_factory):
    """A master and two workers (1 core, 1536 MB each) on 127.0.0.1, stopped by PID at the end.

    Module-scoped, not session-scoped: one cluster serves every test of the cluster module, and
    its JVMs are gone before the next module runs.
    """
    root = tmp_path_factory.mktemp("spark-cluster")
    # started while cluster_moto has the dummy keys in the environment: the daemons and so their
    # executors inherit them, as EMR's nodes have their instance profile (s3a's default chain)
    cluster = runtime_cluster.start(root / "cluster", workers=2, cores=1, memory="1536m")
    try:
        yield cluster
    finally:
        runtime_cluster.stop(cluster)

