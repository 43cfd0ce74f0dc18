"""The exact reproduction of the Handbook's simulator against the numbers the Handbook prints.

Reference values come from the Handbook's chapter 3.2 notebook ("Transaction data simulator"):
the 5-customer / 5-terminal examples, customer 0's five days of transactions, and the reference
call's size, fraud counts and first / last transactions. The reference call takes about 10 s.
"""
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from synthetic import handbook as hs
from synthetic.transactions import OUTPUT_COLUMNS

# Chapter 3.2, generate_customer_profiles_table(5, random_state=0):
# x, y, mean_amount, std_amount, mean_nb_tx_per_day (printed with 6 decimals)
BOOK_CUSTOMERS = [
    (54.881350, 71.518937, 62.262521, 31.131260, 2.179533),
    (42.365480, 64.589411, 46.570785, 23.285393, 3.567092),
    (96.366276, 38.344152, 80.213879, 40.106939, 2.115580),
    (56.804456, 92.559664, 11.748426, 5.874213, 0.348517),
    (2.021840, 83.261985, 78.924891, 39.462446, 3.480049),
]
# generate_terminal_profiles_table(5, random_state=0)
BOOK_TERMINALS = [(54.881350, 71.518937), (60.276338, 54.488318), (42.365480, 64.589411),
                  (43.758721, 89.177300), (96.366276, 38.344152)]
BOOK_TERMINALS_WITHIN_50 = [[0, 1, 2, 3], [0, 1, 2, 3], [1, 4], [0, 1, 2, 3], [2, 3]]
# customer 0, 5 days from 2018-04-01: (TX_TIME_SECONDS, TERMINAL_ID, TX_AMOUNT)
BOOK_CUSTOMER_0 = [
    (26345, 3, 123.59), (68522, 3, 46.51), (64816, 0, 77.34), (141182, 2, 32.35), (137138, 3, 63.30),
    (143211, 3, 13.59), (118266, 2, 54.72), (159887, 3, 51.89), (216947, 2, 117.91), (204609, 1, 67.72),
    (206749, 1, 28.46), (228794, 2, 50.25), (200484, 1, 93.26), (263735, 0, 46.40), (293638, 2, 23.26),
    (404349, 1, 71.96), (373279, 2, 52.69),
]
# reference call: first and last transactions (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT)
BOOK_FIRST = [(0, "2018-04-01 00:00:31", 596, 3156, 57.16), (1, "2018-04-01 00:02:10", 4961, 3412, 81.51),
              (2, "2018-04-01 00:07:56", 2, 1365, 146.00), (3, "2018-04-01 00:09:29", 4128, 8737, 64.49),
              (4, "2018-04-01 00:10:34", 927, 9906, 50.99)]
BOOK_LAST = [(1754150, "2018-09-30 23:56:36", 161, 655, 54.24), (1754151, "2018-09-30 23:57:38", 4342, 6181, 1.23),
             (1754152, "2018-09-30 23:58:21", 618, 1502, 6.62), (1754153, "2018-09-30 23:59:52", 4056, 3067, 55.40),
             (1754154, "2018-09-30 23:59:57", 3542, 9849, 23.59)]


def _book_example():
    """The chapter's 5 customers and 5 terminals (both seeded 0) with radius 50."""
    customers = hs.customer_profiles(5, random_state=0)
    terminals = hs.terminal_profiles(5, random_state=0)
    return customers, terminals, hs.terminals_within_radius(customers, terminals, 50)


def test_profiles_are_the_books():
    """Customer and terminal profiles and the terminals within radius 50 printed in the chapter."""
    customers, terminals, within = _book_example()
    got = customers[["x_customer_id", "y_customer_id", "mean_amount", "std_amount", "mean_nb_tx_per_day"]]
    np.testing.assert_allclose(got.to_numpy(), BOOK_CUSTOMERS, atol=5e-7)
    np.testing.assert_allclose(terminals[["x_terminal_id", "y_terminal_id"]].to_numpy(), BOOK_TERMINALS, atol=5e-7)
    assert within == BOOK_TERMINALS_WITHIN_50


def test_vectorised_profiles_equal_one_draw_at_a_time():
    """The Handbook draws each profile's values in turn from the global legacy generator."""
    np.random.seed(0)
    expected = [[np.random.uniform(0, 100), np.random.uniform(0, 100), np.random.uniform(5, 100),
                 np.random.uniform(0, 4)] for _ in range(300)]
    got = hs.customer_profiles(300, random_state=0)
    assert (got[["x_customer_id", "y_customer_id", "mean_amount", "mean_nb_tx_per_day"]].to_numpy()
            == np.array(expected)).all()
    np.random.seed(1)
    expected = [[np.random.uniform(0, 100), np.random.uniform(0, 100)] for _ in range(300)]
    got = hs.terminal_profiles(300, random_state=1)
    assert (got[["x_terminal_id", "y_terminal_id"]].to_numpy() == np.array(expected)).all()


