"""A local AWS-compatible server (moto) for the integration tests; never real AWS."""
import contextlib
import logging
import urllib.request

import pytest

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
