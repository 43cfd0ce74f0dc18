"""The per-entity history a single event's features are computed from (transactions).

The features of one event need the customer's last 30 days and the terminal's delayed windows
(features/transactions.py). :class:`TransactionHistory` keeps those rows in memory, indexed by
customer and by terminal, and computes a request's features with the stream's incremental twin
(features/incremental.py ``feature_arrays``, what ``compute_features`` runs) over *only* the rows of the request's customers
and terminals: a customer's windows see only that customer's rows and a terminal's only that
terminal's, so the numbers are those of the whole history, at the cost of a few hundred rows.

It is seeded from the batch feature table (its canonical columns: id, time, customer, terminal,
amount, label) for the features' lookback before the table's newest event, so it is as fresh as
the last ``features`` run; with ``learn`` every accepted event is folded in, so the next request
sees it (as the stream's state does). Labels are those the feature table held at that run.
"""
from __future__ import annotations

import datetime as dt
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from features.incremental import STATE_COLUMNS, US_PER_DAY, empty_state, feature_arrays
from features.transactions import lookback_days

_ENTITIES = ("customer_id", "terminal_id")
_DTYPES = {"transaction_id": object, "ts": np.int64, "customer_id": object, "terminal_id": object,
           "amount": np.float64, "label": np.float64}
_CANONICAL = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "label")


class TransactionHistory:
    """Accepted transactions by customer and terminal; ``features(batch)`` for new events.

    ``frame``: rows of :data:`features.incremental.STATE_COLUMNS`. ``complete_from_us``: the
    earliest event time whose features the history can give exactly (its oldest row + the
    lookback); an event before it is late. A batch is a mapping of those columns to numpy arrays.
    """

    id_column = "transaction_id"

    def __init__(self, frame: Optional[pd.DataFrame] = None, *, windows_days: Sequence[int] = (1, 7, 30),
                 delay_days: int = 7, complete_from_us: Optional[int] = None):
        self.windows_days = tuple(int(w) for w in windows_days)
        self.delay_days = int(delay_days)
        self.lookback_us = lookback_days(self.windows_days, self.delay_days) * US_PER_DAY
        frame = empty_state() if frame is None else frame[list(STATE_COLUMNS)].reset_index(drop=True)
        self._cols = {c: np.empty(0, _DTYPES[c]) for c in STATE_COLUMNS}
        self._codes: dict[str, np.ndarray] = {key: np.empty(0, np.int64) for key in _ENTITIES}
        self._code_of: dict[str, dict] = {key: {} for key in _ENTITIES}
        self._rows_of: dict[str, list[list[int]]] = {key: [] for key in _ENTITIES}
        self._ids: set = set()
        self.newest_us: Optional[int] = None
        self.complete_from_us = complete_from_us
        self.add({c: frame[c].to_numpy() for c in STATE_COLUMNS})
        if complete_from_us is None and len(self):
            self.complete_from_us = int(self._cols["ts"].min()) + self.lookback_us

    def __len__(self) -> int:
        return len(self._cols["ts"])

    def known(self, ids: Sequence[str]) -> np.ndarray:
        """Mask of ``ids`` already in the history."""
        return np.fromiter((i in self._ids for i in ids), bool, len(ids))

    def _codes_for(self, key: str, values: Sequence) -> np.ndarray:
        """The codes of ``values`` (a value not in the history gets a new code, not remembered)."""
        known, fresh = self._code_of[key], {}
        out = np.empty(len(values), np.int64)
        for i, value in enumerate(values):
            code = known.get(value)
            if code is None:
                code = fresh.setdefault(value, len(known) + len(fresh))
            out[i] = code
        return out

    def rows_of(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Positions of the history rows of the batch's customers and terminals (the only rows
        their windows see), sorted.
        """
        rows: list[int] = []
        for key in _ENTITIES:
            codes, lists = self._code_of[key], self._rows_of[key]
            for value in set(batch[key].tolist()):
                code = codes.get(value)
                if code is not None:
                    rows += lists[code]
        if not rows:
            return np.empty(0, np.int64)
        return np.unique(np.array(rows, np.int64))

    def features(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's feature columns (and ``unix_day``), as the batch job computes them."""
        rows = self.rows_of(batch)
        n = len(rows)
        both = {c: np.concatenate([self._cols[c].take(rows), np.asarray(batch[c], _DTYPES[c])])
                for c in ("ts", "amount", "label")}
        codes = {key: np.concatenate([self._codes[key].take(rows), self._codes_for(key, batch[key].tolist())])
                 for key in _ENTITIES}
        return feature_arrays(both["ts"], both["amount"], both["label"], codes["customer_id"], codes["terminal_id"],
                              np.arange(n, n + len(batch["ts"])), windows_days=self.windows_days,
                              delay_days=self.delay_days)

    def add(self, batch: Mapping[str, np.ndarray]) -> None:
        """Fold accepted events (a mapping of ``STATE_COLUMNS`` to arrays) in."""
        size = len(batch["ts"])
        if not size:
            return
        start = len(self)
        for c in STATE_COLUMNS:
            self._cols[c] = np.concatenate([self._cols[c], np.asarray(batch[c], _DTYPES[c])])
        for key in _ENTITIES:
            codes, lists = self._code_of[key], self._rows_of[key]
            new = np.empty(size, np.int64)
            for i, value in enumerate(np.asarray(batch[key]).tolist()):
                code = codes.get(value)
                if code is None:
                    code = codes[value] = len(lists)
                    lists.append([])
                lists[code].append(start + i)
                new[i] = code
            self._codes[key] = np.concatenate([self._codes[key], new])
        self._ids.update(np.asarray(batch["transaction_id"]).tolist())
        newest = int(np.max(batch["ts"]))
        self.newest_us = newest if self.newest_us is None else max(self.newest_us, newest)
        if self.complete_from_us is None:
            self.complete_from_us = int(np.min(batch["ts"]))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({c: self._cols[c] for c in STATE_COLUMNS})


