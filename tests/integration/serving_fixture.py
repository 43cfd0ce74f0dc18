"""The scoring API on the integration lake: its config, a service, and a real HTTP server in a thread."""
import contextlib
import socket
import threading
import time

from runtime.config import load_config


def lake_config(lake, *overrides):
    """The config of the ``lake`` fixture (transactions) with ``overrides``."""
    conf = lake["args"][lake["args"].index("--conf") + 1]
    return load_config(conf, ["dataset=transactions", *overrides])


@contextlib.contextmanager
def http_server(app):
    """Serve ``app`` (ASGI) with uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as jobs/serve.py
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
