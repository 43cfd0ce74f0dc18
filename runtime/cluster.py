"""A Spark standalone cluster on this machine: one master and N workers from the installed pyspark.

The pyspark wheel carries Spark's ``sbin/spark-daemon.sh`` but not ``start-master.sh`` /
``start-worker.sh``, so the daemons are started with it directly (``SPARK_HOME`` = the pyspark
package folder). Each daemon is its own JVM on 127.0.0.1, on ports free when the cluster starts;
each worker runs its executors (and their Python workers) in its own work folder. Everything the
cluster writes (logs, PID files, work folders, a ``cluster.json`` naming it) lives under one
folder, so two clusters never meet and stopping one removes what it wrote: each executor copies
every jar of its application into its work folder (hundreds of MB with the AWS SDK), and the
worker keeps them after the application ends.

Used by the cluster integration test (tests/integration/cluster_fixture.py) and by ``make
cluster`` / ``make cluster-stop`` (``python -m runtime.cluster start|stop|status DIR``).
This module imports nothing of the project's (runtime/ rule) and not pyspark's Python either:
only its folder is needed.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """The cluster did not start (the message names the daemon and its log) or cannot be found."""


@dataclass
class Cluster:
    """A running cluster: where it is, how to reach it, and its daemons' PIDs."""

    root: str                       # the folder holding logs, PIDs, work folders and cluster.json
    master_url: str                 # spark://127.0.0.1:PORT, for spark-submit --master
    master_ui: str                  # http://127.0.0.1:PORT, the master's web UI (and /json)
    spark_home: str
    master_pid: int = 0
    worker_pids: list[int] = field(default_factory=list)
    worker_dirs: list[str] = field(default_factory=list)
    worker_ids: list[str] = field(default_factory=list)   # as the master registered them

    def state(self) -> dict:
        """The master's view of the cluster (its ``/json`` page: workers, applications)."""
        return master_state(self.master_ui)

    def clean_work(self) -> list[str]:
        """Remove the work folders of applications that are no longer running (each holds a copy
        of every jar of its application); returns the folders removed.
        """
        running = {app["id"] for app in self.state().get("activeapps", [])}
        removed = []
        for work in self.worker_dirs:
            for app_dir in glob.glob(os.path.join(work, "app-*")):
                if os.path.basename(app_dir) not in running:
                    shutil.rmtree(app_dir, ignore_errors=True)
                    removed.append(app_dir)
        return removed


def spark_home() -> str:
    """The installed pyspark package's folder, which is a Spark distribution (jars/, sbin/, bin/).

    Found without importing pyspark (its import is slow and not needed to start daemons).
    """
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        raise ClusterError("pyspark is not installed: pip install 'pyspark==3.5.*'")
    home = os.path.dirname(spec.origin)
    if not os.path.exists(os.path.join(home, "sbin", "spark-daemon.sh")):
        raise ClusterError(f"{home} has no sbin/spark-daemon.sh: not a pyspark wheel with Spark's scripts")
    return home


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (bound and released; the daemon binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def master_state(master_ui: str, timeout: float = 5.0) -> dict:
    """The master's ``/json`` page: its URL, status, workers (id, state, cores), applications."""
    with urllib.request.urlopen(f"{master_ui}/json", timeout=timeout) as answer:
        return json.load(answer)


def _env(root: Path, home: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": home,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(root / "logs"),
        "SPARK_PID_DIR": str(root / "pids"),
        "SPARK_CONF_DIR": str(root / "conf"),     # not the user's or the machine's spark-defaults
        "SPARK_IDENT_STRING": "cluster",
    })
    env.pop("SPARK_WORKER_DIR", None)  # each worker gets its own --work-dir
    return env


