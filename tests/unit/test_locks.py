"""runtime/locks.py: one writer per table on S3, arbitrated by S3's conditional put (moto enforces it)."""
import json

import boto3
import pytest
from moto import mock_aws

from runtime.locks import LockHeld, lock_location, writer_lock

BUCKET = "lake-bucket"


@pytest.fixture
def s3(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def keys(s3):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_the_lock_object_sits_in_the_table_folder_on_s3_only():
    assert lock_location("s3a://lake-bucket/lake/scores/telemetry/") == \
        ("lake-bucket", "lake/scores/telemetry/_writer.lock")
    assert lock_location("s3://lake-bucket") == ("lake-bucket", "_writer.lock")
    assert lock_location("/tmp/lake/scores") is None and lock_location("file:/tmp/lake/scores") is None


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(s3):
    table = f"s3a://{BUCKET}/lake/scores/transactions"
    with writer_lock(table, lambda: s3, job="score"):
        held = json.loads(s3.get_object(Bucket=BUCKET, Key="lake/scores/transactions/_writer.lock")["Body"].read())
        assert held["job"] == "score" and held["pid"] > 0
        with pytest.raises(LockHeld, match=f"another run is writing {table}: its lock "
                                           f"s3://{BUCKET}/lake/scores/transactions/_writer.lock is held by "):
            with writer_lock(table, lambda: s3, job="score"):
                pytest.fail("two writers held the lock")
        # another table has its own lock
        with writer_lock(f"s3a://{BUCKET}/lake/scores/telemetry", lambda: s3, job="score"):
            assert len(keys(s3)) == 2
    assert keys(s3) == []  # released: the next run takes it


def test_the_lock_is_released_when_the_write_fails(s3):
    table = f"s3a://{BUCKET}/scores"
    with pytest.raises(RuntimeError, match="write failed"):
        with writer_lock(table, lambda: s3, job="score"):
            raise RuntimeError("write failed")
    assert keys(s3) == []
    with writer_lock(table, lambda: s3, job="score"):
        assert keys(s3) == ["scores/_writer.lock"]


def test_a_local_table_needs_no_lock_and_no_client():
    def no_client():
        raise AssertionError("an S3 client was made for a local table")

    with writer_lock("/tmp/lake/scores", no_client, job="score"):
        pass
