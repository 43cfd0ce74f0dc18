"""The scoring API's per-entity history and the Lambda event parsing (numpy only, no Spark)."""
import base64

import numpy as np
import pandas as pd
import pytest

from features.incremental import STATE_COLUMNS, US_PER_DAY, compute_features
from serving.history import TransactionHistory
from serving.lambda_handler import request_of


def transactions(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 60 * US_PER_DAY, n)) + 1_500_000_000 * 1_000_000
    ts[10:14] = ts[10]                                     # ties at one instant
    label = rng.choice([0.0, 1.0, np.nan], n, p=[0.8, 0.1, 0.1])
    return pd.DataFrame({"transaction_id": [f"t{i}" for i in range(n)], "ts": ts,
                         "customer_id": [f"c{i}" for i in rng.integers(0, 15, n)],
                         "terminal_id": [f"k{i}" for i in rng.integers(0, 25, n)],
                         "amount": rng.gamma(2.0, 40.0, n).round(2), "label": label})


def as_batch(frame: pd.DataFrame) -> dict:
    return {c: frame[c].to_numpy() for c in STATE_COLUMNS}


def test_the_history_gives_the_features_the_incremental_twin_gives_over_every_row():
    data = transactions(2000)
    history, batch = data.iloc[:-30], data.iloc[-30:]
    # a new customer and a new terminal, not in the history
    batch = batch.assign(customer_id=batch["customer_id"].where(np.arange(30) != 5, "new-customer"),
                         terminal_id=batch["terminal_id"].where(np.arange(30) != 7, "new-terminal"))
    expected = compute_features(history, batch)
    got = TransactionHistory(history).features(as_batch(batch))
    assert list(got) == list(expected.columns)
    for name in expected.columns:
        np.testing.assert_array_equal(got[name], expected[name].to_numpy(), err_msg=name)


def test_added_events_are_seen_by_the_next_request_and_known_by_id():
    data = transactions(600)
    first, second, third = data.iloc[:500], data.iloc[500:550], data.iloc[550:]
    history = TransactionHistory(first)
    history.add(as_batch(second))
    got = history.features(as_batch(third))
    expected = compute_features(pd.concat([first, second]), third)
    np.testing.assert_array_equal(got["customer_nb_tx_30d"], expected["customer_nb_tx_30d"].to_numpy())
    np.testing.assert_array_equal(got["terminal_nb_tx_7d"], expected["terminal_nb_tx_7d"].to_numpy())
    assert history.known(["t0", "t549", "t550"]).tolist() == [True, True, False]
    assert len(history) == 550 and history.newest_us == int(second["ts"].max())
    assert history.complete_from_us == int(first["ts"].min()) + 37 * US_PER_DAY   # the lookback of (1,7,30), delay 7


@pytest.mark.parametrize("event, expected", [
    ({"httpMethod": "POST", "path": "/v1/score", "body": '{"a": 1}', "isBase64Encoded": False,
      "requestContext": {"stage": "prod"}}, ("POST", "/v1/score", b'{"a": 1}', "1.0")),
    ({"httpMethod": "GET", "path": "/prod/health/", "body": None, "requestContext": {"stage": "prod"}},
     ("GET", "/health", b"", "1.0")),
    ({"version": "2.0", "rawPath": "/prod/v1/score", "body": base64.b64encode(b"[1]").decode(),
      "isBase64Encoded": True, "requestContext": {"http": {"method": "post"}, "stage": "prod"}},
     ("POST", "/v1/score", b"[1]", "2.0")),
    ({"version": "2.0", "rawPath": "/v1/models", "requestContext": {"http": {"method": "GET"}, "stage": "$default"}},
     ("GET", "/v1/models", b"", "2.0")),
])
def test_lambda_events_of_both_payload_formats_give_method_path_and_body(event, expected):
    assert request_of(event) == expected
