"""SNS alerts for anomalous events: batched, rate-limited, at most one delivery per event, none lost.

What happens to an alert (its key is the event id, within the micro-batch that raised it):

* **sent**: SNS listed it as ``Successful``. Its key goes to the *ledger* (one small JSON file per
  PublishBatch call under ``<checkpoint>/alerts_sent/<batch>``) right after the call, so a
  restart that replays the batch skips it.
* **kept for retry**: SNS did not take it and said so - throttling, a 5xx, an entry ``Failed``
  without ``SenderFault``, or no connection at all. It is retried with backoff within the call,
  then kept in the *outbox* (``<checkpoint>/alerts_pending``) and retried at the start of every
  later micro-batch, until it is sent or ``stream.alerts.pending_seconds`` have passed.
* **dead-lettered**: written with the SNS error to the alert dead letters (JSON lines under
  ``stream.alerts.dead_letter``, default ``<checkpoint>/alerts_dead_letters``) and its key to the
  ledger: SNS refused it (``SenderFault``, authorization, a bad parameter: a retry cannot help),
  it stayed pending too long, or the outcome is *ambiguous* - the request went out and no answer
  came back (a read timeout, a dropped connection). On a standard topic an ambiguous alert is
  never sent again, since SNS may have delivered it; on a FIFO topic (ARN ending in ``.fifo``)
  every message carries ``MessageDeduplicationId`` = hash of its key, so an ambiguous batch is
  retried like a throttled one and SNS drops the copy within its 5-minute deduplication window.

So every flagged event is delivered once or sits in the alert dead letters with the reason, and
each outcome is counted in the batch line and the job summary. The one window left is a crash
between SNS accepting a batch and the ledger write (milliseconds): a restart sends that batch
again on a standard topic. The alerter's client must not retry by itself (botocore retries read
timeouts): :func:`streaming.job.build_alerter` builds it with one attempt.

Subjects and attribute values come from event fields (untrusted input): they are cleaned to what
SNS accepts (printable ASCII, under 100 characters, no line breaks) and every PublishBatch is
sized with its subjects and message attributes under SNS's 256 KiB.

The ledger, outbox and dead letters are stored through a tiny file-system protocol
(``list_files``, ``read_text``, ``write_text``, ``delete``; :mod:`runtime.fs` is one) so they live
next to the stream's checkpoint on a local disk or on S3.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from features.datasets import dataset as dataset_named

MAX_BATCH_ENTRIES = 10                  # SNS PublishBatch limit
MAX_MESSAGE_BYTES = 256 * 1024          # per message with its attributes, and for a whole PublishBatch request
SUBJECT_MAX_CHARS = 99                  # SNS: "less than 100 characters"
ENTRY_OVERHEAD_BYTES = 64               # Id, group and dedup ids: not counted by SNS, kept as a margin
VALUE_MAX_CHARS = 256                   # one event field in a message line or an attribute
SCORE_COLUMNS = ("risk", "rcf_score", "logistic_score", "rcf_version", "logistic_version", "reasons")

SENT, RETRY, REFUSED, AMBIGUOUS, EXPIRED = "sent", "retry", "refused", "ambiguous", "expired"
# ClientError codes that mean "not taken, try later" (SNS, its KMS key, the HTTP layer)
RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "KMSThrottling", "KMSThrottlingException", "InternalError", "InternalFailure",
    "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
})
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class TextStore(Protocol):
    def list_files(self, folder: str) -> list[str]: ...
    def read_text(self, path: str) -> str: ...
    def write_text(self, path: str, text: str) -> None: ...
    def delete(self, path: str) -> None: ...


def _stamp() -> str:
    return f"{time.time_ns() // 1000:016d}"


class SentLedger:
    """Keys already handled (sent, or dead-lettered), one small JSON file per call under ``root/<scope>/``."""

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


class AlertOutbox:
    """Alerts SNS did not take yet: one JSON file per failed call under ``root``, deleted once handled."""

    def __init__(self, store: TextStore, root: str):
        self.store = store
        self.root = root.rstrip("/")

    def files(self) -> list[str]:
        return sorted(p for p in self.store.list_files(self.root) if p.endswith(".json"))

    def read(self, path: str) -> dict:
        return json.loads(self.store.read_text(path))

    def keys(self, scope: str) -> set[str]:
        """The keys of ``scope`` waiting here (a re-run of that batch must not send them again)."""
        keys: set[str] = set()
        for path in self.files():
            held = self.read(path)
            if held["scope"] == scope:
                keys.update(e["key"] for e in held["entries"])
        return keys

    def keep(self, scope: str, since: float, entries: Sequence[Mapping[str, Any]]) -> None:
        if entries:
            self.store.write_text(f"{self.root}/{_stamp()}-{scope}.json",
                                  json.dumps({"scope": scope, "since": since, "entries": list(entries)}, default=str))

    def remove(self, path: str) -> None:
        self.store.delete(path)


class AlertDeadLetters:
    """Alerts that will not be sent: JSON lines (event, SNS error, why) under ``root``, one file per call."""

    def __init__(self, store: TextStore, root: str, dataset: str):
        self.store = store
        self.root = root.rstrip("/")
        self.dataset = dataset

    def write(self, scope: str, rows: Sequence[tuple[str, Mapping[str, Any], str, str]]) -> None:
        """``rows``: (key, event, kind, error) with kind refused | ambiguous | expired."""
        if not rows:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lines = [json.dumps({"dataset": self.dataset, "batch": scope, "event_id": key, "kind": kind, "error": error,
                             "dead_at": now, "event": dict(event)}, default=str) for key, event, kind, error in rows]
        self.store.write_text(f"{self.root}/{_stamp()}-{scope}.jsonl", "\n".join(lines) + "\n")

    def rows(self) -> list[dict]:
        out: list[dict] = []
        for path in sorted(self.store.list_files(self.root)):
            if path.endswith(".jsonl"):
                out.extend(json.loads(line) for line in self.store.read_text(path).splitlines() if line)
        return out


def classify_error(exc: BaseException) -> tuple[str, str]:
    """(retry | refused | ambiguous, text) for an exception of a PublishBatch call.

    A ``ClientError`` is an answer from AWS: throttling and server faults were not taken (retry),
    anything else is a refusal a retry cannot fix. botocore's ``ConnectionError`` family means no
    request reached SNS (retry). Anything else - a read timeout, a closed connection - leaves open
    whether SNS took the batch: ambiguous.
    """
    try:
        from botocore.exceptions import ClientError, ConnectionError as NoConnection
    except ImportError:           # pragma: no cover - boto3 is a dependency
        ClientError = NoConnection = ()
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(error.get("Code", ""))
        return (RETRY if code in RETRYABLE_CODES or status >= 500 or status == 429 else REFUSED), text
    if isinstance(exc, NoConnection):
        return RETRY, text
    return AMBIGUOUS, text


def sns_subject(text: str) -> str:
    """``text`` as SNS takes a subject: printable ASCII, no line breaks, under 100 characters."""
    cleaned = " ".join(_NOT_PRINTABLE_ASCII.sub("?", text).split())
    return cleaned[:SUBJECT_MAX_CHARS].rstrip() or "Anomaly"


def _clean(value: Any, limit: int = VALUE_MAX_CHARS) -> str:
    """An event field for one line of a message: no control characters, bounded length."""
    text = _CONTROL.sub("?", str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _attribute(value: Any) -> str:
    return _NOT_XML_CHAR.sub("?", str(value))[:VALUE_MAX_CHARS] or "?"


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
    return _clean(value)


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
    """(subject, message): what (event, entity), where, how risky (risk, scores) and why (reasons).

    Event fields are cleaned of control characters (an id cannot forge a line) and the subject is
    what SNS accepts; the caller bounds the message's size with its attributes.
    """
    where = ", ".join(f"{name} {_fmt(event.get(name) or 'unknown')}" for name in fields.where)
    reasons = event.get("reasons") or []
    entity, key = _fmt(event.get(fields.entity)), _fmt(event.get(fields.key))
    subject = sns_subject(f"Anomaly: {fields.entity} {entity} risk {_fmt(event.get('risk'), 2)}")
    lines = [
        f"Anomalous {dataset} event {key}",
        f"What:  {fields.entity} {entity}, event {key} at {_fmt(event.get('event_time'))}",
        f"Where: {where}",
        f"Risk:  {_fmt(event.get('risk'))} (rcf_score {_fmt(event.get('rcf_score'))}"
        f" model {_fmt(event.get('rcf_version') or '?')}, logistic_score {_fmt(event.get('logistic_score'))}"
        f" model {_fmt(event.get('logistic_version') or '?')})",
        "Why:   " + ("; ".join(_fmt(r) for r in reasons) if reasons else "no reason codes"),
    ]
    details = [f"{name.capitalize()}: {_fmt(event.get(name), 2)}" for name in fields.details
               if event.get(name) is not None]
    lines[2:2] = details
    return subject, "\n".join(lines)


def entry_bytes(entry: Mapping[str, Any]) -> int:
    """What SNS counts of a PublishBatch entry: message, subject and attributes (names, types, values)."""
    size = len(entry["Message"].encode()) + len(entry.get("Subject", "").encode())
    for name, attr in entry.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(attr["DataType"].encode()) + len(attr["StringValue"].encode())
    return size


@dataclass
class PublishReport:
    sent: int = 0               # delivered now (new alerts and retried ones)
    skipped: int = 0            # already handled for this batch (a re-run)
    retried: int = 0            # of ``sent``: alerts kept from earlier batches
    pending: int = 0            # SNS did not take them yet: kept in the outbox for later batches
    dead: int = 0               # written to the alert dead letters (refused, ambiguous, expired)
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Alerts not delivered by this call."""
        return self.pending + self.dead


