"""The HTTP scoring API: a Starlette (ASGI) app over :class:`serving.service.ScoringService`.

Routes: ``POST /v1/score`` (one event or a list), ``GET /health``, ``GET /v1/models``,
``GET /v1/sample`` (an event for the demo form) and ``GET /`` (the demo page). The body limit
(``serve.max_body_bytes``) is enforced before the body is read when ``Content-Length`` says
it, and while reading otherwise: 413. Handlers are ``async`` and score inline: one event takes
well under a millisecond of Python, so a thread hop would cost more than it frees, and the
in-memory history is only ever touched by the event loop's one thread (no locks).
"""
from __future__ import annotations

import html
import json
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from serving.service import Reply, ScoringService, refusal

JSON = "application/json"


def _response(reply: Reply) -> Response:
    return Response(reply.json(), status_code=reply.status, media_type=JSON, headers=reply.headers or None)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is larger than ``limit`` bytes (the rest is not read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def demo_page() -> str:
    return resources.files("serving").joinpath("demo.html").read_text(encoding="utf-8")


def create_app(service: ScoringService) -> Starlette:
    """The ASGI app of ``service``."""
    page = demo_page()

    async def score(request: Request) -> Response:
        body = await _read_limited(request, service.max_body_bytes)
        if body is None:
            return _response(refusal(413, f"body too large (limit {service.max_body_bytes} bytes)"))
        return _response(service.score(body))

    async def health(request: Request) -> Response:
        return _response(service.health())

    async def models(request: Request) -> Response:
        return _response(service.models())

    async def sample(request: Request) -> Response:
        return _response(Reply(200, service.sample_event()))

    async def index(request: Request) -> Response:
        sample = json.dumps(service.sample_event(), indent=1)
        return HTMLResponse(page.replace("__SAMPLE__", html.escape(sample)).replace("__DATASET__", service.dataset.name)
                            .replace("__CUT__", repr(float(service.options["anomaly_risk"]))))

    async def not_found(request: Request, exc) -> Response:
        return _response(refusal(404, f"no route {request.method} {request.url.path} (see GET /)"))

    async def wrong_method(request: Request, exc) -> Response:
        return _response(refusal(405, f"{request.method} is not allowed on {request.url.path}"))

    routes = [Route("/v1/score", score, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/v1/models", models, methods=["GET"]), Route("/v1/sample", sample, methods=["GET"]),
              Route("/", index, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: wrong_method})
