"""The scoring API's frame-free decoder of a request's records (serving/service.py ``clean_events``)
agrees with the stream's fast decoder (ingest/fastdecode.py ``decode_clean_transactions``), which
tests/unit/test_fastdecode.py checks against Spark: same records clean, same values. No Spark.
"""
import json
import random

import numpy as np
import orjson
import pytest

from ingest.fastdecode import decode_clean_transactions
from serving.service import clean_events
from test_fastdecode import COLUMNS, SCHEMA, TRICKY, clean

NAMES = {k: COLUMNS.get(k) or "" for k in ("transaction_id", "customer_id", "terminal_id", "event_time", "amount",
                                           "label")}
STATE = ("transaction_id", "ts", "customer_id", "terminal_id", "amount", "label")


def parsed(payloads):
    """(records, payload texts) as the service holds them: parsed once, dumped back to text."""
    records = []
    for text in payloads:
        try:
            records.append(orjson.loads(text))
        except (orjson.JSONDecodeError, TypeError):
            continue
    return records, [orjson.dumps(r).decode("utf-8") for r in records]


def reference(texts, max_record_bytes):
    frame, ok = decode_clean_transactions(texts, schema_conf=SCHEMA, max_record_bytes=max_record_bytes)
    return frame, ok


def test_a_clean_request_decodes_to_the_stream_decoders_values():
    rng = random.Random(11)
    records, texts = parsed([clean(i, rng) for i in range(300)])
    frame, ok = reference(texts, 256)
    assert ok.all()                                    # the generator's records are all clean
    got = clean_events(records, texts, NAMES, 256)
    assert got is not None
    for c in STATE:
        np.testing.assert_array_equal(got[c], frame[c].to_numpy(), err_msg=c)
    assert got["ts"].dtype == np.int64 and got["amount"].dtype == np.float64
    # a hand-checked value: 2026-01-01T01:00:00+01:00 is midnight UTC
    one = {"transaction_id": "a", "event_time": "2026-01-01T01:00:00+01:00", "customer_id": "c", "terminal_id": "k",
           "amount": 5, "label": 1}
    got = clean_events([one], [json.dumps(one)], NAMES, 256)
    assert got["ts"].tolist() == [1_767_225_600_000_000] and got["amount"].tolist() == [5.0]
    assert got["label"].tolist() == [1.0]


def _json(text) -> bool:
    try:
        orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        return False       # refused as bad JSON before decoding
    return True


@pytest.mark.parametrize("text", [t for t in TRICKY if t and t.startswith("{") and _json(t)])
def test_a_record_the_stream_leaves_over_sends_the_request_to_the_stream_decoder(text):
    rng = random.Random(3)
    records, texts = parsed([clean(1, rng), text])
    assert len(records) == 2
    _, ok = reference(texts, 256)
    got = clean_events(records, texts, NAMES, 256)
    assert (got is not None) == bool(ok.all()), (text, ok)


def test_the_byte_limit_and_the_nesting_limit_are_the_stream_decoders():
    big = {"transaction_id": "t", "event_time": "2026-01-01T00:00:00Z", "customer_id": "c", "terminal_id": "k",
           "amount": 1, "pad": "é" * 100}
    text = json.dumps(big, ensure_ascii=False)
    assert clean_events([big], [text], NAMES, 150) is None       # 200+ bytes in UTF-8
    assert clean_events([big], [text], NAMES, 1000) is not None
    nested = dict(big, pad=[[1]] * 500)      # 502 openings: over the stream decoder's 500
    text = orjson.dumps(nested).decode()
    assert reference([text], 10_000)[1].tolist() == [False]
    assert clean_events([nested], [text], NAMES, 10_000) is None
