"""The stream's incremental transaction features equal the batch (Spark window) definition."""
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features.incremental import US_PER_SECOND, TransactionState, compute_features, empty_state
from features.transactions import build_transaction_features, transaction_feature_columns

START = dt.datetime(2026, 1, 1)


def random_transactions(n, seed):
    """n transactions over ~70 days: few customers and terminals, shared timestamps, null labels."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, 70 * 86400, n))
    seconds[10:20] = seconds[10]            # peers: ten transactions at one instant
    seconds[n // 2:n // 2 + 3] = seconds[n // 2]
    labels = rng.choice([0.0, 1.0, np.nan], size=n, p=[0.75, 0.15, 0.10])
    return pd.DataFrame({
        "transaction_id": [f"t{i:05d}" for i in range(n)],
        "ts": (int(START.replace(tzinfo=dt.timezone.utc).timestamp()) + seconds) * US_PER_SECOND
        + rng.integers(0, 1000, n) * (rng.random(n) < 0.5),
        "customer_id": rng.choice([f"c{i}" for i in range(7)], n),
        "terminal_id": rng.choice([f"k{i}" for i in range(5)], n),
        "amount": np.round(rng.lognormal(3.0, 1.0, n), 2),
        "label": labels,
    })


def spark_features(spark, frame):
    schema = T.StructType([T.StructField("transaction_id", T.StringType()), T.StructField("ts", T.LongType()),
                           T.StructField("customer_id", T.StringType()), T.StructField("terminal_id", T.StringType()),
                           T.StructField("amount", T.DoubleType()), T.StructField("label", T.DoubleType())])
    rows = [(r.transaction_id, int(r.ts), r.customer_id, r.terminal_id, float(r.amount),
             None if math.isnan(r.label) else r.label) for r in frame.itertuples()]
    df = spark.createDataFrame(rows, schema).select(
        "transaction_id", F.timestamp_micros("ts").alias("event_time"), "customer_id", "terminal_id", "amount",
        F.col("label").cast("int").alias("label"))
    out = build_transaction_features(df).toPandas()
    return out.set_index("transaction_id")


def assert_close(ours, theirs, ids, columns):
    bad = []
    for tid in ids:
        for col in columns:
            a, b = ours.loc[tid, col], theirs.loc[tid, col]
            if not math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12):
                bad.append((tid, col, a, b))
    assert not bad, bad[:10]


def test_incremental_features_equal_the_spark_definition_batch_after_batch(spark):
    data = random_transactions(600, seed=3)
    expected = spark_features(spark, data)
    columns = [c for c in transaction_feature_columns() if c != "amount"]
    state = TransactionState()
    checked = 0
    for part in np.array_split(np.arange(len(data)), 5):    # 5 micro-batches in time order
        batch = data.iloc[part].reset_index(drop=True)
        got = state.features(batch)
        got.index = batch["transaction_id"]
        assert_close(got, expected, batch["transaction_id"], columns)
        days = pd.to_datetime(got["unix_day"], unit="D").dt.date
        assert list(days) == list(expected.loc[batch["transaction_id"], "date"])
        state.add(batch)
        checked += len(batch)
    assert checked == len(data)
    # the state keeps the lookback behind the newest event only (37 days of 70)
    assert 0 < len(state) < len(data)
    assert state.frame["ts"].min() >= state.max_seen_us - state.keep_seconds * US_PER_SECOND


def test_features_of_a_batch_do_not_depend_on_history_rows_outside_the_lookback(spark):
    data = random_transactions(300, seed=5)
    batch = data.iloc[-40:].reset_index(drop=True)
    full = compute_features(data.iloc[:-40], batch)
    cutoff = batch["ts"].min() - 37 * 86400 * US_PER_SECOND
    recent = data.iloc[:-40]
    trimmed = compute_features(recent[recent["ts"] >= cutoff], batch)
    pd.testing.assert_frame_equal(full, trimmed)


def test_the_state_refuses_a_history_shorter_than_the_features_need():
    with pytest.raises(ValueError, match="history"):
        TransactionState(keep_seconds=86400)


def test_seen_ids_and_an_empty_batch():
    state = TransactionState()
    assert len(compute_features(empty_state(), empty_state())) == 0
    data = random_transactions(20, seed=1)
    state.add(data)
    assert state.seen_ids(pd.Series(["t00003", "nope"])).tolist() == [True, False]


def test_is_night_is_utc_hours_zero_to_six_as_in_the_batch_features():
    """The Handbook's TX_DURING_NIGHT (hour <= 6), on both sides of each boundary and before 1970."""
    times = ["2026-01-01 23:59:59", "2026-01-02 00:00:00", "2026-01-02 05:59:59", "2026-01-02 06:00:00",
             "2026-01-02 06:59:59", "2026-01-02 07:00:00", "1969-12-31 06:30:00", "1969-12-31 07:00:00"]
    ts = [int(pd.Timestamp(t, tz="UTC").value // 1000) + 999_999 for t in times]
    batch = pd.DataFrame({"transaction_id": [f"t{i}" for i in range(len(ts))], "ts": ts,
                          "customer_id": "c", "terminal_id": "k", "amount": 1.0, "label": 0.0})
    out = compute_features(empty_state(), batch)
    assert out["is_night"].tolist() == [0, 1, 1, 1, 1, 0, 1, 0]
