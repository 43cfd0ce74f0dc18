"""The stream's driver-side fast path for clean transaction records; Spark judges everything else.

A micro-batch of the incremental engine ends up on the driver anyway, so its payloads are
collected once (one Arrow transfer of the raw text) and parsed here with Python's ``json``.
Only records that are *clean* in a strict sense are decoded here, and a clean record gets
exactly the values :func:`ingest.decode.decode_records` gives it; every other record (bad JSON,
a missing field, a number written as text, padding around an id, a time without a zone, an
oversized payload, ...) is *left over* and goes through the Spark decoder, which assigns the
reasons. The fast path never rejects anything, so dead letters and their reasons stay Spark's.

Clean, for a transaction record (source field names from ``schema.transactions.columns``):

* the payload is at most ``max_record_bytes`` bytes and is a JSON object (Spark's parser is not
  stricter than Python's on what both accept);
* the id, customer and terminal fields are non-empty JSON strings without surrounding white space
  (the validator trims, so padded ids are left over rather than trimmed twice);
* the event time is a JSON string ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` with ``Z`` or a ``+HH:MM`` /
  ``-HH:MM`` offset within 18 hours (an explicit zone, so the session time zone plays no part),
  at most 6 fraction digits, years 1900..2999;
* no run of 300 digits and at most 500 ``[``/``{`` in the payload (Jackson's limits on number
  length and nesting depth are Spark's to apply);
* the amount is a JSON number (not a boolean), finite and not negative;
* the label is absent, null, or the JSON integer 0 or 1;
* no ``timestamp_format`` is configured (a custom format is Spark's to apply).

``tests/unit/test_fastdecode.py`` decodes a mix of clean and tricky records both ways and checks
the fast path agrees with Spark on every record it accepts.
"""
from __future__ import annotations

import json
import math
import re

try:  # about 3x faster than the standard library on these records; same values (and stricter)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback
    _loads = json.loads
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

# offsets within +-18:00 (Spark's limit: beyond it the record is Spark's to reject)
_TIME = re.compile(r"^(19|2\d)\d\d-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-](0\d|1[0-7]):[0-5]\d|[+-]18:00)$")
# Spark's JSON parser (Jackson) refuses numbers longer than 1000 characters and nesting deeper than
# 1000; a payload near either limit is left over rather than judged here
_LONG_NUMBER = re.compile(r"\d{300}")
_MAX_OPENINGS = 500
_IDS = ("transaction_id", "customer_id", "terminal_id")


def decode_clean_transactions(payloads: Sequence, *, schema_conf: Mapping, max_record_bytes: int
                              ) -> tuple[pd.DataFrame, np.ndarray]:
    """(values of the clean records, boolean mask of the clean records) for ``payloads``.

    The frame has one row per clean record, in input order: ``transaction_id``, ``ts`` (epoch
    microseconds), ``customer_id``, ``terminal_id``, ``amount`` and ``label`` (float, NaN when
    unknown) - the incremental engine's state columns.
    """
    n = len(payloads)
    clean = np.zeros(n, bool)
    if schema_conf.get("timestamp_format"):
        return _empty(), clean
    cols = schema_conf["columns"]
    names = {k: cols.get(k) or "" for k in (*_IDS, "event_time", "amount", "label")}
    if not all(names[k] for k in (*_IDS, "event_time", "amount")):
        return _empty(), clean
    ids = {k: [] for k in _IDS}
    times, amounts, labels, rows = [], [], [], []
    loads = _loads
    keys = tuple(names[k] for k in (*_IDS, "event_time", "amount", "label"))
    for i, text in enumerate(payloads):
        if not clean_text(text, max_record_bytes):
            continue
        try:
            record = loads(text)
        except ValueError:
            continue
        values = clean_fields(record, keys)
        if values is None:
            continue
        clean[i] = True
        rows.append(i)
        for k, v in zip(_IDS, values[:3], strict=True):
            ids[k].append(v)
        times.append(values[3])
        amounts.append(values[4])
        labels.append(values[5])
    ts = _epoch_micros(times)
    frame = pd.DataFrame({
        "transaction_id": pd.Series(ids["transaction_id"], dtype=object),
        "ts": ts,
        "customer_id": pd.Series(ids["customer_id"], dtype=object),
        "terminal_id": pd.Series(ids["terminal_id"], dtype=object),
        "amount": np.asarray(amounts, np.float64),
        "label": np.asarray(labels, np.float64),
    })
    bad = ts == _NAT
    if bad.any():
        clean[np.asarray(rows)[bad]] = False
        frame = frame[~bad].reset_index(drop=True)
    return frame, clean


