"""runtime/delta's pure parts: what --as-of means, VACUUM's retention, Delta's interval properties."""
import datetime as dt

import pytest

from runtime.delta import SnapshotError, interval_hours, parse_as_of, retention_hours

UTC = dt.timezone.utc


def test_as_of_is_a_version_number_or_a_time_in_utc_unless_it_has_an_offset():
    assert parse_as_of("7") == 7 and parse_as_of(" 0 ") == 0
    assert parse_as_of("2026-01-31") == dt.datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_as_of("2026-01-31T08:30:00") == dt.datetime(2026, 1, 31, 8, 30, tzinfo=UTC)
    assert parse_as_of("2026-01-31 08:30:00Z") == dt.datetime(2026, 1, 31, 8, 30, tzinfo=UTC)
    assert parse_as_of("2026-01-31T10:30:00+02:00") == dt.datetime(2026, 1, 31, 8, 30, tzinfo=UTC)
    for bad in ("v3", "-1", "yesterday", "2026-02-30"):
        with pytest.raises(SnapshotError, match="--as-of must be a table version"):
            parse_as_of(bad)


def test_retention_keeps_the_oldest_kept_snapshot_plus_the_margin_and_never_less_than_the_minimum_in_whole_hours():
    now = dt.datetime(2026, 1, 31, 12, tzinfo=UTC)
    # nothing to keep: the minimum
    assert retention_hours(now, None, minimum=168, margin=24) == 168
    # a snapshot 10 days old: 240 h of age + 24 h margin
    assert retention_hours(now, now - dt.timedelta(days=10), minimum=168, margin=24) == 264
    # a young snapshot: the minimum wins
    assert retention_hours(now, now - dt.timedelta(hours=3), minimum=168, margin=24) == 168
    # minimum 0: age + margin, rounded up (Delta rounds a retention to the nearest hour: 10.4 h
    # would become 10 and delete files removed 10.2 h ago)
    assert retention_hours(now, now - dt.timedelta(minutes=30), minimum=0, margin=0) == 1
    assert retention_hours(now, now - dt.timedelta(hours=10, minutes=24), minimum=0, margin=0) == 11
    assert retention_hours(now, now - dt.timedelta(hours=10), minimum=0, margin=0) == 10
    assert retention_hours(now, now, minimum=0, margin=0) == 0
    # a snapshot from the future (clock skew): no negative age
    assert retention_hours(now, now + dt.timedelta(hours=1), minimum=0, margin=2) == 2


def test_delta_interval_properties_in_hours():
    assert interval_hours(None, 720.0) == 720.0
    assert interval_hours("interval 30 days", 0) == 720.0
    assert interval_hours("interval 1 week", 0) == 168.0
    assert interval_hours("INTERVAL 36 HOURS", 0) == 36.0
    assert interval_hours("90 minutes", 0) == 1.5
    with pytest.raises(SnapshotError, match="cannot read the Delta interval"):
        interval_hours("interval 1 fortnight", 0)