def test_first_customer_transactions_are_the_books():
    """Customer 0's 17 transactions over 5 days, and the 65 transactions of the 5 customers."""
    customers, _, within = _book_example()
    row = customers.iloc[0]
    seconds, terminals, amounts = hs.customer_transactions(
        0, row.mean_amount, row.std_amount, row.mean_nb_tx_per_day, within[0], nb_days=5)
    assert list(zip(seconds, terminals, np.round(amounts, 2).tolist(), strict=True)) == BOOK_CUSTOMER_0
    total = sum(len(hs.customer_transactions(i, r.mean_amount, r.std_amount, r.mean_nb_tx_per_day, within[i], 5)[0])
                for i, r in customers.iterrows())
    assert total == 65  # "a set of 65 transactions, with 5 customers, 5 terminals, and 5 days"


def _classic_numpy_argsort(values):
    """numpy's classic introsort argsort (the one pandas' sort_values ran for the Handbook)."""
    v, a = list(values), list(range(len(values)))

    def heapsort(lo, n):
        """numpy's ``aheapsort`` on ``a[lo:lo + n]`` (the introsort's depth-limit fallback)."""
        def sift(i, n, tmp):
            """Sift ``tmp`` down from 1-based heap position ``i`` of a heap of ``n`` items."""
            j = 2 * i
            while j <= n:
                if j < n and v[a[lo + j - 1]] < v[a[lo + j]]:
                    j += 1
                if v[tmp] < v[a[lo + j - 1]]:
                    a[lo + i - 1] = a[lo + j - 1]
                    i, j = j, 2 * j
                else:
                    break
            a[lo + i - 1] = tmp
        for top in range(n >> 1, 0, -1):
            sift(top, n, a[lo + top - 1])
        while n > 1:
            tmp = a[lo + n - 1]
            a[lo + n - 1] = a[lo]
            n -= 1
            sift(1, n, tmp)

    pl, pr, stack, depth = 0, len(a) - 1, [], 2 * (len(a).bit_length() - 1)
    while True:
        if depth < 0:
            heapsort(pl, pr - pl + 1)
        else:
            while pr - pl > 15:
                pm = pl + ((pr - pl) >> 1)
                if v[a[pm]] < v[a[pl]]:
                    a[pm], a[pl] = a[pl], a[pm]
                if v[a[pr]] < v[a[pm]]:
                    a[pr], a[pm] = a[pm], a[pr]
                if v[a[pm]] < v[a[pl]]:
                    a[pm], a[pl] = a[pl], a[pm]
                pivot, pi, pj = v[a[pm]], pl, pr - 1
                a[pm], a[pj] = a[pj], a[pm]
                while True:
                    pi += 1
                    while v[a[pi]] < pivot:
                        pi += 1
                    pj -= 1
                    while pivot < v[a[pj]]:
                        pj -= 1
                    if pi >= pj:
                        break
                    a[pi], a[pj] = a[pj], a[pi]
                a[pi], a[pr - 1] = a[pr - 1], a[pi]
                depth -= 1
                if pi - pl < pr - pi:
                    stack.append((pi + 1, pr, depth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, depth))
                    pl = pi + 1
            for i in range(pl + 1, pr + 1):
                item, j = a[i], i
                while j > pl and v[item] < v[a[j - 1]]:
                    a[j] = a[j - 1]
                    j -= 1
                a[j] = item
        if not stack:
            return np.array(a)
        pl, pr, depth = stack.pop()