def _daemon(env: dict, home: str, action: str, cls: str, instance: int, *args: str) -> None:
    script = os.path.join(home, "sbin", "spark-daemon.sh")
    done = subprocess.run(["bash", script, action, cls, str(instance), *args], env=env,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ClusterError(f"spark-daemon.sh {action} {cls} {instance} failed ({done.returncode}): "
                           f"{(done.stdout + done.stderr).strip()[-2000:]}")


def _pid(root: Path, cls: str, instance: int) -> int:
    path = root / "pids" / f"spark-cluster-{cls}-{instance}.pid"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _log_tail(root: Path, cls: str, instance: int) -> str:
    logs = sorted(glob.glob(str(root / "logs" / f"spark-cluster-{cls}-{instance}-*.out")))
    if not logs:
        return "(no log)"
    lines = Path(logs[-1]).read_text(errors="replace").splitlines()
    return f"{logs[-1]}:\n" + "\n".join(lines[-15:])


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(root: str | os.PathLike, *, workers: int = 2, cores: int = 1, memory: str = "1536m",
          timeout: float = 120.0) -> Cluster:
    """Start a master and ``workers`` workers (``cores`` cores and ``memory`` each) with all their
    files under ``root`` (created), wait until the master lists every worker ALIVE, write
    ``root/cluster.json`` and return the :class:`Cluster`. On failure whatever started is stopped
    and :class:`ClusterError` names the daemon and the tail of its log.
    """
    root = Path(root).resolve()
    if (root / STATE_FILE).exists():
        raise ClusterError(f"{root / STATE_FILE} exists: a cluster may be running there "
                           f"(python -m runtime.cluster stop {root})")
    home = spark_home()
    for sub in ("logs", "pids", "conf"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # quiet daemons: WARN and above in their logs
    (root / "conf" / "log4j2.properties").write_text(
        "rootLogger.level = warn\nrootLogger.appenderRef.stdout.ref = console\n"
        "appender.console.type = Console\nappender.console.name = console\nappender.console.target = SYSTEM_ERR\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex\n")
    env = _env(root, home)
    port, ui_port = free_port(), free_port()
    cluster = Cluster(root=str(root), master_url=f"spark://127.0.0.1:{port}",
                      master_ui=f"http://127.0.0.1:{ui_port}", spark_home=home)
    try:
        _daemon(env, home, "start", MASTER_CLASS, 1, "--host", "127.0.0.1", "--port", str(port),
                "--webui-port", str(ui_port))
        cluster.master_pid = _pid(root, MASTER_CLASS, 1)
        _wait(cluster, root, lambda state: True, "the master to answer", timeout)
        for n in range(1, workers + 1):
            work = root / f"worker-{n}"
            work.mkdir(exist_ok=True)
            _daemon(env, home, "start", WORKER_CLASS, n, "--host", "127.0.0.1", "--port", str(free_port()),
                    "--webui-port", str(free_port()), "--cores", str(cores), "--memory", memory,
                    "--work-dir", str(work), cluster.master_url)
            cluster.worker_pids.append(_pid(root, WORKER_CLASS, n))
            cluster.worker_dirs.append(str(work))

        def all_alive(state):
            return sum(w.get("state") == "ALIVE" for w in state.get("workers", [])) >= workers

        state = _wait(cluster, root, all_alive, f"{workers} workers to register", timeout)
        cluster.worker_ids = sorted(w["id"] for w in state["workers"] if w.get("state") == "ALIVE")
    except BaseException:
        stop(cluster)
        raise
    (root / STATE_FILE).write_text(json.dumps(asdict(cluster), indent=2))
    return cluster


def _wait(cluster: Cluster, root: Path, ready, what: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for pid, cls, n in [(cluster.master_pid, MASTER_CLASS, 1)] + [
                (pid, WORKER_CLASS, i + 1) for i, pid in enumerate(cluster.worker_pids)]:
            if not _alive(pid):
                raise ClusterError(f"{cls} {n} (pid {pid}) exited while waiting for {what}; {_log_tail(root, cls, n)}")
        try:
            state = master_state(cluster.master_ui, timeout=2)
            if ready(state):
                return state
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what} at {cluster.master_ui}; "
                               f"{_log_tail(root, MASTER_CLASS, 1)}")
        time.sleep(0.5)


def stop(cluster: Cluster, *, timeout: float = 20.0, keep_logs: bool = True) -> None:
    """Stop the cluster's daemons by their PIDs (TERM, then KILL after ``timeout``), then remove
    its work folders (the jar copies) and PID files; its logs stay unless not ``keep_logs``.
    """
    pids = [pid for pid in [*cluster.worker_pids, cluster.master_pid] if pid > 0]
    for pid in pids:
        # spark-daemon.sh runs the JVM under nohup in its own process; TERM lets a worker kill
        # its executors (their JVMs and Python workers) before it exits
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    root = Path(cluster.root)
    for work in cluster.worker_dirs:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(root / "pids", ignore_errors=True)
    if not keep_logs:
        shutil.rmtree(root / "logs", ignore_errors=True)
    (root / STATE_FILE).unlink(missing_ok=True)


def load(root: str | os.PathLike) -> Cluster:
    """The cluster started under ``root`` (from its ``cluster.json``)."""
    path = Path(root).resolve() / STATE_FILE
    try:
        return Cluster(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise ClusterError(f"no cluster under {Path(root).resolve()} (no {STATE_FILE})") from None


def submit_hint(cluster: Cluster) -> str:
    """How to submit a job to ``cluster`` (the README's "A Spark cluster on your machine")."""
    return (f"master  {cluster.master_url}   (web UI {cluster.master_ui})\n"
            f"workers {', '.join(cluster.worker_ids)}\n"
            f"submit  make package\n"
            f"        PYSPARK_PYTHON={sys.executable} spark-submit --master {cluster.master_url} \\\n"
            f"          --packages io.delta:delta-spark_2.12:3.3.2 --py-files dist/zen_anomaly-0.1.0-py3-none-any.whl \\\n"
            f"          jobs/generate.py --conf conf/local.yaml --set spark.master=null --set spark.extra_jars= \\\n"
            f"          --set storage.lake=$PWD/lake-cluster\n"
            f"stop    python -m runtime.cluster stop {cluster.root}   (make cluster-stop)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.cluster",
                                     description="A Spark standalone cluster on 127.0.0.1 from the pyspark wheel.")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("dir", help="the folder for the cluster's logs, PIDs and work folders")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--memory", default="1536m")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            cluster = start(args.dir, workers=args.workers, cores=args.cores, memory=args.memory)
            print(submit_hint(cluster))
        elif args.action == "stop":
            cluster = load(args.dir)
            stop(cluster)
            print(f"stopped {cluster.master_url} (pids {cluster.master_pid}, "
                  f"{', '.join(map(str, cluster.worker_pids))}); logs in {cluster.root}/logs")
        else:
            cluster = load(args.dir)
            state = cluster.state()
            print(f"{cluster.master_url} {state.get('status')}: "
                  + ", ".join(f"{w['id']} {w['state']}" for w in state.get("workers", [])))
    except (ClusterError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
