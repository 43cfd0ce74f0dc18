"""Alert delivery against SNS (moto, in process) through a client that throttles, refuses and times out.

The promise under test (streaming/alerts.py): every flagged event is delivered once or sits in the
alert dead letters with its reason; nothing SNS may have taken is sent again; a batch SNS did not
take is retried by later batches; subjects and batch sizes are what SNS accepts.
"""
from __future__ import annotations

import re

import pytest

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")
from botocore.exceptions import ClientError, ReadTimeoutError  # noqa: E402

from streaming.alerts import AlertDeadLetters, AlertOutbox, SentLedger, SnsAlerter  # noqa: E402
from streaming.batch import BatchReport  # noqa: E402

SNS_REQUEST_LIMIT = 262_144          # bytes, whole PublishBatch (AWS SNS quotas)


class Store:
    """The TextStore protocol in memory."""

    def __init__(self):
        self.files: dict[str, str] = {}

    def list_files(self, folder):
        return sorted(p for p in self.files if p.startswith(folder.rstrip("/") + "/"))

    def read_text(self, path):
        return self.files[path]

    def write_text(self, path, text):
        self.files[path] = text

    def delete(self, path):
        self.files.pop(path, None)


@pytest.fixture
def sns_queue(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        yield sns, sqs, topic, queue


def delivered_ids(sqs, queue) -> list[str]:
    """Every event id that reached the subscriber, one entry per delivery (duplicates kept)."""
    ids = []
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get(
            "Messages", [])
        if not got:
            return ids
        ids.extend(m["MessageAttributes"]["event_id"]["StringValue"] for m in got)
        sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                           for i, m in enumerate(got)])