@pytest.mark.parametrize("n", [17, 500, 4000])
def test_transaction_order_breaks_ties_like_the_handbooks_sort(n):
    """Many ties: the order of equal date-times is the unstable quicksort's, not a stable sort's."""
    seconds = np.random.default_rng(n).integers(0, n // 4 + 2, n)
    order = hs.handbook_sort_order(seconds)
    assert (order == _classic_numpy_argsort(seconds.tolist())).all()
    if n > 100:
        assert (order != np.argsort(seconds, kind="stable")).any()


def test_compromised_ids_are_pandas_sample():
    """Compromised terminals / customers are the positions ``Series.sample(n, random_state=day)`` picks."""
    ids = pd.Series(np.arange(1000))
    for day in (0, 1, 57):
        assert ids.sample(n=3, random_state=day).to_numpy().tolist() == hs.sample_ids(1000, 3, day).tolist()


@pytest.fixture(scope="module")
def small():
    """A small simulation (150 customers, 300 terminals, 60 days, radius 10)."""
    return hs.simulate(n_customers=150, n_terminals=300, nb_days=60, start_date="2018-04-01", r=10)


def test_small_run_is_deterministic_and_follows_the_scenarios(small):
    """Same output twice; ids follow time; labels follow the scenario rules."""
    again = hs.simulate(n_customers=150, n_terminals=300, nb_days=60, start_date="2018-04-01", r=10)
    pd.testing.assert_frame_equal(small.transactions, again.transactions)
    tx = small.transactions
    assert (tx["TRANSACTION_ID"].to_numpy() == np.arange(len(tx))).all()
    assert tx["TX_DATETIME"].is_monotonic_increasing
    assert ((tx["TX_FRAUD"] == 1) == (tx["TX_FRAUD_SCENARIO"] > 0)).all()
    assert (tx.loc[tx["TX_FRAUD_SCENARIO"] == 1, "TX_AMOUNT"] > 220).all()
    # scenario 2: every transaction on a terminal within 28 days of its compromise
    last_day = int(tx["TX_TIME_DAYS"].max())
    compromised = {(int(t), d) for day in range(last_day) for t in hs.sample_ids(300, 2, day)
                   for d in range(day, day + 28)}
    on_compromised = np.array([(t, d) in compromised for t, d in zip(tx["TERMINAL_ID"], tx["TX_TIME_DAYS"],
                                                                      strict=True)])
    assert (tx.loc[on_compromised, "TX_FRAUD"] == 1).all()
    assert (tx.loc[tx["TX_FRAUD_SCENARIO"] == 2].index.isin(np.flatnonzero(on_compromised))).all()
    assert set(small.new_frauds) == {1, 2, 3} and sum(small.new_frauds.values()) == tx["TX_FRAUD"].sum()
    assert small.new_frauds[3] > 0


def test_output_frame_has_the_generators_columns_and_types(small):
    """The pandas output has the Spark generator's columns, numpy types and naive event times."""
    out = hs.to_output_frame(small.transactions)
    assert tuple(out.columns) == OUTPUT_COLUMNS
    assert [str(t) for t in out.dtypes] == ["int64", "datetime64[ns]", "int64", "int64", "float64", "int32", "int32"]
    assert (out["event_time"] == pd.Timestamp("2018-04-01") + pd.to_timedelta(small.transactions["TX_TIME_SECONDS"],
                                                                              unit="s")).all()


@pytest.mark.parametrize("through_parquet", [False, True])
def test_spark_frame_has_the_generators_schema(spark, small, tmp_path, through_parquet):
    """Both Spark paths (Arrow, Parquet) give the generator's schema and the same instants (UTC)."""
    out = hs.to_output_frame(small.transactions).head(500)
    df = hs.to_spark(spark, out, path=str(tmp_path / "tx.parquet") if through_parquet else None)
    assert tuple(df.columns) == OUTPUT_COLUMNS
    assert [f.dataType.simpleString() for f in df.schema.fields] == [
        "bigint", "timestamp", "bigint", "bigint", "double", "int", "int"]
    rows = sorted(df.collect(), key=lambda r: r.transaction_id)
    assert len(rows) == 500
    first = rows[0]
    assert first.event_time.replace(tzinfo=None) == out["event_time"].iloc[0].to_pydatetime()
    assert first.amount == out["amount"].iloc[0] and first.customer_id == out["customer_id"].iloc[0]


def test_reference_call_gives_the_handbooks_data_set():
    """The whole reference call (about 10 s): size, frauds and the printed rows."""
    sim = hs.simulate()
    tx = sim.transactions
    assert len(tx) == hs.HANDBOOK_TRANSACTIONS == 1_754_155
    assert int(tx["TX_FRAUD"].sum()) == hs.HANDBOOK_FRAUDS == 14_681
    assert sim.new_frauds == hs.HANDBOOK_NEW_FRAUDS_PER_SCENARIO == {1: 978, 2: 9099, 3: 4604}
    assert tx["TX_FRAUD"].mean() == pytest.approx(0.008369271814634397, rel=1e-12)
    shown = pd.concat([tx.head(5), tx.tail(5)])
    expected = BOOK_FIRST + BOOK_LAST
    got = [(r.TRANSACTION_ID, str(r.TX_DATETIME), r.CUSTOMER_ID, r.TERMINAL_ID, round(r.TX_AMOUNT, 2))
           for r in shown.itertuples()]
    assert got == expected
    assert tx["TX_TIME_SECONDS"].iloc[-1] == 15811197 and tx["TX_TIME_DAYS"].iloc[-1] == 182
    assert tx["TX_DATETIME"].iloc[0].to_pydatetime() == dt.datetime(2018, 4, 1, 0, 0, 31)


def test_the_generate_job_runs_either_simulator(spark):
    """generate.transactions.simulator picks the Handbook's own simulator; a wrong name is an input error."""
    from runtime.errors import InputError
    from synthetic import generate

    conf = {"transactions": {"customers": 40, "terminals": 80, "days": 12, "start_date": "2018-04-01",
                             "radius": 20.0, "simulator": "handbook"}}
    exact = generate(spark, "transactions", conf, seed=5, partitions=2)
    sim = hs.simulate(n_customers=40, n_terminals=80, nb_days=12, start_date="2018-04-01", r=20.0)
    assert exact.count() == len(sim.transactions) and tuple(exact.columns) == OUTPUT_COLUMNS
    conf["transactions"]["simulator"] = "spark"
    ours = generate(spark, "transactions", conf, seed=5, partitions=2)
    assert [(f.name, f.dataType) for f in ours.schema] == [(f.name, f.dataType) for f in exact.schema]
    conf["transactions"]["simulator"] = "numpy"
    with pytest.raises(InputError, match="simulator"):
        generate(spark, "transactions", conf, seed=5, partitions=2)
