"""The Handbook-style transaction generator: schema, determinism, scenarios and volumes."""
import datetime as dt
import math

import numpy as np
import pytest

from synthetic.transactions import OUTPUT_COLUMNS, generate_transactions, profile_tables

SMALL = dict(customers=200, terminals=400, days=30, start_date="2018-04-01", radius=5.0, seed=0)


@pytest.fixture(scope="module")
def small(spark):
    df = generate_transactions(spark, partitions=2, **SMALL)
    return df, df.collect()


def test_schema_is_exactly_the_contract(small):
    df, _ = small
    assert tuple(df.columns) == OUTPUT_COLUMNS
    assert [f.dataType.simpleString() for f in df.schema.fields] == [
        "bigint", "timestamp", "bigint", "bigint", "double", "int", "int"]


def test_same_seed_gives_the_same_rows_whatever_the_partitioning(spark, small):
    _, rows = small
    again = generate_transactions(spark, partitions=5, **SMALL).collect()
    assert sorted(again) == sorted(rows)


def test_another_seed_gives_other_rows(spark):
    config = dict(SMALL, customers=30, terminals=60, days=5)
    first = generate_transactions(spark, partitions=2, **config).collect()
    other = generate_transactions(spark, partitions=2, **dict(config, seed=1)).collect()
    assert first and other and first != other


def test_transaction_ids_are_dense_and_follow_event_time(small):
    _, rows = small
    ordered = sorted(rows, key=lambda r: r.transaction_id)
    assert [r.transaction_id for r in ordered] == list(range(len(rows)))
    times = [r.event_time for r in ordered]
    assert times == sorted(times)
    assert times[0] >= dt.datetime(2018, 4, 1) and times[-1] < dt.datetime(2018, 5, 1)


def test_every_scenario_produces_frauds_with_its_rule(small):
    _, rows = small
    by_scenario = {s: [r for r in rows if r.fraud_scenario == s] for s in range(4)}
    assert all(by_scenario[s] for s in (1, 2, 3))
    assert all(r.label == (r.fraud_scenario > 0) for r in rows)
    assert all(r.amount > 220 for r in by_scenario[1])
    assert all(r.amount <= 220 for r in by_scenario[0])
    assert min(r.amount for r in rows) >= 0
    # scenario 2 is a property of (terminal, day): a compromised terminal is compromised for everyone
    compromised = {(r.terminal_id, r.event_time.date()) for r in by_scenario[2]}
    assert not [r for r in by_scenario[0] if (r.terminal_id, r.event_time.date()) in compromised]
    # scenario 3 multiplies amounts by 5: they are larger than the customer's usual ones
    assert np.median([r.amount for r in by_scenario[3]]) > 2 * np.median([r.amount for r in by_scenario[0]])
    share = sum(r.label for r in rows) / len(rows)
    assert 0.02 < share < 0.30


def test_volume_matches_the_poisson_rates(small):
    _, rows = small
    profiles, reachable = profile_tables(SMALL["customers"], SMALL["terminals"], SMALL["radius"], SMALL["seed"])
    # customers with no terminal within the radius make no transaction, as in the Handbook
    rates = np.array([rate for rate, terms in zip(profiles["mean_nb_tx_per_day"], reachable, strict=True) if terms])
    assert 0 < len(rates) < SMALL["customers"]
    # a time of day is kept when 1 <= N(43200, 20000) < 86400 (int() truncation, as the Handbook)
    cdf = lambda x: 0.5 * (1 + math.erf((x - 43200) / (20000 * math.sqrt(2))))  # noqa: E731
    expected = rates.sum() * SMALL["days"] * (cdf(86400) - cdf(1))
    assert abs(len(rows) - expected) < 4 * math.sqrt(expected)
