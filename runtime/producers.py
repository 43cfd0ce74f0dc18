"""The replay producer: records (JSON bytes + partition key) into a Kinesis stream or a landing folder.

Kinesis limits honoured here: PutRecords takes at most 500 records and 5 MiB per call, each record
(data + partition key) at most 1 MiB, a partition key 1..256 characters. Records a call reports
as failed (``FailedRecordCount`` > 0, an ``ErrorCode`` per record such as
``ProvisionedThroughputExceededException``) are retried - only those, so nothing is sent twice by
our retries - with exponential backoff; a call that fails as a whole (throttling, a dropped
connection) is retried the same way. The stream job also drops ids it has seen, covering the one
duplicate source left (an SDK retry of a call that had succeeded).

The landing mode writes JSON-lines files the way Firehose does: each file appears atomically (a
hidden temporary file renamed in locally; one PutObject on S3).
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
MAX_BACKOFF_SECONDS = 5.0


@dataclass
class ReplayReport:
    sent: int = 0
    failed: int = 0
    calls: int = 0
    retried: int = 0            # record re-sends after a per-record failure or a failed call
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)   # error code -> count of records given up

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class Pacer:
    """Keeps the average rate at ``per_second`` records (0: no limit)."""

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.per_second = float(per_second)
        self.clock, self.sleep = clock, sleep
        self.start = clock()
        self.count = 0

    def wait_for(self, n: int) -> None:
        if self.per_second > 0:
            due = self.start + self.count / self.per_second
            delay = due - self.clock()
            if delay > 0:
                self.sleep(delay)
        self.count += n


def chunk_records(records: Iterable[tuple[bytes, str]], *, batch_size: int = MAX_RECORDS_PER_CALL,
                  max_bytes: int = MAX_BYTES_PER_CALL) -> Iterator[list[tuple[bytes, str]]]:
    """Group records into PutRecords calls: <= batch_size (<= 500) records and <= max_bytes each."""
    batch_size = max(1, min(int(batch_size), MAX_RECORDS_PER_CALL))
    chunk: list[tuple[bytes, str]] = []
    size = 0
    for data, key in records:
        record_size = len(data) + len(key.encode("utf-8"))
        if chunk and (len(chunk) >= batch_size or size + record_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((data, key))
        size += record_size
    if chunk:
        yield chunk


def _partition_key(key: str | None) -> str:
    key = (key or "").strip() or "none"
    return key[:256]


class KinesisReplayer:
    """Sends records with PutRecords at a rate, retrying failed records with backoff."""

    def __init__(self, kinesis_client, stream_name: str, *, batch_size: int = 500, rate: float = 0.0,
                 max_retries: int = 8, backoff_seconds: float = 0.1,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None):
        self.client = kinesis_client
        self.stream_name = stream_name
        self.batch_size = batch_size
        self.pacer = Pacer(rate, sleep=sleep)
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.log = log

    def _backoff(self, attempt: int) -> None:
        self.sleep(min(MAX_BACKOFF_SECONDS, self.backoff_seconds * 2 ** attempt))

    def send(self, records: Iterable[tuple[bytes, str | None]]) -> ReplayReport:
        report = ReplayReport()
        started = time.monotonic()
        usable = self._filter_oversized(records, report)
        for n, chunk in enumerate(chunk_records(usable, batch_size=self.batch_size)):
            self.pacer.wait_for(len(chunk))
            self._put(chunk, report)
            if self.log and n and n % 20 == 0:
                self.log(f"sent {report.sent:,} records ({report.failed:,} failed) in {report.calls:,} calls")
        report.seconds = time.monotonic() - started
        return report

    @staticmethod
    def _filter_oversized(records, report) -> Iterator[tuple[bytes, str]]:
        for data, key in records:
            key = _partition_key(key)
            if len(data) + len(key.encode("utf-8")) > MAX_RECORD_BYTES:
                report.failed += 1
                report.errors["RecordTooLarge"] = report.errors.get("RecordTooLarge", 0) + 1
                continue
            yield data, key

    def _put(self, chunk: list[tuple[bytes, str]], report: ReplayReport) -> None:
        todo = chunk
        last_codes: dict[int, str] = {}
        for attempt in range(self.max_retries + 1):
            if attempt:
                report.retried += len(todo)
                self._backoff(attempt - 1)
            try:
                report.calls += 1
                response = self.client.put_records(
                    StreamName=self.stream_name,
                    Records=[{"Data": data, "PartitionKey": key} for data, key in todo])
            except Exception as exc:  # throttled or transient: nothing of this call was accepted
                code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
                last_codes = {i: code for i in range(len(todo))}
                continue
            results = response.get("Records", [])
            if not response.get("FailedRecordCount"):
                report.sent += len(todo)
                return
            retry, last_codes = [], {}
            for record, result in zip(todo, results, strict=True):
                if result.get("ErrorCode"):
                    last_codes[len(retry)] = result["ErrorCode"]
                    retry.append(record)
                else:
                    report.sent += 1
            todo = retry
            if not todo:
                return
        report.failed += len(todo)
        for code in last_codes.values():
            report.errors[code] = report.errors.get(code, 0) + 1


class LandingWriter:
    """JSON-lines files into a folder (local or s3://, s3a://) at a rate, each file atomic."""

    def __init__(self, folder: str, *, batch_size: int = 500, rate: float = 0.0, s3_client=None,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None):
        self.folder = folder.rstrip("/")
        self.batch_size = max(1, int(batch_size))
        self.pacer = Pacer(rate, sleep=sleep)
        self.s3 = s3_client
        self.log = log
        self.is_s3 = self.folder.startswith(("s3://", "s3a://"))
        if self.is_s3 and s3_client is None:
            raise ValueError("an s3 landing folder needs an S3 client")
        if not self.is_s3:
            os.makedirs(self.folder, exist_ok=True)
        self.run_id = uuid.uuid4().hex[:8]

    def _write(self, name: str, body: bytes) -> None:
        if self.is_s3:
            bucket, _, prefix = self.folder.split("://", 1)[1].partition("/")
            key = f"{prefix}/{name}" if prefix else name
            self.s3.put_object(Bucket=bucket, Key=key, Body=body)
            return
        tmp = os.path.join(self.folder, f".{name}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(body)
        os.replace(tmp, os.path.join(self.folder, name))

    def send(self, lines: Iterable[bytes]) -> ReplayReport:
        report = ReplayReport()
        started = time.monotonic()
        chunk: list[bytes] = []
        files = 0

        def flush() -> None:
            nonlocal files
            self.pacer.wait_for(len(chunk))
            name = f"replay-{int(time.time() * 1000):013d}-{self.run_id}-{files:06d}.json"
            self._write(name, b"\n".join(chunk) + b"\n")
            report.calls += 1
            report.sent += len(chunk)
            files += 1
            if self.log and files % 20 == 0:
                self.log(f"wrote {report.sent:,} records in {files:,} files")

        for line in lines:
            chunk.append(line)
            if len(chunk) >= self.batch_size:
                flush()
                chunk = []
        if chunk:
            flush()
        report.seconds = time.monotonic() - started
        return report