class SnsAlerter:
    """Publishes alert dicts to one topic with PublishBatch, a ledger, an outbox and a rate limit."""

    def __init__(self, sns_client, topic_arn: str, ledger: SentLedger, *, dataset: str,
                 rate_per_second: float = 10.0, max_retries: int = 5, backoff_seconds: float = 0.2,
                 outbox: AlertOutbox | None = None, dead_letters: AlertDeadLetters | None = None,
                 pending_seconds: float = 3600.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.sns = sns_client
        self.topic_arn = topic_arn
        self.ledger = ledger
        base = ledger.root.rsplit("/", 1)[0]
        self.outbox = outbox or AlertOutbox(ledger.store, f"{base}/alerts_pending")
        self.dead_letters = dead_letters or AlertDeadLetters(ledger.store, f"{base}/alerts_dead_letters", dataset)
        self.pending_seconds = pending_seconds
        self.dataset = dataset
        self.fields = AlertFields.for_dataset(dataset)
        self.fifo = topic_arn.endswith(".fifo")
        self.limiter = RateLimiter(rate_per_second, sleep=sleep, clock=clock)
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.wall_clock = wall_clock

    def _entry(self, index: int, key: str, event: Mapping[str, Any]) -> dict:
        subject, message = format_alert(event, self.fields, self.dataset)
        entry = {
            "Id": f"m{index}",
            "Subject": subject,
            "Message": message,
            "MessageAttributes": {
                "event_id": {"DataType": "String", "StringValue": _attribute(key)},
                "dataset": {"DataType": "String", "StringValue": self.dataset},
                "risk": {"DataType": "Number", "StringValue": _fmt(event.get("risk"), 6)
                         if isinstance(event.get("risk"), (int, float)) else "0"},
            },
        }
        room = MAX_MESSAGE_BYTES - ENTRY_OVERHEAD_BYTES - (entry_bytes(entry) - len(message.encode()))
        if len(message.encode()) > room:
            entry["Message"] = message.encode()[: room - 16].decode("utf-8", "ignore") + "\n[truncated]"
        if self.fifo:
            entry["MessageGroupId"] = _attribute(event.get(self.fields.entity) or "alerts")[:128]
            entry["MessageDeduplicationId"] = hashlib.sha256(key.encode()).hexdigest()
        return entry

    @staticmethod
    def _chunks(entries: list[dict]) -> Iterable[list[dict]]:
        chunk: list[dict] = []
        size = 0
        for entry in entries:
            entry_size = entry_bytes(entry) + ENTRY_OVERHEAD_BYTES
            if chunk and (len(chunk) == MAX_BATCH_ENTRIES or size + entry_size > MAX_MESSAGE_BYTES):
                yield chunk
                chunk, size = [], 0
            chunk.append(entry)
            size += entry_size
        if chunk:
            yield chunk

    def publish(self, events: Sequence[Mapping[str, Any]], scope: str) -> PublishReport:
        """Retry what earlier batches kept, then alert on each event not yet handled under ``scope``."""
        report = PublishReport()
        still_pending = self._retry_pending(report)
        handled = self.ledger.sent_keys(scope) | still_pending.get(scope, set())
        todo: dict[str, Mapping[str, Any]] = {}
        for event in events:
            key = str(event[self.fields.key])
            if key in handled or key in todo:
                report.skipped += 1
            else:
                todo[key] = event
        self._deliver(scope, todo, report, since=None)
        return report

    def _retry_pending(self, report: PublishReport) -> dict[str, set[str]]:
        """Send again what the outbox holds; returns the keys still kept there, by scope (one read
        of the outbox per micro-batch: a re-run batch must not send those again).
        """
        still: dict[str, set[str]] = {}
        for path in self.outbox.files():
            held = self.outbox.read(path)
            scope = held["scope"]
            done = self.ledger.sent_keys(scope) | still.get(scope, set())
            todo = {e["key"]: e["event"] for e in held["entries"] if e["key"] not in done}
            before = report.sent
            kept = self._deliver(scope, todo, report, since=held["since"], errors={e["key"]: e["error"]
                                                                                     for e in held["entries"]})
            still.setdefault(scope, set()).update(kept)
            report.retried += report.sent - before
            self.outbox.remove(path)      # after its keys are in the ledger, dead letters or a newer file
        return still

    def _deliver(self, scope: str, events: Mapping[str, Mapping[str, Any]], report: PublishReport, *,
                 since: float | None, errors: Mapping[str, str] | None = None) -> set[str]:
        """Send ``events`` (key -> event) of ``scope``; returns the keys kept in the outbox."""
        if not events:
            return set()
        now = self.wall_clock()
        if since is not None and now - since > self.pending_seconds:
            expired = [(k, e, EXPIRED, f"not sent within {self.pending_seconds:g} s; last error "
                        f"{(errors or {}).get(k, '?')}") for k, e in events.items()]
            self._dead(scope, expired, report)
            return set()
        entries = [self._entry(i, key, event) for i, (key, event) in enumerate(events.items())]
        keys_by_id = {entry["Id"]: key for entry, key in zip(entries, events, strict=True)}
        keep: list[dict] = []
        for chunk in self._chunks(entries):
            self.limiter.acquire(len(chunk))
            sent_ids, dead, retry = self._send(chunk)
            self.ledger.record(scope, f"{_stamp()}-sent", [keys_by_id[i] for i in sent_ids])
            report.sent += len(sent_ids)
            self._dead(scope, [(keys_by_id[i], events[keys_by_id[i]], kind, error)
                               for i, (kind, error) in dead.items()], report)
            keep.extend({"key": keys_by_id[i], "event": events[keys_by_id[i]], "error": error}
                        for i, error in retry.items())
            report.failures.extend(f"{keys_by_id[i]}: {error}" for i, error in retry.items())
        self.outbox.keep(scope, now if since is None else since, keep)
        report.pending += len(keep)
        return {e["key"] for e in keep}

    def _dead(self, scope: str, rows: list[tuple[str, Mapping[str, Any], str, str]], report: PublishReport) -> None:
        if rows:
            self.dead_letters.write(scope, rows)
            self.ledger.record(scope, f"{_stamp()}-dead", [key for key, *_ in rows])
            report.dead += len(rows)
            report.failures.extend(f"{key}: {kind}: {error}" for key, _, kind, error in rows)

    def _send(self, chunk: list[dict]) -> tuple[list[str], dict[str, tuple[str, str]], dict[str, str]]:
        """PublishBatch with retries of what SNS did not take.

        Returns (sent ids, {id: (kind, error)} to dead-letter, {id: error} not taken after every
        retry). On a FIFO topic an ambiguous outcome is retried here (within SNS's deduplication
        window) and dead-lettered if it is still ambiguous at the last try.
        """
        todo = list(chunk)
        sent: list[str] = []
        dead: dict[str, tuple[str, str]] = {}
        retry: dict[str, str] = {}
        ambiguous = False
        for attempt in range(self.max_retries + 1):
            retry, ambiguous = {}, False
            try:
                response = self.sns.publish_batch(TopicArn=self.topic_arn, PublishBatchRequestEntries=todo)
            except Exception as exc:
                kind, text = classify_error(exc)
                if kind == AMBIGUOUS and self.fifo:   # SNS drops a copy with the same dedup id
                    kind, ambiguous = RETRY, True
                if kind == RETRY:
                    retry = {e["Id"]: text for e in todo}
                else:
                    dead.update({e["Id"]: (kind, text) for e in todo})
            else:
                sent.extend(item["Id"] for item in response.get("Successful", []))
                for item in response.get("Failed", []):
                    text = f"{item.get('Code')}: {item.get('Message')}"
                    if item.get("SenderFault"):
                        dead[item["Id"]] = (REFUSED, text)
                    else:
                        retry[item["Id"]] = text
            todo = [e for e in todo if e["Id"] in retry]
            if not todo:
                break
            if attempt < self.max_retries:
                self.sleep(self.backoff_seconds * 2 ** attempt)
        if ambiguous:     # a later batch's retry could fall outside the deduplication window
            dead.update({i: (AMBIGUOUS, text) for i, text in retry.items()})
            retry = {}
        return sent, dead, retry
