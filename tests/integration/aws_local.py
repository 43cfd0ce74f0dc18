"""A local AWS-compatible server (moto) for the integration tests; never real AWS."""
import contextlib
import logging
import urllib.request

import pytest

from runtime.cluster import free_port

REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
}


@contextlib.contextmanager
def local_aws():
    """Yield the URL of a moto server on a free loopback port, with dummy credentials in the env.

    moto keeps its state per process, not per server, so the state is reset first: otherwise one
    module's training jobs or topics would show up in the next module's assertions.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with pytest.MonkeyPatch.context() as env:
        for key, value in DUMMY_ENV.items():
            env.setenv(key, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        _, port = server.get_host_and_port()
        url = f"http://127.0.0.1:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30)
        try:
            yield url
        finally:
            server.stop()


@contextlib.contextmanager
def moto_server_process(timeout_s: float = 60.0, log=None):
    """Yield the URL of a moto server run as its own process on a free loopback port, and stop
    that process by its PID at the end. Dummy credentials are put in this process's env too.
    ``log``: a file path for the server's output (default: discarded). bench/bench_stream.py
    uses it too.

    For tests whose Spark jobs hammer S3: in a separate process the server does not compete with
    the test's own Python (py4j, the jobs' driver code) for one interpreter lock, as
    :func:`local_aws`'s threaded server does.
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env, (open(log, "wb") if log else contextlib.nullcontext()) as out:
        for key, value in DUMMY_ENV.items():
            env.setenv(key, value)
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT if out else subprocess.DEVNULL,
                                env=dict(os.environ))
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"moto server on port {port} exited with code {proc.returncode}")
                try:
                    urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"moto server on port {port} did not answer in {timeout_s:.0f} s") from None
                    time.sleep(0.2)
            yield url
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
