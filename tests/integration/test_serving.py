"""The scoring API on the small transactions lake: parity with the batch score job, hostile
requests, champion reload without a failed request, and the AWS Lambda handler's two event formats."""
import base64
import http.client
import json
import shutil
import threading
import time
import urllib.parse

import numpy as np
import pandas as pd
import pytest
from serving_fixture import http_server, lake_config

from models import registry
from serving.app import create_app
from serving.history import TransactionHistory, read_feature_rows, state_frame
from serving.models import RegistryChampions
from serving.service import NO_SPARK_REASON, ScoringService, SparkJudge

PARITY_EVENTS = 1000


def records(rows: pd.DataFrame) -> list[dict]:
    """Feature-table rows as the canonical JSON records a client sends."""
    out = []
    for row in rows.itertuples(index=False):
        when = pd.Timestamp(row.event_time)
        when = when.tz_convert(None) if when.tzinfo else when
        record = {"transaction_id": row.transaction_id, "event_time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                  "customer_id": row.customer_id, "terminal_id": row.terminal_id, "amount": float(row.amount)}
        if not pd.isna(row.label):
            record["label"] = int(row.label)
        out.append(record)
    return out


@pytest.fixture(scope="module")
def table(lake):
    """The lake's feature table (canonical columns), oldest first."""
    rows = read_feature_rows(str(lake["root"] / "lake" / "features" / "transactions"), "delta")
    return rows.sort_values(["event_time", "transaction_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def batch_scores(spark, lake, table, tmp_path_factory):
    """The score job's rows for the last dates holding at least PARITY_EVENTS events."""
    from jobs import score

    days = pd.to_datetime(table["event_time"]).dt.date
    counts = days.value_counts().sort_index(ascending=False)
    first = counts.index[int(np.searchsorted(counts.cumsum().to_numpy(), PARITY_EVENTS))]
    last = counts.index[0]
    out = tmp_path_factory.mktemp("serve-scores") / "scores"
    assert score.main(lake["args"] + ["--from", str(first), "--to", str(last), "--output", str(out)]) == 0
    scored = spark.read.format("delta").load(str(out)).select("transaction_id", "risk", "is_anomaly").toPandas()
    return scored.set_index("transaction_id")


def service_without(lake, table, ids, spark, *overrides) -> ScoringService:
    """A service whose history is the whole feature table except the events ``ids``."""
    config = lake_config(lake, *overrides)
    rest = state_frame(table[~table["transaction_id"].isin(set(ids))])
    history = TransactionHistory(rest, complete_from_us=int(rest["ts"].min()))
    champions = RegistryChampions(str(lake["root"] / "lake" / "models"), "transactions")
    return ScoringService(config, champions, history, SparkJudge(config, session=lambda: spark))


def test_the_api_gives_the_batch_jobs_risk_and_features_for_1000_events(spark, lake, table, batch_scores):
    chosen = table[table["transaction_id"].isin(batch_scores.index)].sample(PARITY_EVENTS, random_state=7)
    service = service_without(lake, table, chosen["transaction_id"], spark, "serve.learn=false")
    reply = service.score(json.dumps(records(chosen)).encode())
    assert reply.status == 200, reply.body
    got = pd.DataFrame(reply.body["results"]).set_index("transaction_id")
    assert len(got) == PARITY_EVENTS
    expected = batch_scores.loc[got.index]
    diff = np.abs(got["risk"].to_numpy(float) - expected["risk"].to_numpy(float))
    print(f"parity over {PARITY_EVENTS} events in one request: max |risk difference| {diff.max():.3e}")
    assert diff.max() <= 1e-9
    assert (got["is_anomaly"].to_numpy(bool) == expected["is_anomaly"].to_numpy(bool)).all()
    assert got["is_anomaly"].any() and not got["is_anomaly"].all()   # both verdicts are compared
    features = pd.DataFrame(list(got["features"]), index=got.index)
    stored = spark.read.format("delta").load(str(lake["root"] / "lake" / "features" / "transactions")) \
        .where(f"transaction_id in ({','.join(repr(i) for i in got.index[:200])})").toPandas() \
        .set_index("transaction_id").loc[got.index[:200], features.columns]
    assert np.abs(features.loc[got.index[:200]].to_numpy(float) - stored.to_numpy(float)).max() <= 1e-9


def test_one_event_per_request_in_time_order_gives_the_batch_jobs_risk(spark, lake, table, batch_scores):
    chosen = table[table["transaction_id"].isin(batch_scores.index)].tail(200)   # the newest, in time order
    service = service_without(lake, table, chosen["transaction_id"], spark)      # learn: each is remembered
    risks = {}
    for record in records(chosen):
        reply = service.score(json.dumps(record).encode())
        assert reply.status == 200, reply.body
        risks[record["transaction_id"]] = reply.body["results"][0]["risk"]
    expected = batch_scores.loc[list(risks), "risk"].to_numpy(float)
    diff = np.abs(np.array(list(risks.values())) - expected)
    print(f"parity over {len(risks)} one-event requests: max |risk difference| {diff.max():.3e}")
    assert diff.max() <= 1e-9


def _post(base, path, body: bytes, headers=None):
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _get(base, path):
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_hostile_requests_get_4xx_with_reasons_and_the_server_stays_healthy(spark, lake, table):
    service = service_without(lake, table, [], spark, "serve.max_body_bytes=4000000")
    good = service.sample_event()
    many = [dict(good, transaction_id=f"many-{i}") for i in range(10_000)]
    cases = [
        (b'{"transaction_id": "x", "amount": ', 400, ["bad JSON"]),
        (b'"just a string"', 400, None),
        (b"[]", 400, None),
        (json.dumps(dict(good, amount="12.5")).encode(), 400, ["wrong type amount (expected a number)"]),
        (json.dumps(dict(good, amount=-5)).encode(), 400, ["negative amount"]),
        (json.dumps(dict(good, event_time="yesterday")).encode(), 400, ["unparseable event_time"]),
        (json.dumps(dict(good, customer_id="")).encode(), 400, ["missing customer_id"]),
        (json.dumps(dict(good, customer_id={"id": 1})).encode(), 400, ["wrong type customer_id (expected a scalar)"]),
        (json.dumps(dict(good, label=3)).encode(), 400, ["invalid label"]),
        (json.dumps({k: v for k, v in good.items() if k != "terminal_id"}).encode(), 400, ["missing terminal_id"]),
        (json.dumps(dict(good, colour="red", shoe=1)).encode(), 400, ["unknown fields colour, shoe"]),
        (json.dumps([good, good]).encode(), 400, ["duplicate transaction_id"]),
        (json.dumps(dict(good, transaction_id=table["transaction_id"].iloc[-1])).encode(), 400,
         ["duplicate transaction_id (already processed)"]),
        (json.dumps([good, 7]).encode(), 400, ["bad JSON"]),
        (json.dumps(many).encode(), 400, None),
        (b" " * 4_000_001, 413, None),
    ]
    with http_server(create_app(service)) as base:
        for body, status, reasons in cases:
            got, answer = _post(base, "/v1/score", body)
            assert got == status, (body[:120], answer)
            assert answer["error"], answer
            if reasons is not None:
                assert [r["reason"] for r in answer["rejected"]] == reasons, answer
        assert "too many events (10000 > 1000" in _post(base, "/v1/score", json.dumps(many).encode())[1]["error"]
        # a huge body announced by its length is refused before it is read; the server stays up
        status, _ = _get(base, "/health")
        assert status == 200
        got, answer = _post(base, "/v1/score", json.dumps(good).encode())
        assert got == 200 and answer["results"][0]["transaction_id"] == good["transaction_id"]
        assert _get(base, "/nowhere")[0] == 404


def test_the_champion_is_reloaded_when_its_pointer_moves_without_a_failed_request(spark, lake, table, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(lake["root"] / "lake" / "models", models)
    root = models / "transactions" / "logistic"
    shutil.copytree(root / "v0001", root / "v0002")          # the same numbers under a new version
    info = json.loads((root / "v0002" / "version.json").read_text())
    (root / "v0002" / "version.json").write_text(json.dumps(dict(info, version="v0002")))
    config = lake_config(lake, "serve.reload_seconds=0")
    champions = RegistryChampions(str(models), "transactions", reload_seconds=0)
    rest = state_frame(table)
    service = ScoringService(config, champions, TransactionHistory(rest, complete_from_us=int(rest["ts"].min())),
                             SparkJudge(config, session=lambda: spark))
    statuses, versions, stop = [], [], threading.Event()
    with http_server(create_app(service)) as base:
        def client():
            i = 0
            while not stop.is_set():
                i += 1
                status, answer = _post(base, "/v1/score", json.dumps(dict(service.sample_event(),
                                                                           transaction_id=f"r-{i}")).encode())
                statuses.append(status)
                versions.append(answer["results"][0]["model_versions"]["logistic"] if status == 200 else None)
        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(1.0)
        registry.promote(str(models / "transactions"), "logistic", "v0002", reason="reload test")
        deadline = time.time() + 60
        while (not versions or versions[-1] != "v0002") and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        thread.join(timeout=60)
    assert set(statuses) == {200}, statuses
    assert versions[0] == "v0001" and versions[-1] == "v0002"
    switch = versions.index("v0002")
    assert set(versions[switch:]) == {"v0002"}            # never back to the old one
    assert champions.reloads == 1


# --------------------------------------------------------------------------- AWS Lambda

# Event shapes as AWS documents them: API Gateway REST API proxy integration (payload format 1.0,
# "Input format of a Lambda function for proxy integration") and HTTP API / Function URL
# (payload format 2.0, "Working with AWS Lambda proxy integrations for HTTP APIs").
def rest_event(method, path, body=None, base64_body=False):
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Host": "abc123.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {"resourceId": "abc", "resourcePath": "/{proxy+}", "httpMethod": method,
                           "path": f"/prod{path}", "stage": "prod", "accountId": "123456789012",
                           "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "apiId": "abc123",
                           "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.0"},
                           "requestTimeEpoch": 1700000000000, "protocol": "HTTP/1.1"},
        "body": (base64.b64encode(body).decode() if base64_body else body.decode()) if body is not None else None,
        "isBase64Encoded": base64_body,
    }


def http_api_event(method, path, body=None, base64_body=False, stage="$default"):
    raw = path if stage == "$default" else f"/{stage}{path}"
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": raw, "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc123.lambda-url.eu-west-1.on.aws"},
        "requestContext": {"accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.lambda-url.eu-west-1.on.aws",
                           "http": {"method": method, "path": raw, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                                    "userAgent": "curl/8.0"},
                           "requestId": "id", "routeKey": "$default", "stage": stage,
                           "time": "12/Mar/2024:19:03:58 +0000", "timeEpoch": 1710270238000},
        "body": (base64.b64encode(body).decode() if base64_body else body.decode()) if body is not None else None,
        "isBase64Encoded": base64_body,
    }


@pytest.fixture(scope="module")
def bundle(spark, lake, tmp_path_factory):
    """A Lambda bundle of the lake (its champions' snapshot and its whole history)."""
    from serving.bundle import history_from_lake, write_bundle

    folder = tmp_path_factory.mktemp("bundle") / "bundle"
    config = lake_config(lake, "serve.history_days=400")
    written = write_bundle(config, str(folder), history=history_from_lake(config))
    assert written["rcf"] and written["logistic"]
    return folder


def test_the_lambda_handler_answers_rest_and_http_api_events(bundle, lake, table, spark, monkeypatch):
    from serving import lambda_handler

    monkeypatch.setenv("SERVING_BUNDLE", str(bundle))
    monkeypatch.setattr(lambda_handler, "_SERVICE", None)
    event = {k: v for k, v in lambda_handler.service().sample_event().items()}
    body = json.dumps(event).encode()
    # the same event through the HTTP service (registry champions, Spark loaders) for the expected risk
    reference = service_without(lake, table, [], spark, "serve.learn=false").score(body)
    assert reference.status == 200
    expected = reference.body["results"][0]
    loaded = lambda_handler._SERVICE
    for make, kw in ((rest_event, {}), (rest_event, {"base64_body": True}), (http_api_event, {}),
                     (http_api_event, {"base64_body": True, "stage": "prod"})):
        monkeypatch.setattr(lambda_handler._SERVICE, "learn", False)
        answer = lambda_handler.handler(make("POST", "/v1/score", body, **kw), None)
        assert answer["statusCode"] == 200, answer
        assert answer["headers"]["content-type"] == "application/json"
        assert answer["isBase64Encoded"] is False
        result = json.loads(answer["body"])["results"][0]
        assert result["transaction_id"] == event["transaction_id"]
        assert abs(result["risk"] - expected["risk"]) <= 1e-9 and result["reasons"] == expected["reasons"]
        assert result["model_versions"] == expected["model_versions"]
    assert lambda_handler._SERVICE is loaded       # loaded once per container
    for make in (rest_event, http_api_event):
        health = lambda_handler.handler(make("GET", "/health"), None)
        assert health["statusCode"] == 200 and json.loads(health["body"])["status"] == "ok"
        models = json.loads(lambda_handler.handler(make("GET", "/v1/models"), None)["body"])
        assert set(models["models"]) == {"rcf", "logistic"}
        bad = lambda_handler.handler(make("POST", "/v1/score", json.dumps(dict(event, amount=-1)).encode()), None)
        assert bad["statusCode"] == 400 and bad["headers"]["content-type"] == "application/json"
        # no Spark in Lambda: a record the fast decoder leaves over gets the generic reason
        assert json.loads(bad["body"])["rejected"] == [{"index": 0, "reason": NO_SPARK_REASON}]
        odd = lambda_handler.handler(make("POST", "/v1/score", b"{oops"), None)
        assert odd["statusCode"] == 400 and json.loads(odd["body"])["error"] == "bad JSON"
        assert lambda_handler.handler(make("GET", "/v1/score"), None)["statusCode"] == 405
        assert lambda_handler.handler(make("GET", "/admin"), None)["statusCode"] == 404


def test_the_lambda_handler_loads_its_bundle_from_s3_once(bundle, tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    from serving import lambda_handler

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for path in bundle.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), "models", f"serving/transactions/{path.relative_to(bundle)}")
        monkeypatch.setenv("SERVING_BUNDLE", "s3://models/serving/transactions")
        monkeypatch.setenv("SERVING_BUNDLE_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(lambda_handler, "_SERVICE", None)
        first = lambda_handler.handler(http_api_event("GET", "/v1/models"), None)
        loaded = lambda_handler._SERVICE
        second = lambda_handler.handler(http_api_event("GET", "/health"), None)
    assert first["statusCode"] == 200 and second["statusCode"] == 200
    assert set(json.loads(first["body"])["models"]) == {"rcf", "logistic"}
    assert lambda_handler._SERVICE is loaded
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(p.name for p in bundle.iterdir())
