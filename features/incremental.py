"""The transaction features of :mod:`features.transactions`, computed incrementally for the stream.

The batch definition (Spark window functions over every transaction) stays the reference; this
module computes the same numbers for a micro-batch from a bounded per-entity history kept in
driver memory, so a micro-batch costs a sort of (history + batch) keys and a scan of each batch
row's windows, not a Spark job over the whole history. ``tests/unit/test_incremental_features.py``
checks it against the Spark definition on random data with ties, null labels and several
batches; the stream's parity test checks it end to end.

How each window is evaluated, per batch row with event time ``t`` (epoch microseconds) over the
history rows and the batch rows together, exactly as the Spark range frames do:

* customer windows ``(t - w days, t]`` (peers at ``t`` included): count and the sum of amounts,
  added in time order as Spark's sliding frame adds them;
* ``amount_vs_customer_avg_30d`` from the 30-day count and sum, minus the row itself;
* ``seconds_since_prev_tx``: the customer's latest time in ``[t - 30 days, t)``;
* terminal windows ``(t - (delay + w) days, t - delay days]``: count, labelled count and frauds.
* ``log_amount`` and ``customer_log_avg_amount_{w}d``: ``log1p`` of the amount and of the
  customer's average (numpy's and Java's ``log1p`` may differ in the last bit; the tests allow 1e-12).

Labels may be null (unknown): they count in ``terminal_nb_tx`` but not in the risk, as in Spark.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from features.transactions import (AMOUNT_HISTORY_DAYS, DEFAULT_DELAY_DAYS, DEFAULT_WINDOWS_DAYS,
                                   MAX_SECONDS_SINCE_PREV_TX, NIGHT_LAST_HOUR, _check_parameters,
                                   lookback_days, transaction_feature_columns)
from features.jit import njit as _njit

US_PER_SECOND = 1_000_000
US_PER_DAY = 86400 * US_PER_SECOND

#: The columns a state frame holds (the canonical event, time as epoch microseconds).
STATE_COLUMNS = ("transaction_id", "ts", "customer_id", "terminal_id", "amount", "label")


@_njit
def _customer_kernel(ts, amount, query_pos, g0, g1, windows_us, history_us, prev_cap_us):
    """Per query row (a position in the customer/time order): window counts, sums and the previous time.

    ``ts``/``amount`` are sorted by (customer, ts); the query's customer occupies positions
    ``g0[q]:g1[q]``. Sums add the frame's amounts in time order, as Spark's sliding frame does.
    Returns (counts[q, w], sums[q, w], count_30d, sum_30d, previous time or -1).
    """
    nq = query_pos.shape[0]
    nw = windows_us.shape[0]
    counts = np.zeros((nq, nw), np.int64)
    sums = np.zeros((nq, nw))
    hist_count = np.zeros(nq, np.int64)
    hist_sum = np.zeros(nq)
    previous = np.full(nq, -1, np.int64)
    for q in range(nq):
        a = g0[q]
        b = g1[q]
        seg = ts[a:b]
        t = ts[query_pos[q]]
        end = a + np.searchsorted(seg, t, side="right")     # exclusive: peers at t included
        first = a + np.searchsorted(seg, t, side="left")    # first row at t
        if first > a and ts[first - 1] >= t - prev_cap_us:
            previous[q] = ts[first - 1]
        for w in range(nw + 1):
            span = history_us if w == nw else windows_us[w]
            k = a + np.searchsorted(seg, t - span, side="right")   # first row with ts > t - span
            s = 0.0
            for i in range(k, end):
                s += amount[i]
            if w == nw:
                hist_count[q] = end - k
                hist_sum[q] = s
            else:
                counts[q, w] = end - k
                sums[q, w] = s
    return counts, sums, hist_count, hist_sum, previous


@_njit
def _terminal_kernel(ts, label, query_ts, g0, g1, windows_us, delay_us):
    """Per query row: transactions, labelled ones and frauds in (t - delay - w, t - delay]."""
    nq = query_ts.shape[0]
    nw = windows_us.shape[0]
    counts = np.zeros((nq, nw), np.int64)
    labelled = np.zeros((nq, nw), np.int64)
    frauds = np.zeros((nq, nw), np.int64)
    for q in range(nq):
        a = g0[q]
        seg = ts[a:g1[q]]
        hi = query_ts[q] - delay_us
        end = a + np.searchsorted(seg, hi, side="right")
        for w in range(nw):
            k = a + np.searchsorted(seg, hi - windows_us[w], side="right")
            lab = 0
            fr = 0
            for i in range(k, end):
                if label[i] >= 0:
                    lab += 1
                    fr += label[i]
            counts[q, w] = end - k
            labelled[q, w] = lab
            frauds[q, w] = fr
    return counts, labelled, frauds


def _grouped(codes: np.ndarray, ts: np.ndarray, query_rows: np.ndarray):
    """(order, ts sorted by (key, ts), query positions, group start, group end) for the query rows.

    ``codes``: the rows' entity as integers (equal entity, equal code).
    """
    order = np.lexsort((ts, codes))
    sorted_codes = codes[order]
    n = len(order)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = sorted_codes[1:] != sorted_codes[:-1]
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], n)
    group_of = np.cumsum(new_group) - 1
    rank = np.empty_like(order)
    rank[order] = np.arange(n)
    pos = rank[query_rows]
    return order, ts[order], pos, starts[group_of[pos]], ends[group_of[pos]]


def empty_state() -> pd.DataFrame:
    """A state frame with no rows and the right dtypes."""
    return pd.DataFrame({"transaction_id": pd.Series([], dtype=object), "ts": pd.Series([], dtype=np.int64),
                         "customer_id": pd.Series([], dtype=object), "terminal_id": pd.Series([], dtype=object),
                         "amount": pd.Series([], dtype=np.float64), "label": pd.Series([], dtype=np.float64)})


def compute_features(history: pd.DataFrame, batch: pd.DataFrame, *,
                     windows_days: Sequence[int] = DEFAULT_WINDOWS_DAYS,
                     delay_days: int = DEFAULT_DELAY_DAYS) -> pd.DataFrame:
    """Feature columns (and ``unix_day``) for the ``batch`` rows, seeing ``history`` and the batch.

    Both frames have :data:`STATE_COLUMNS` (``label`` float, NaN = unknown). Returns a frame
    aligned with ``batch`` (same index order) holding ``unix_day`` and every column of
    :func:`features.transactions.transaction_feature_columns` except ``amount``.
    """
    windows = _check_parameters(windows_days, delay_days)
    nb = len(batch)
    both = pd.concat([history[list(STATE_COLUMNS)], batch[list(STATE_COLUMNS)]], ignore_index=True)
    out = feature_arrays(both["ts"].to_numpy(np.int64), both["amount"].to_numpy(np.float64),
                         both["label"].to_numpy(np.float64),
                         pd.factorize(both["customer_id"])[0].astype(np.int64),
                         pd.factorize(both["terminal_id"])[0].astype(np.int64),
                         np.arange(len(history), len(both)), windows_days=windows, delay_days=delay_days)
    return pd.DataFrame(out, index=batch.index[:nb])


def feature_arrays(ts: np.ndarray, amount: np.ndarray, label_f: np.ndarray, customer: np.ndarray,
                   terminal: np.ndarray, batch_rows: np.ndarray, *,
                   windows_days: Sequence[int] = DEFAULT_WINDOWS_DAYS,
                   delay_days: int = DEFAULT_DELAY_DAYS) -> dict[str, np.ndarray]:
    """:func:`compute_features` on arrays: the rows (history and batch together) as event time
    (epoch microseconds, int64), amount, label (float, NaN = unknown) and customer / terminal
    codes (int64, equal entity equal code); the features of the rows at ``batch_rows``, by name
    (``unix_day`` first, then the feature columns but ``amount``), as numpy arrays.

    The scoring API calls it directly (no frames: a request is one or a few events).
    """
    windows = _check_parameters(windows_days, delay_days)
    label = np.where(np.isnan(label_f), -1, label_f).astype(np.int64)
    windows_us = np.array([w * US_PER_DAY for w in windows], np.int64)
    out: dict[str, np.ndarray] = {}

    b_ts = ts[batch_rows]
    seconds = np.floor_divide(b_ts, US_PER_SECOND)
    unix_day = np.floor_divide(seconds, 86400)
    out["unix_day"] = unix_day.astype(np.int32)
    out["is_weekend"] = (np.mod(unix_day + 3, 7) >= 5).astype(np.int32)
    out["is_night"] = (np.floor_divide(np.mod(seconds, 86400), 3600) <= NIGHT_LAST_HOUR).astype(np.int32)

    order, ts_c, pos, g0, g1 = _grouped(customer, ts, batch_rows)
    counts, sums, h_count, h_sum, previous = _customer_kernel(
        ts_c, amount[order], pos, g0, g1, windows_us, np.int64(AMOUNT_HISTORY_DAYS * US_PER_DAY),
        np.int64(MAX_SECONDS_SINCE_PREV_TX * US_PER_SECOND))
    for j, w in enumerate(windows):
        out[f"customer_nb_tx_{w}d"] = counts[:, j].astype(np.int32)
        out[f"customer_avg_amount_{w}d"] = sums[:, j] / counts[:, j]

    order, ts_t, pos, g0, g1 = _grouped(terminal, ts, batch_rows)
    t_counts, t_labelled, t_frauds = _terminal_kernel(
        ts_t, label[order], b_ts, g0, g1, windows_us, np.int64(int(delay_days) * US_PER_DAY))
    for j, w in enumerate(windows):
        out[f"terminal_nb_tx_{w}d"] = t_counts[:, j].astype(np.int32)
        with np.errstate(invalid="ignore", divide="ignore"):
            risk = t_frauds[:, j] / t_labelled[:, j]
        out[f"terminal_risk_{w}d"] = np.where(t_labelled[:, j] > 0, risk, 0.0)

    b_amount = amount[batch_rows]
    others = h_count - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        others_mean = (h_sum - b_amount) / others
        ratio = b_amount / others_mean
    out["amount_vs_customer_avg_30d"] = np.where((others > 0) & (others_mean > 0), ratio, 1.0)
    out["seconds_since_prev_tx"] = np.where(previous >= 0, (b_ts - previous) / US_PER_SECOND,
                                            float(MAX_SECONDS_SINCE_PREV_TX))
    out["log_amount"] = np.log1p(b_amount)
    for w in windows:
        out[f"customer_log_avg_amount_{w}d"] = np.log1p(out[f"customer_avg_amount_{w}d"])
    names = ["unix_day"] + [c for c in transaction_feature_columns(windows) if c != "amount"]
    return {name: out[name] for name in names}


class TransactionState:
    """The accepted transactions of the last ``keep_seconds`` behind the newest event time seen.

    ``features(batch)`` computes the batch's features against the state without changing it;
    ``add(batch)`` folds a batch in and drops what fell out of the window. Everything is a pandas
    frame of :data:`STATE_COLUMNS` (the stream persists each batch's rows in its checkpoint and
    rebuilds this object from them after a restart).
    """

    def __init__(self, *, windows_days: Sequence[int] = DEFAULT_WINDOWS_DAYS,
                 delay_days: int = DEFAULT_DELAY_DAYS, keep_seconds: int | None = None,
                 frame: pd.DataFrame | None = None, max_seen_us: int | None = None):
        self.windows_days = _check_parameters(windows_days, delay_days)
        self.delay_days = int(delay_days)
        lookback = lookback_days(self.windows_days, self.delay_days) * 86400
        self.keep_seconds = int(keep_seconds if keep_seconds is not None else lookback)
        if self.keep_seconds < lookback:
            raise ValueError(f"the stream keeps {self.keep_seconds} s of history, the features need {lookback} s")
        self.frame = empty_state() if frame is None else frame[list(STATE_COLUMNS)].reset_index(drop=True)
        self.max_seen_us = max_seen_us

    def __len__(self) -> int:
        return len(self.frame)

    def seen_ids(self, ids: pd.Series) -> np.ndarray:
        """Mask of ``ids`` already in the state."""
        return ids.isin(self.frame["transaction_id"]).to_numpy()

    def features(self, batch: pd.DataFrame) -> pd.DataFrame:
        return compute_features(self.frame, batch, windows_days=self.windows_days, delay_days=self.delay_days)

    def add(self, batch: pd.DataFrame) -> None:
        """Fold ``batch`` in, then keep only the rows within ``keep_seconds`` of the newest time."""
        if len(batch):
            newest = int(batch["ts"].max())
            self.max_seen_us = newest if self.max_seen_us is None else max(self.max_seen_us, newest)
            self.frame = pd.concat([self.frame, batch[list(STATE_COLUMNS)]], ignore_index=True)
        self.prune()

    def cutoff_us(self) -> int | None:
        """Event times before this are out of every window (None before the first event)."""
        return None if self.max_seen_us is None else self.max_seen_us - self.keep_seconds * US_PER_SECOND

    def prune(self) -> None:
        """Drop the rows older than :meth:`cutoff_us`."""
        if self.max_seen_us is None or not len(self.frame):
            return
        cutoff = self.cutoff_us()
        keep = self.frame["ts"].to_numpy() >= cutoff
        if not keep.all():
            self.frame = self.frame[keep].reset_index(drop=True)


class TransactionStreamFeatures:
    """What the stream's micro-batch processor needs to run :class:`TransactionState` on Spark frames."""

    state_columns = STATE_COLUMNS
    #: the canonical columns the state is made of (the sink keeps them for a restart)
    source_columns = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "label")
    id_column = "transaction_id"

    def __init__(self, *, windows_days: Sequence[int] = DEFAULT_WINDOWS_DAYS,
                 delay_days: int = DEFAULT_DELAY_DAYS, keep_seconds: int | None = None):
        self.windows_days = _check_parameters(windows_days, delay_days)
        self.delay_days = int(delay_days)
        self.keep_seconds = keep_seconds
        self.new_state()  # fail now, not in the first micro-batch, when the history is too short

    def new_state(self) -> TransactionState:
        return TransactionState(windows_days=self.windows_days, delay_days=self.delay_days,
                                keep_seconds=self.keep_seconds)

    @staticmethod
    def to_state_columns() -> list:
        """Spark columns turning validated canonical events into :data:`STATE_COLUMNS`."""
        from pyspark.sql import functions as F

        return [F.col("transaction_id"), F.unix_micros("event_time").alias("ts"), F.col("customer_id"),
                F.col("terminal_id"), F.col("amount"), F.col("label").cast("double").alias("label")]

    def to_spark(self, spark, frame: pd.DataFrame):
        """The batch's events and features as the Spark frame the batch feature job would give.

        ``frame`` holds :data:`STATE_COLUMNS`, ``_arrival_us`` and the columns of
        :func:`compute_features`. Times travel as epoch microseconds (no time-zone conversion).
        """
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        names = [c for c in transaction_feature_columns(self.windows_days) if c != "amount"]
        fields = [T.StructField("transaction_id", T.StringType()), T.StructField("ts", T.LongType()),
                  T.StructField("customer_id", T.StringType()), T.StructField("terminal_id", T.StringType()),
                  T.StructField("amount", T.DoubleType()), T.StructField("label", T.DoubleType()),
                  T.StructField("_arrival_us", T.LongType()), T.StructField("unix_day", T.IntegerType())]
        integer = lambda c: "_nb_tx_" in c or c in ("is_weekend", "is_night")  # noqa: E731
        fields += [T.StructField(c, T.IntegerType() if integer(c) else T.DoubleType()) for c in names]
        df = _create(spark, frame, fields)
        label = F.when(~F.isnan("label"), F.col("label")).cast("int")
        return df.select(
            "transaction_id", F.timestamp_micros("ts").alias("event_time"), "customer_id", "terminal_id", "amount",
            label.alias("label"), F.date_from_unix_date("unix_day").alias("date"), *names,
            F.timestamp_micros("_arrival_us").alias("arrival_time"))


def _create(spark, frame: pd.DataFrame, fields: list):
    """``spark.createDataFrame`` through Arrow with an explicit schema.

    pandas 3 keeps strings in chunked Arrow arrays after filters and concatenations, which
    Spark 3.5's Arrow path cannot take (it silently falls back to a slow row-by-row path), so
    string columns go over as plain Python objects.
    """
    from pyspark.sql import types as T

    data = frame[[f.name for f in fields]].copy()
    for f in fields:
        if isinstance(f.dataType, T.StringType):
            data[f.name] = data[f.name].astype(object)
    return spark.createDataFrame(data, T.StructType(fields))