_NAT = np.iinfo(np.int64).min


def clean_text(text, max_record_bytes: int) -> bool:
    """Whether a payload may be clean at all: a non-empty str starting ``{``, within the byte
    limit, and far from Jackson's number-length and nesting limits (Spark's to apply).
    """
    if not isinstance(text, str) or not text or text[0] != "{":
        return False
    if len(text) > max_record_bytes // 4 and len(text.encode("utf-8")) > max_record_bytes:
        return False      # (a str of at most max_record_bytes // 4 characters is within the limit)
    return not (len(text) > 300 and (text.count("[") + text.count("{") > _MAX_OPENINGS
                                     or _LONG_NUMBER.search(text)))


def clean_fields(record, keys: Sequence[str]) -> tuple | None:
    """(id, customer, terminal, event time text, amount, label or NaN) of a parsed record that is
    clean (module docstring), else None. ``keys``: the source names of those six fields ("" for
    no label column). The one rule the stream's fast decoder and the scoring API apply.
    """
    if type(record) is not dict:
        return None
    key_id, key_customer, key_terminal, key_time, key_amount, key_label = keys
    tid, customer, terminal = record.get(key_id), record.get(key_customer), record.get(key_terminal)
    if not (_clean_id(tid) and _clean_id(customer) and _clean_id(terminal)):
        return None
    when = record.get(key_time)
    if type(when) is not str or not _TIME.match(when):
        return None
    amount = record.get(key_amount)
    if type(amount) is int:
        if not 0 <= amount < 2 ** 53:      # exactly a double; huge integers are Spark's to judge
            return None
    elif type(amount) is not float or not math.isfinite(amount) or amount < 0:
        return None
    label = record.get(key_label) if key_label else None
    if label is not None and (type(label) is not int or label not in (0, 1)):
        return None
    return tid, customer, terminal, when, float(amount), np.nan if label is None else float(label)


def _clean_id(value) -> bool:
    return type(value) is str and value != "" and value == value.strip()


def _epoch_micros(times: list) -> np.ndarray:
    """Epoch microseconds (int64; ``_NAT`` for an impossible date, left over to Spark) of ISO times
    that passed ``_TIME``. Times in UTC ("...Z") go through numpy's parser in one call; the others
    (and any batch numpy refuses) through pandas, which applies the offsets.
    """
    n = len(times)
    out = np.full(n, _NAT, np.int64)
    if not n:
        return out
    zulu = np.fromiter((t[-1] == "Z" for t in times), bool, n)
    if zulu.any():
        try:
            out[zulu] = np.array([t[:-1] for t, z in zip(times, zulu, strict=True) if z],
                                 dtype="datetime64[us]").view(np.int64)
            rest = ~zulu
        except ValueError:          # an impossible date somewhere: let pandas sort them out one by one
            rest = np.ones(n, bool)
    else:
        rest = np.ones(n, bool)
    if rest.any():
        parsed = pd.to_datetime(pd.Series([t for t, r in zip(times, rest, strict=True) if r], dtype=object),
                                format="ISO8601", utc=True, errors="coerce").dt.tz_convert(None)
        values = parsed.to_numpy("datetime64[us]").view(np.int64)   # NaT is int64 min
        out[rest] = values
    return out


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"transaction_id": pd.Series([], dtype=object), "ts": np.empty(0, np.int64),
                         "customer_id": pd.Series([], dtype=object), "terminal_id": pd.Series([], dtype=object),
                         "amount": np.empty(0), "label": np.empty(0)})
