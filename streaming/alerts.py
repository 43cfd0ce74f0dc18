"""SNS alerts for anomalous events: batched, rate-limited and sent at most once per event id.

Exactly-once towards subscribers rests on a *sent-keys ledger*: before an alert is published the
ledger is asked whether its key (the event id) was sent already; after each PublishBatch call the
keys SNS accepted are written to the ledger. A restart that replays a micro-batch therefore skips
what went out before the crash. The only window left is a crash between SNS accepting a batch and
the ledger write (a few milliseconds); on a FIFO topic (ARN ending in ``.fifo``) each message
also carries ``MessageDeduplicationId`` = hash of the key, which closes that window for SNS's
5-minute deduplication interval.

The ledger is stored through a tiny file-system protocol (``list_files``, ``read_text``,
``write_text``; the :mod:`runtime.fs` module is one) so it lives next to the stream's checkpoint
on a local disk or on S3.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from features.datasets import dataset as dataset_named

MAX_BATCH_ENTRIES = 10                  # SNS PublishBatch limit
MAX_MESSAGE_BYTES = 256 * 1024          # per message, and for a whole PublishBatch request
SUBJECT_MAX_CHARS = 100
SCORE_COLUMNS = ("risk", "rcf_score", "logistic_score", "rcf_version", "logistic_version", "reasons")


class TextStore(Protocol):
    def list_files(self, folder: str) -> list[str]: ...
    def read_text(self, path: str) -> str: ...
    def write_text(self, path: str, text: str) -> None: ...


class SentLedger:
    """Keys already published, one small JSON file per PublishBatch call under ``root/<scope>/``."""

    def __init__(self, store: TextStore, root: str):
        self.store = store
        self.root = root.rstrip("/")

    def sent_keys(self, scope: str) -> set[str]:
        keys: set[str] = set()
        for path in self.store.list_files(f"{self.root}/{scope}"):
            if path.endswith(".json"):
                keys.update(json.loads(self.store.read_text(path)))
        return keys

    def record(self, scope: str, chunk: str, keys: Sequence[str]) -> None:
        if keys:
            self.store.write_text(f"{self.root}/{scope}/{chunk}.json", json.dumps(sorted(keys)))


class RateLimiter:
    """At most ``per_second`` messages per second on average (token bucket, burst of one batch)."""

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.per_second = float(per_second)
        self.clock, self.sleep = clock, sleep
        self.capacity = max(float(MAX_BATCH_ENTRIES), self.per_second)
        self.tokens = min(self.capacity, float(MAX_BATCH_ENTRIES))
        self.last = clock()

    def acquire(self, n: int) -> None:
        while True:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.per_second)
            self.last = now
            if self.tokens >= n:
                self.tokens -= n
                return
            self.sleep((n - self.tokens) / self.per_second)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@dataclass(frozen=True)
class AlertFields:
    """Which event columns say what/where for a data set (from its ``Dataset`` descriptor)."""

    key: str                        # event id: the dedup key
    entity: str                     # device_id / customer_id
    where: Sequence[str]            # site_id / terminal_id
    details: Sequence[str] = ()     # more event fields worth a line (amount)

    @staticmethod
    def for_dataset(name: str) -> "AlertFields":
        described = dataset_named(name)
        return AlertFields(described.event_id, described.entity, (described.location,), described.alert_details)

    def columns(self) -> tuple[str, ...]:
        """The event columns an alert shows."""
        return (self.key, self.entity, *self.where, "event_time", *self.details, *SCORE_COLUMNS)


def format_alert(event: Mapping[str, Any], fields: AlertFields, dataset: str) -> tuple[str, str]:
    """(subject, message): what (event, entity), where, how risky (risk, scores) and why (reasons)."""
    where = ", ".join(f"{name} {event.get(name) or 'unknown'}" for name in fields.where)
    reasons = event.get("reasons") or []
    subject = f"Anomaly: {fields.entity} {event.get(fields.entity)} risk {_fmt(event.get('risk'), 2)}"
    lines = [
        f"Anomalous {dataset} event {event.get(fields.key)}",
        f"What:  {fields.entity} {event.get(fields.entity)}, event {event.get(fields.key)} at {event.get('event_time')}",
        f"Where: {where}",
        f"Risk:  {_fmt(event.get('risk'))} (rcf_score {_fmt(event.get('rcf_score'))}"
        f" model {event.get('rcf_version') or '?'}, logistic_score {_fmt(event.get('logistic_score'))}"
        f" model {event.get('logistic_version') or '?'})",
        "Why:   " + ("; ".join(str(r) for r in reasons) if reasons else "no reason codes"),
    ]
    details = [f"{name.capitalize()}: {_fmt(event.get(name), 2)}" for name in fields.details
               if event.get(name) is not None]
    lines[2:2] = details
    message = "\n".join(lines)
    encoded = message.encode("utf-8")
    if len(encoded) > MAX_MESSAGE_BYTES - 1024:
        message = encoded[: MAX_MESSAGE_BYTES - 1024].decode("utf-8", "ignore") + "\n[truncated]"
    return subject[:SUBJECT_MAX_CHARS], message


@dataclass
class PublishReport:
    sent: int = 0
    skipped: int = 0            # already in the ledger
    failed: int = 0             # SNS refused them after every retry
    failures: list[str] = field(default_factory=list)


class SnsAlerter:
    """Publishes alert dicts to one topic with PublishBatch, a ledger and a rate limit."""

    def __init__(self, sns_client, topic_arn: str, ledger: SentLedger, *, dataset: str,
                 rate_per_second: float = 10.0, max_retries: int = 5, backoff_seconds: float = 0.2,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.sns = sns_client
        self.topic_arn = topic_arn
        self.ledger = ledger
        self.dataset = dataset
        self.fields = AlertFields.for_dataset(dataset)
        self.fifo = topic_arn.endswith(".fifo")
        self.limiter = RateLimiter(rate_per_second, sleep=sleep, clock=clock)
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep

    def _entry(self, index: int, event: Mapping[str, Any]) -> dict:
        subject, message = format_alert(event, self.fields, self.dataset)
        key = str(event[self.fields.key])
        entry = {
            "Id": f"m{index}",
            "Subject": subject,
            "Message": message,
            "MessageAttributes": {
                "event_id": {"DataType": "String", "StringValue": key},
                "dataset": {"DataType": "String", "StringValue": self.dataset},
                "risk": {"DataType": "Number", "StringValue": _fmt(event.get("risk"), 6)},
            },
        }
        if self.fifo:
            entry["MessageGroupId"] = str(event.get(self.fields.entity) or "alerts")[:128]
            entry["MessageDeduplicationId"] = hashlib.sha256(key.encode()).hexdigest()
        return entry

    @staticmethod
    def _chunks(entries: list[dict]) -> Iterable[list[dict]]:
        chunk: list[dict] = []
        size = 0
        for entry in entries:
            entry_size = len(entry["Message"].encode()) + len(entry["Subject"].encode()) + 512
            if chunk and (len(chunk) == MAX_BATCH_ENTRIES or size + entry_size > MAX_MESSAGE_BYTES):
                yield chunk
                chunk, size = [], 0
            chunk.append(entry)
            size += entry_size
        if chunk:
            yield chunk

    def publish(self, events: Sequence[Mapping[str, Any]], scope: str) -> PublishReport:
        """Send an alert per event not yet in the ledger under ``scope`` (the micro-batch id)."""
        report = PublishReport()
        already = self.ledger.sent_keys(scope)
        pending: dict[str, Mapping[str, Any]] = {}
        for event in events:
            key = str(event[self.fields.key])
            if key in already or key in pending:
                report.skipped += 1
            else:
                pending[key] = event
        entries = [self._entry(i, event) for i, event in enumerate(pending.values())]
        keys_by_id = {entry["Id"]: key for entry, key in zip(entries, pending, strict=True)}
        for n, chunk in enumerate(self._chunks(entries)):
            self.limiter.acquire(len(chunk))
            sent_ids, failed = self._send(chunk)
            self.ledger.record(scope, f"{int(time.time() * 1000):013d}-{n:05d}",
                               [keys_by_id[i] for i in sent_ids])
            report.sent += len(sent_ids)
            report.failed += len(failed)
            report.failures.extend(failed)
        return report

    def _send(self, chunk: list[dict]) -> tuple[list[str], list[str]]:
        """PublishBatch with retries of failed entries; (sent ids, 'id: error' of given-up ones)."""
        todo = list(chunk)
        sent: list[str] = []
        errors: dict[str, str] = {}
        for attempt in range(self.max_retries + 1):
            try:
                response = self.sns.publish_batch(TopicArn=self.topic_arn, PublishBatchRequestEntries=todo)
            except Exception as exc:  # throttling or a transient error: retry the whole chunk
                if attempt == self.max_retries:
                    return sent, [f"{e['Id']}: {exc}" for e in todo]
                self.sleep(self.backoff_seconds * 2 ** attempt)
                continue
            sent.extend(item["Id"] for item in response.get("Successful", []))
            failed = {item["Id"]: item for item in response.get("Failed", [])}
            errors = {i: f"{item.get('Code')}: {item.get('Message')}" for i, item in failed.items()}
            # Sender faults (bad request) will not succeed on retry.
            todo = [e for e in todo if e["Id"] in failed and not failed[e["Id"]].get("SenderFault")]
            if not todo:
                break
            self.sleep(self.backoff_seconds * 2 ** attempt)
        return sent, [f"{i}: {msg}" for i, msg in errors.items() if i not in sent]
