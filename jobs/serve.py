"""The `serve` job: the HTTP scoring API (and the demo page) over the champion models.

``POST /v1/score`` takes one event or a list (the data set's canonical JSON records, as the stream
gets them) and answers, for each, risk, is_anomaly, each detector's score, reasons, the model
versions and the features used; ``GET /health``, ``GET /v1/models``; ``GET /`` is a demo page
(a form with a sample event, the verdict and the detectors' risks as a bar chart). Bad input gets
400 with the reasons the stream's dead letters give (serving/service.py); bodies over
``serve.max_body_bytes`` get 413. The champions are reloaded when their registry pointer moves
(checked every ``serve.reload_seconds``), without a restart. A single event's features come from
a per-entity history seeded from the feature table (``--input``, default paths.features) and,
with ``serve.learn``, every accepted event (serving/history.py). Transactions only: telemetry
has no per-entity incremental twin of its features yet.

Runs until SIGINT/SIGTERM (uvicorn, one process), then prints its summary line (rows_out: events
scored) and exits 0. ``--port 0`` takes a free port; the line
``[serve] listening on http://HOST:PORT`` tells which. ``--write-bundle DIR`` writes the AWS
Lambda bundle (serving/bundle.py: the champions' snapshot, the history, the config) and exits.

Submitted as `python -m jobs serve --conf FILE --dataset transactions [--host H] [--port P]`.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from features.datasets import dataset as dataset_named
from jobs.common import job_main, log
from runtime.errors import InputError
from runtime.progress import RunSummary
from runtime.spark import build_session


def options(parser):
    parser.add_argument("--host", help="address to listen on (default serve.host)")
    parser.add_argument("--port", type=int, help="port to listen on; 0 for a free one (default serve.port)")
    parser.add_argument("--write-bundle", metavar="DIR",
                        help="write the AWS Lambda bundle (champions snapshot, history, config) to DIR and exit")


def run(args, config):
    import socket

    import uvicorn

    from serving.app import create_app
    from serving.bundle import history_from_features, service_from_lake, write_bundle

    if not dataset_named(config["dataset"]).incremental:
        raise InputError(f"the scoring API computes single-event features for transactions only: "
                         f"{config['dataset']} has no per-entity incremental twin of its features yet")

    build_session(config)   # the registry's model loaders, and the Spark judge of odd records
    history = None
    if args.input:
        conf = config["features"]["transactions"]
        history = history_from_features(args.input, config["storage"]["format"], windows_days=conf["windows_days"],
                                        delay_days=conf["delay_days"], days=config["serve"]["history_days"])
    if args.write_bundle:
        written = write_bundle(config, args.write_bundle, history=history)
        log("serve", f"bundle written to {args.write_bundle}: {written}")
        return RunSummary("serve", extra=written)
    service = service_from_lake(config, history=history)
    host = args.host or config["serve"]["host"]
    port = config["serve"]["port"] if args.port is None else args.port
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: a response's head and body go out at once, not 40 ms apart
    # (Nagle's algorithm waiting for the client's delayed ACK)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)             # connections wait in the backlog until uvicorn accepts them
    bound = sock.getsockname()[1]
    log("serve", f"history: {len(service.history):,} events up to {service.health().body['history_newest']}; "
                 f"models {service.health().body['model_versions']}")
    log("serve", f"listening on http://{host}:{bound}")
    server = _server_class()(uvicorn.Config(create_app(service), log_level="warning", access_log=False))
    server.run(sockets=[sock])
    return RunSummary("serve", rows_out=service.scored)


def _server_class():
    import contextlib
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but SIGINT/SIGTERM end it like a finished job (summary line, exit 0):
        uvicorn re-raises the signal after its shutdown, which would kill the process first.
        """

        @contextlib.contextmanager
        def capture_signals(self):
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


main = job_main("serve", __doc__, run, options,
                input_help="the feature table the per-entity history is seeded from (default paths.features)",
                output_help="not used")

if __name__ == "__main__":
    raise SystemExit(main())