def state_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Canonical transaction rows (``event_time`` a timestamp, ``label`` nullable) as state rows."""
    times = pd.to_datetime(table["event_time"], utc=True).dt.tz_convert(None).to_numpy("datetime64[us]")
    return pd.DataFrame({
        "transaction_id": table["transaction_id"].astype(object).to_numpy(),
        "ts": times.view(np.int64),
        "customer_id": table["customer_id"].astype(object).to_numpy(),
        "terminal_id": table["terminal_id"].astype(object).to_numpy(),
        "amount": table["amount"].to_numpy(np.float64),
        "label": pd.to_numeric(table["label"], errors="coerce").to_numpy(np.float64, na_value=np.nan),
    })


def read_feature_rows(path: str, fmt: str, since: Optional[dt.date] = None, storage_options=None) -> pd.DataFrame:
    """The canonical columns of the feature table at ``path`` (Delta through delta-rs, or Parquet
    through pyarrow: no Spark), of the dates from ``since`` on (all when None).
    """
    import pyarrow.dataset as ds

    columns = list(_CANONICAL)
    if fmt == "delta":
        from deltalake import DeltaTable

        table = DeltaTable(path, storage_options=storage_options)
        data = table.to_pyarrow_dataset().to_table(
            columns=columns, filter=(ds.field("date") >= since) if since is not None else None)
    else:
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
        data = dataset.to_table(columns=columns, filter=(ds.field("date") >= since) if since else None)
    return data.to_pandas()


def history_from_features(path: str, fmt: str, *, windows_days: Sequence[int], delay_days: int,
                          days: Optional[int] = None, storage_options=None) -> TransactionHistory:
    """A :class:`TransactionHistory` from the feature table's last ``days`` (default: the lookback)
    before its newest date, so the newest day's events and anything after get exact features.

    When those days reach back to the table's first date the history is complete from its first
    event (nothing earlier exists for the batch job either).
    """
    lookback = lookback_days(windows_days, delay_days)
    days = int(days or lookback)
    oldest, newest = _date_range(path, fmt, storage_options)
    since = None if newest is None else newest - dt.timedelta(days=days)
    if since is not None and since <= oldest:
        since = None
    rows = state_frame(read_feature_rows(path, fmt, since, storage_options))
    if since is None:
        complete = int(rows["ts"].min()) if len(rows) else None
    else:
        complete = int(np.datetime64(since, "us").astype(np.int64)) + lookback * US_PER_DAY
    return TransactionHistory(rows, windows_days=windows_days, delay_days=delay_days, complete_from_us=complete)


def _date_range(path: str, fmt: str, storage_options=None) -> tuple[Optional[dt.date], Optional[dt.date]]:
    """(first, last) date of the table's ``date`` column, (None, None) when it is empty."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if fmt == "delta":
        from deltalake import DeltaTable

        dataset = DeltaTable(path, storage_options=storage_options).to_pyarrow_dataset()
    else:
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
    dates = dataset.to_table(columns=["date"]).column("date")
    if not len(dates):
        return None, None
    low, high = (v.as_py() for v in (pc.min(dates), pc.max(dates)))
    as_date = lambda v: v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v))  # noqa: E731
    return as_date(low), as_date(high)


def save_history(history: TransactionHistory, path: str) -> None:
    """The history as a gzipped CSV (what the Lambda bundle carries; pandas reads it without pyarrow)."""
    frame = history.frame()
    frame.attrs = {}
    meta = {"complete_from_us": history.complete_from_us, "windows_days": list(history.windows_days),
            "delay_days": history.delay_days}
    import json

    with open(path + ".json", "w", encoding="utf-8") as out:
        json.dump(meta, out)
    frame.to_csv(path, index=False, compression="gzip")


def load_history(path: str) -> TransactionHistory:
    import json

    with open(path + ".json", encoding="utf-8") as f:
        meta = json.load(f)
    frame = pd.read_csv(path, compression="gzip", dtype={"transaction_id": str, "customer_id": str,
                                                          "terminal_id": str, "ts": np.int64,
                                                          "amount": np.float64, "label": np.float64},
                        keep_default_na=False, na_values={"label": [""]})
    for c in ("transaction_id", "customer_id", "terminal_id"):
        frame[c] = frame[c].astype(object)
    return TransactionHistory(frame, windows_days=meta["windows_days"], delay_days=meta["delay_days"],
                              complete_from_us=meta["complete_from_us"])
