"""One writer per table on S3: a lock object that S3 itself arbitrates.

Delta's default S3 log store cannot make a commit atomic (S3 has no rename and the store does
not use conditional writes), so two writers on one ``s3a://`` table can both report success and
lose a commit. Until the DynamoDB log store is on (README "Nightly scoring"), a job that writes
a table on S3 holds the table's lock object: S3's conditional ``PutObject`` with
``If-None-Match: *`` creates it only if it is absent, so of two runs at once exactly one gets it,
and the other fails at once, before it has written anything.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from typing import Callable
from urllib.parse import urlparse

LOCK_NAME = "_writer.lock"  # "_" names are hidden from Spark's and Delta's readers and from VACUUM


class LockHeld(RuntimeError):
    """Another run holds the table's lock; the message names the lock object and its holder."""


def lock_location(uri: str) -> tuple[str, str] | None:
    """``(bucket, key)`` of the lock object of the table at ``uri``, or None when ``uri`` is not on
    S3 (local tables: Delta's commits there are atomic for any number of writers).
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a", "s3n"):
        return None
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/{LOCK_NAME}" if prefix else LOCK_NAME


@contextlib.contextmanager
def writer_lock(uri: str, s3_client: Callable[[], object], *, job: str):
    """Hold the writer lock of the table at ``uri`` while in the block (nothing for a table not on
    S3). ``s3_client``: makes a boto3 S3 client (called only for S3 tables).

    The lock is the object ``<table>/_writer.lock``, created with ``If-None-Match: *`` and
    holding who took it (``job``, host, process id, time); it is deleted when the block ends,
    failed or not. If it exists, :class:`LockHeld` names its holder: another run is writing the
    table. A run killed while holding it leaves it behind; the next run then fails the same way,
    and the object is deleted by hand once that run is known to be dead.
    """
    location = lock_location(uri)
    if location is None:
        yield
        return
    from botocore.exceptions import ClientError

    bucket, key = location
    s3 = s3_client()
    holder = {"job": job, "host": socket.gethostname(), "pid": os.getpid(),
              "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(holder).encode(), IfNoneMatch="*")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412",
                                                             "ConditionalRequestConflict"):
            raise
        raise LockHeld(f"another run is writing {uri}: its lock s3://{bucket}/{key} is held by "
                       f"{_holder(s3, bucket, key)}; on S3 a table takes one writer at a time (delete the lock "
                       "object only if that run is dead)") from None
    try:
        yield
    finally:
        s3.delete_object(Bucket=bucket, Key=key)


def _holder(s3, bucket: str, key: str) -> str:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except Exception:  # gone in between, or unreadable: the lock was held all the same
        return "a run that has just finished"