class FaultySns:
    """Forwards publish_batch to a real (moto) client, with the faults the test scripts per call.

    ``plan`` is a list consumed one call at a time: "ok", "throttle" (an error before SNS sees
    the batch), "deny" (AuthorizationError), "timeout" (SNS takes the batch, the reply is lost),
    or ("refuse", ids) (SNS takes all entries but those event ids, which fail with SenderFault).
    """

    def __init__(self, real, plan):
        self.real, self.plan, self.calls = real, list(plan), []

    def publish_batch(self, TopicArn, PublishBatchRequestEntries):
        entries = PublishBatchRequestEntries
        self.calls.append(entries)
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "throttle":
            raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "PublishBatch")
        if step == "deny":
            raise ClientError({"Error": {"Code": "AuthorizationError", "Message": "not allowed"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, "PublishBatch")
        refused = set(step[1]) if isinstance(step, tuple) else set()
        keep = [e for e in entries if e["MessageAttributes"]["event_id"]["StringValue"] not in refused]
        response = self.real.publish_batch(TopicArn=TopicArn, PublishBatchRequestEntries=keep) if keep else {
            "Successful": [], "Failed": []}
        if step == "timeout":
            raise ReadTimeoutError(endpoint_url="http://sns")
        failed = [{"Id": e["Id"], "Code": "InvalidParameter", "Message": "bad", "SenderFault": True}
                  for e in entries if e not in keep]
        return {"Successful": response["Successful"], "Failed": response.get("Failed", []) + failed}


def events(prefix, n):
    return [{"transaction_id": f"{prefix}{i}", "customer_id": f"c{i % 3}", "terminal_id": "k1", "amount": 10.0 + i,
             "event_time": "2026-03-01 10:00:00", "risk": 0.9, "rcf_score": 2.0, "logistic_score": 0.8,
             "rcf_version": "v1", "logistic_version": "v1", "reasons": ["logistic:amount"]} for i in range(n)]


def alerter_for(sns, topic, store, **kw):
    return SnsAlerter(sns, topic, SentLedger(store, "ckpt/alerts_sent"), dataset="transactions",
                      rate_per_second=1e6, max_retries=1, sleep=lambda s: None, **kw)


def test_no_alert_is_lost_or_sent_twice_through_throttling_refusals_and_timeouts(sns_queue):
    sns, sqs, topic, queue = sns_queue
    # batch 1: 10 throttled twice (in-call retry too) -> kept; 10 with 2 refused; 10 timed out after SNS took them
    # batch 2: retries the kept 10 (ok), then its own 5 (denied: authorization)
    faulty = FaultySns(sns, ["throttle", "throttle", ("refuse", {"a12", "a15"}), "timeout", "ok", "deny"])
    store = Store()
    alerter = alerter_for(faulty, topic, store)
    first = alerter.publish(events("a", 30), scope="1")
    assert (first.sent, first.pending, first.dead, first.failed) == (8, 10, 12, 22)
    kept = AlertOutbox(store, "ckpt/alerts_pending")
    assert kept.keys("1") == {f"a{i}" for i in range(10)}

    # a restart re-running batch 1 (SNS still throttling) sends nothing new: sent, kept and
    # dead-lettered keys are all handled; the kept ones stay kept
    again = alerter_for(FaultySns(sns, ["throttle"] * 4), topic, store).publish(events("a", 30), scope="1")
    assert (again.sent, again.skipped, again.pending, again.dead) == (0, 30, 10, 0)

    second = alerter.publish(events("b", 5), scope="2")
    assert (second.sent, second.retried, second.pending, second.dead) == (10, 10, 0, 5)
    assert kept.files() == []

    got = delivered_ids(sqs, queue)
    assert len(got) == len(set(got)), "an alert reached the subscriber twice"
    dead = AlertDeadLetters(store, "ckpt/alerts_dead_letters", "transactions").rows()
    kinds = {row["event_id"]: row["kind"] for row in dead}
    assert kinds == {"a12": "refused", "a15": "refused", **{f"a{i}": "ambiguous" for i in range(20, 30)},
                     **{f"b{i}": "refused" for i in range(5)}}
    assert all(row["error"] and row["event"]["transaction_id"] == row["event_id"] for row in dead)
    # every flagged event: delivered once, or in the dead letters (the timed-out ones were delivered AND
    # dead-lettered as ambiguous: an operator can check them, the stream never resends them)
    flagged = {e["transaction_id"] for e in events("a", 30) + events("b", 5)}
    assert set(got) | set(kinds) == flagged
    assert set(got) & set(kinds) == {f"a{i}" for i in range(20, 30)}

    report = BatchReport(batch_id=1, alerts_sent=first.sent, alerts_pending=first.pending, alerts_dead=first.dead)
    assert "NOT delivered: 10 kept for retry, 12 to the alert dead letters" in report.line()


def test_an_alert_kept_too_long_goes_to_the_dead_letters(sns_queue):
    sns, sqs, topic, queue = sns_queue
    now = [1000.0]
    store = Store()
    alerter = alerter_for(FaultySns(sns, ["throttle", "throttle"]), topic, store, pending_seconds=60,
                          wall_clock=lambda: now[0])
    assert alerter.publish(events("a", 3), scope="1").pending == 3
    now[0] += 61
    later = alerter.publish([], scope="2")
    assert (later.sent, later.dead, later.pending) == (0, 3, 0)
    rows = AlertDeadLetters(store, "ckpt/alerts_dead_letters", "transactions").rows()
    assert {r["kind"] for r in rows} == {"expired"} and "Throttling" in rows[0]["error"]
    assert delivered_ids(sqs, queue) == []


def test_a_fifo_topic_retries_a_timed_out_batch_under_the_same_dedup_ids(sns_queue):
    sns, _, _, _ = sns_queue
    fifo = sns.create_topic(Name="alerts.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    faulty = FaultySns(sns, ["timeout", "ok"])
    report = alerter_for(faulty, fifo, Store()).publish(events("a", 4), scope="1")
    assert (report.sent, report.dead, report.pending) == (4, 0, 0)
    first, second = faulty.calls
    assert [e["MessageDeduplicationId"] for e in first] == [e["MessageDeduplicationId"] for e in second]


def test_subjects_from_hostile_ids_are_what_sns_accepts(sns_queue):
    sns, sqs, topic, queue = sns_queue
    hostile = ["line\nbreak", "bell\x07and\ttab", "ünïcødé-id", "x" * 500, "[t1]", "\r\n\x00"]
    rows = [dict(e, customer_id=cid, transaction_id=f"id-{i}-{cid}") for i, (e, cid) in
            enumerate(zip(events("a", len(hostile)), hostile, strict=True))]
    faulty = FaultySns(sns, [])
    report = alerter_for(faulty, topic, Store()).publish(rows, scope="1")
    assert (report.sent, report.failed) == (len(hostile), 0)
    for entry in faulty.calls[0]:
        assert re.fullmatch(r"[\x20-\x7e]{1,99}", entry["Subject"]), entry["Subject"]
        lines = entry["Message"].split("\n")
        assert len(lines) == 6, lines        # no forged lines (5 lines + the amount)
    assert len(delivered_ids(sqs, queue)) == len(hostile)


def test_publish_batches_stay_under_the_sns_request_limit_with_their_attributes(sns_queue):
    sns, sqs, topic, queue = sns_queue
    # reasons of ~50 KiB each: ten messages would pass 256 KiB; the event ids are long attribute values
    rows = [dict(e, transaction_id=f"{i}-" + "k" * 240, reasons=[f"r{j}:" + "v" * 250 for j in range(200)])
            for i, e in enumerate(events("a", 25))]
    faulty = FaultySns(sns, [])
    report = alerter_for(faulty, topic, Store()).publish(rows, scope="1")
    assert (report.sent, report.failed) == (25, 0)
    assert len(faulty.calls) >= 5
    for call in faulty.calls:
        size = 0
        for entry in call:
            size += len(entry["Message"].encode()) + len(entry["Subject"].encode())
            size += sum(len(k.encode()) + len(a["DataType"].encode()) + len(a["StringValue"].encode())
                        for k, a in entry["MessageAttributes"].items())
        assert size <= SNS_REQUEST_LIMIT and len(call) <= 10
    assert len(delivered_ids(sqs, queue)) == 25


def test_the_stream_client_never_retries_by_itself():
    from runtime.aws import client

    sns = client("sns", {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9"}, attempts=1,
                 timeout_seconds=2.5)
    assert sns.meta.config.retries["total_max_attempts"] == 1
    assert (sns.meta.config.read_timeout, sns.meta.config.connect_timeout) == (2.5, 2.5)
