"""AWS Lambda entry point: ``serving.lambda_handler.handler`` over the same scoring service as the
HTTP app.

Accepts the two event formats API Gateway and Lambda Function URLs send:

* REST API proxy integration (payload format 1.0): ``httpMethod``, ``path``, ``headers``,
  ``body``, ``isBase64Encoded``, ``requestContext.stage``;
* HTTP API (payload format 2.0) and Function URLs (the same 2.0 shape): ``version: "2.0"``,
  ``rawPath``, ``requestContext.http.method``, ``body``, ``isBase64Encoded``.

The answer has ``statusCode``, ``headers`` (JSON content type) and a JSON ``body`` string. Routes
as in serving/app.py: ``POST /v1/score``, ``GET /health``, ``GET /v1/models``, ``GET
/v1/sample``; anything else 404/405, never an exception out of the handler for what a caller
sends.

The model and the history are loaded once per container, at the first invocation, from the
bundle ``make lambda-package`` builds (serving/bundle.py): the folder named by the
``SERVING_BUNDLE`` environment variable, ``bundle/`` beside the code by default, or an
``s3://bucket/prefix`` whose files are copied to ``/tmp/serving-bundle`` first
(``SERVING_BUNDLE_CACHE`` names another folder). No Spark runs in Lambda: records
the fast decoder leaves over get :data:`serving.service.NO_SPARK_REASON`.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Optional

from serving.service import Reply, ScoringService, refusal

_SERVICE: Optional[ScoringService] = None
ROUTES = {("POST", "/v1/score"), ("GET", "/health"), ("GET", "/v1/models"), ("GET", "/v1/sample")}


def bundle_folder() -> str:
    """The bundle's local folder (copied from S3 to /tmp when ``SERVING_BUNDLE`` is an s3:// URI)."""
    where = os.environ.get("SERVING_BUNDLE") or str(Path(__file__).resolve().parent.parent / "bundle")
    if not where.startswith("s3://"):
        return where
    import boto3

    bucket, _, prefix = where[len("s3://"):].partition("/")
    local = Path(os.environ.get("SERVING_BUNDLE_CACHE") or "/tmp/serving-bundle")
    local.mkdir(parents=True, exist_ok=True)
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
    for page in pages:
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix.rstrip("/")) + 1:]
            if name:
                target = local / name
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item["Key"], str(target))
    return str(local)


def service() -> ScoringService:
    """The container's service, loaded at the first call."""
    global _SERVICE
    if _SERVICE is None:
        from serving.bundle import load_bundle

        _SERVICE = load_bundle(bundle_folder())
    return _SERVICE


def request_of(event: dict) -> tuple[str, str, bytes, str]:
    """(method, path without the stage, body bytes, payload format "1.0" or "2.0") of an event."""
    context = event.get("requestContext") or {}
    if event.get("version") == "2.0":
        method = ((context.get("http") or {}).get("method") or "GET").upper()
        path = event.get("rawPath") or (context.get("http") or {}).get("path") or "/"
        version = "2.0"
    else:
        method = (event.get("httpMethod") or "GET").upper()
        path = event.get("path") or "/"
        version = "1.0"
    stage = context.get("stage")
    if stage and stage != "$default" and path.startswith(f"/{stage}/"):
        path = path[len(stage) + 1:]
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        data = base64.b64decode(body)
    else:
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return method, path.rstrip("/") or "/", data, version


def route(svc: ScoringService, method: str, path: str, body: bytes) -> Reply:
    if (method, path) not in ROUTES:
        if any(p == path for _, p in ROUTES):
            return refusal(405, f"{method} is not allowed on {path}")
        return refusal(404, f"no route {method} {path}")
    if path == "/v1/score":
        return svc.score(body)
    if path == "/health":
        return svc.health()
    if path == "/v1/models":
        return svc.models()
    return Reply(200, svc.sample_event())


def handler(event: dict, context: Any = None) -> dict:
    """The Lambda handler (module docstring)."""
    try:
        method, path, body, _version = request_of(event if isinstance(event, dict) else {})
    except (ValueError, TypeError) as exc:       # a body that is not valid base64
        reply = refusal(400, f"unreadable request body: {exc}")
    else:
        reply = route(service(), method, path, body)
    return {"statusCode": reply.status,
            "headers": {"content-type": "application/json", **reply.headers},
            "body": reply.json().decode("utf-8"),
            "isBase64Encoded": False}
