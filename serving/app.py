"""The HTTP scoring API: a Starlette (ASGI) app over :class:`serving.service.ScoringService`.

Routes: ``POST /v1/score`` (one event or a list), ``GET /health``, ``GET /v1/models``,
``GET /v1/sample`` (an event for the demo form) and ``GET /`` (the demo page). The body limit
(``serve.max_body_bytes``) is enforced before the body is read when ``Content-Length`` says
it, and while reading otherwise: 413. Handlers are ``async`` and score inline: one event takes
about a millisecond of Python, so a thread hop would cost more than it frees, and the
in-memory history is only ever touched by the event loop's one thread (no locks).

``POST /v1/score`` is answered by a plain ASGI function in front of Starlette (:func:`create_app`):
the same limit, the same service call and the same answer, without Starlette's router, request
and response objects and middleware stack, which cost about as much CPU as scoring the event's
features. Every other path (and any other method on ``/v1/score``) goes to the Starlette app.
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


def create_app(service: ScoringService):
    """The ASGI app of ``service``: ``POST /v1/score`` answered directly (module docstring), the
    rest by :func:`starlette_app`.
    """
    app = starlette_app(service)
    limit = service.max_body_bytes
    too_large = refusal(413, f"body too large (limit {limit} bytes)")

    async def send_reply(send, reply: Reply) -> None:
        headers = [(b"content-type", b"application/json")]
        headers += [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in reply.headers.items()]
        body = reply.json()
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def score_route(scope, receive, send) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await send_reply(send, too_large)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await send_reply(send, too_large)
            chunks.append(chunk)
            more = message.get("more_body", False)
        await send_reply(send, service.score(chunks[0] if len(chunks) == 1 else b"".join(chunks)))

    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/score":
            return await score_route(scope, receive, send)
        return await app(scope, receive, send)

    asgi.starlette = app
    return asgi


def starlette_app(service: ScoringService) -> Starlette:
    """The Starlette app of every route of ``service``."""
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
