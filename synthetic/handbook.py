"""Draw-for-draw reproduction of the Fraud Detection Handbook's transaction simulator.

Le Borgne, Siblini, Lebichot, Bontempi, "Reproducible Machine Learning for Credit Card Fraud
Detection - Practical Handbook", chapter 3.2 "Transaction data simulator". Unlike
:mod:`synthetic.transactions` (the Handbook's rules on Spark hash draws), this module
consumes the very same random streams as the Handbook's code, in the same order, so the reference
call (5000 customers, 10000 terminals, 183 days from 2018-04-01, radius 5) gives the Handbook's
published data set: 1,754,155 transactions, 14,681 frauds.

The random streams, as in the Handbook:

* customer profiles: ``np.random.seed(0)``, then per customer, in order, x ~ U(0, 100),
  y ~ U(0, 100), mean amount ~ U(5, 100), mean transactions per day ~ U(0, 4) (std amount = mean / 2);
* terminal profiles: ``np.random.seed(1)``, then per terminal x ~ U(0, 100), y ~ U(0, 100);
* a customer's terminals: the ids at Euclidean distance ``< r``, ascending;
* transactions: per customer, ``random.seed(id)`` and ``np.random.seed(id)``; per day, a Poisson
  count; per transaction ``int(N(43200, 20000))`` seconds, dropped unless in (0, 86400) (and then
  nothing else is drawn), an amount N(mean, std) redrawn U(0, 2 * mean) when negative and rounded
  to cents with ``np.round``, and ``random.choice`` among the customer's terminals (no draw and no
  transaction when the customer has none; the amount draws still happen);
* transactions of all customers are concatenated by customer and sorted on the date-time with
  numpy's (unstable) ``quicksort`` on datetime64 values, like pandas' ``sort_values``;
  ``TRANSACTION_ID`` is the position after the sort, so ties are broken exactly as the Handbook's;
* frauds, with ``D`` = the largest day that has a transaction: scenario 1, amount > 220;
  scenario 2, for every day d < D, the terminals ``Series.sample(n=2, random_state=d)`` (numpy's
  ``RandomState(d).choice(n, 2, replace=False)``) make every transaction of days [d, d + 28) on them
  fraudulent; scenario 3, for every day d < D, the customers ``sample(n=3, random_state=d)``;
  ``random.seed(d)`` then ``random.sample`` picks ``int(n / 3)`` of their n transactions of days
  [d, d + 14), in transaction-id order, whose amount is multiplied by 5 (again for every pick).
  Each scenario overwrites the scenario number of the earlier ones.

Every random draw is made with the same legacy numpy ``RandomState`` / Python ``random.Random``
calls; only work that does not touch a generator (distances, rounding, labelling) is vectorised.
The output has the columns and types of :func:`synthetic.transactions.generate_transactions`
(:data:`OUTPUT_COLUMNS`), with ``event_time`` = start date + ``TX_TIME_SECONDS`` (naive; the
Spark helper reads it as UTC).
"""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import numpy as np
import pandas as pd

OUTPUT_COLUMNS = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "label",
                  "fraud_scenario")

SECONDS_PER_DAY = 86400
GRID_SIZE = 100.0
TIME_MEAN_SECONDS = SECONDS_PER_DAY / 2
TIME_STD_SECONDS = 20000
FRAUD_AMOUNT_THRESHOLD = 220
COMPROMISED_TERMINALS_PER_DAY = 2
TERMINAL_COMPROMISE_DAYS = 28
COMPROMISED_CUSTOMERS_PER_DAY = 3
CUSTOMER_COMPROMISE_DAYS = 14
CUSTOMER_FRAUD_AMOUNT_FACTOR = 5

#: The Handbook's reference call (chapter 3.2).
REFERENCE = dict(n_customers=5000, n_terminals=10000, nb_days=183, start_date="2018-04-01", r=5.0)
#: Numbers the Handbook publishes for the reference call: the table's shape, the frauds, and the
#: frauds each scenario adds (printed by ``add_frauds``: new frauds, not scenario counts).
HANDBOOK_TRANSACTIONS = 1_754_155
HANDBOOK_FRAUDS = 14_681
HANDBOOK_NEW_FRAUDS_PER_SCENARIO = {1: 978, 2: 9099, 3: 4604}


@dataclass
class Simulation:
    """The Handbook's three tables and the fraud counts ``add_frauds`` prints.

    ``transactions`` has the Handbook's columns: TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID,
    TERMINAL_ID, TX_AMOUNT, TX_TIME_SECONDS, TX_TIME_DAYS, TX_FRAUD, TX_FRAUD_SCENARIO.
    ``new_frauds`` maps each scenario to the number of transactions it made fraudulent that no
    earlier scenario had.
    """

    customers: pd.DataFrame
    terminals: pd.DataFrame
    transactions: pd.DataFrame
    new_frauds: dict[int, int]


def customer_profiles(n_customers: int, random_state: int = 0) -> pd.DataFrame:
    """The Handbook's ``generate_customer_profiles_table``.

    Its per-customer loop draws x, y, mean amount and daily rate in turn from the global legacy
    generator; drawing all ``4 * n`` uniforms at once and scaling them column by column
    (``low + (high - low) * u``, as legacy ``uniform`` does) gives the same values.
    """
    u = np.random.RandomState(random_state).random_sample(4 * n_customers).reshape(n_customers, 4)
    mean_amount = 5.0 + (100.0 - 5.0) * u[:, 2]
    return pd.DataFrame({
        "CUSTOMER_ID": np.arange(n_customers, dtype=np.int64),
        "x_customer_id": GRID_SIZE * u[:, 0],
        "y_customer_id": GRID_SIZE * u[:, 1],
        "mean_amount": mean_amount,
        "std_amount": mean_amount / 2,
        "mean_nb_tx_per_day": 4.0 * u[:, 3],
    })


def terminal_profiles(n_terminals: int, random_state: int = 0) -> pd.DataFrame:
    """The Handbook's ``generate_terminal_profiles_table`` (x, y ~ U(0, 100) per terminal, in turn)."""
    u = np.random.RandomState(random_state).random_sample(2 * n_terminals).reshape(n_terminals, 2)
    return pd.DataFrame({
        "TERMINAL_ID": np.arange(n_terminals, dtype=np.int64),
        "x_terminal_id": GRID_SIZE * u[:, 0],
        "y_terminal_id": GRID_SIZE * u[:, 1],
    })


def terminals_within_radius(customers: pd.DataFrame, terminals: pd.DataFrame, r: float,
                            chunk: int = 256) -> list[list[int]]:
    """Per customer, the terminal ids at distance ``< r``, ascending (``get_list_terminals_within_radius``).

    The distance is computed as the Handbook does, ``sqrt((xc - xt)^2 + (yc - yt)^2)`` compared to
    ``r`` (not the squared distance to ``r^2``), so boundary cases round the same way.
    """
    tx = terminals["x_terminal_id"].to_numpy(dtype=float)
    ty = terminals["y_terminal_id"].to_numpy(dtype=float)
    cx = customers["x_customer_id"].to_numpy(dtype=float)
    cy = customers["y_customer_id"].to_numpy(dtype=float)
    result: list[list[int]] = []
    for start in range(0, len(cx), chunk):
        dx = np.square(cx[start:start + chunk, None] - tx[None, :])
        dy = np.square(cy[start:start + chunk, None] - ty[None, :])
        close = np.sqrt(dx + dy) < r
        result.extend(np.flatnonzero(row).tolist() for row in close)
    return result


def customer_transactions(customer_id: int, mean_amount: float, std_amount: float,
                          mean_nb_tx_per_day: float, available_terminals: list[int],
                          nb_days: int) -> tuple[list[int], list[int], list[float]]:
    """One customer's transactions, drawn as the Handbook's ``generate_transactions_table``.

    Returns ``(tx_time_seconds, terminal_ids, unrounded_amounts)`` in generation order.
    The generators are seeded with the customer id, as the Handbook's ``random.seed`` and
    ``np.random.seed`` calls do (a fresh ``RandomState(seed)`` is the same stream).
    """
    py_rng = random.Random(int(customer_id))
    np_rng = np.random.RandomState(int(customer_id))
    poisson, normal, uniform, choice = np_rng.poisson, np_rng.normal, np_rng.uniform, py_rng.choice
    has_terminals = len(available_terminals) > 0
    seconds: list[int] = []
    terminal_ids: list[int] = []
    amounts: list[float] = []
    for day in range(nb_days):
        nb_tx = poisson(mean_nb_tx_per_day)
        for _ in range(nb_tx):
            time_tx = int(normal(TIME_MEAN_SECONDS, TIME_STD_SECONDS))
            if 0 < time_tx < SECONDS_PER_DAY:
                amount = normal(mean_amount, std_amount)
                if amount < 0:
                    amount = uniform(0, mean_amount * 2)
                if has_terminals:
                    terminal_ids.append(choice(available_terminals))
                    seconds.append(time_tx + day * SECONDS_PER_DAY)
                    amounts.append(amount)
    return seconds, terminal_ids, amounts


def handbook_sort_order(tx_time_seconds: np.ndarray) -> np.ndarray:
    """The permutation pandas' ``sort_values('TX_DATETIME')`` applies (TRANSACTION_ID order).

    pandas sorts the datetime64 column with numpy's ``quicksort``, which is not stable: equal
    date-times come out in the order numpy's introsort leaves them. numpy still uses its classic
    introsort for datetime64 (the SIMD sorts only replace it for plain numbers), and comparing
    ``origin + s`` values is comparing ``s``, so sorting the seconds as datetime64 reproduces it.
    """
    values = np.asarray(tx_time_seconds, dtype=np.int64).astype("datetime64[s]")
    return np.argsort(values, kind="quicksort")


def generate_dataset(n_customers: int = 10000, n_terminals: int = 1000000, nb_days: int = 90,
                     start_date: str = "2018-04-01", r: float = 5.0
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The Handbook's ``generate_dataset``: customer and terminal profiles and sorted transactions.

    Seeds 0 (customers) and 1 (terminals), as the Handbook. The transactions table has the
    Handbook's columns TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT,
    TX_TIME_SECONDS, TX_TIME_DAYS. (The Handbook forgets to pass ``start_date`` on, so its
    transactions always start at the default 2018-04-01; here ``start_date`` is honoured.)
    """
    customers = customer_profiles(n_customers, random_state=0)
    terminals = terminal_profiles(n_terminals, random_state=1)
    available = terminals_within_radius(customers, terminals, r)
    customers["available_terminals"] = available
    customers["nb_terminals"] = [len(t) for t in available]

    seconds: list[int] = []
    customer_ids: list[int] = []
    terminal_ids: list[int] = []
    amounts: list[float] = []
    for cid, mean_amount, std_amount, rate in zip(
            customers["CUSTOMER_ID"].tolist(), customers["mean_amount"].tolist(),
            customers["std_amount"].tolist(), customers["mean_nb_tx_per_day"].tolist(), strict=True):
        s, t, a = customer_transactions(cid, mean_amount, std_amount, rate, available[cid], nb_days)
        seconds.extend(s)
        terminal_ids.extend(t)
        amounts.extend(a)
        customer_ids.extend([cid] * len(s))

    tx_seconds = np.asarray(seconds, dtype=np.int64)
    order = handbook_sort_order(tx_seconds)
    tx_seconds = tx_seconds[order]
    origin = np.datetime64(dt.datetime.strptime(start_date, "%Y-%m-%d"), "ns")
    transactions = pd.DataFrame({
        "TRANSACTION_ID": np.arange(len(order), dtype=np.int64),
        "TX_DATETIME": origin + tx_seconds.astype("timedelta64[s]"),
        "CUSTOMER_ID": np.asarray(customer_ids, dtype=np.int64)[order],
        "TERMINAL_ID": np.asarray(terminal_ids, dtype=np.int64)[order],
        # np.round(x, 2) on each scalar is the same ufunc as on the whole array
        "TX_AMOUNT": np.round(np.asarray(amounts, dtype=np.float64), 2)[order],
        "TX_TIME_SECONDS": tx_seconds,
        "TX_TIME_DAYS": tx_seconds // SECONDS_PER_DAY,
    })
    return customers, terminals, transactions


def sample_ids(population: int, n: int, random_state: int) -> np.ndarray:
    """Positions pandas' ``Series.sample(n=n, random_state=random_state)`` picks (no replacement).

    pandas calls ``RandomState(random_state).choice(len, size=n, replace=False)``, which for the
    legacy generator is ``permutation(len)[:n]``.
    """
    return np.random.RandomState(random_state).choice(population, size=n, replace=False)


def _rows_by_key(keys: np.ndarray) -> dict[int, np.ndarray]:
    """Row positions (ascending) of every key value."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(keys)]))
    return {int(sorted_keys[s]): order[s:e] for s, e in zip(starts, ends, strict=True)}


def add_frauds(customers: pd.DataFrame, terminals: pd.DataFrame,
               transactions: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, int]]:
    """The Handbook's ``add_frauds``: TX_FRAUD and TX_FRAUD_SCENARIO, and scenario 3's amounts.

    ``transactions`` must be in TRANSACTION_ID order with a default index (as
    :func:`generate_dataset` returns it). Returns a labelled copy and the new frauds per scenario.
    """
    tx = transactions.copy()
    amount = tx["TX_AMOUNT"].to_numpy(dtype=np.float64, copy=True)
    days = tx["TX_TIME_DAYS"].to_numpy()
    fraud = np.zeros(len(tx), dtype=np.int64)
    scenario = np.zeros(len(tx), dtype=np.int64)
    last_day = int(days.max()) if len(tx) else 0

    is_large = amount > FRAUD_AMOUNT_THRESHOLD
    fraud[is_large] = 1
    scenario[is_large] = 1
    new_frauds = {1: int(fraud.sum())}

    terminal_ids = terminals["TERMINAL_ID"].to_numpy()
    by_terminal = _rows_by_key(tx["TERMINAL_ID"].to_numpy())
    for day in range(last_day):
        picked = terminal_ids[sample_ids(len(terminal_ids), COMPROMISED_TERMINALS_PER_DAY, day)]
        for terminal in picked:
            rows = by_terminal.get(int(terminal), np.empty(0, dtype=np.int64))
            rows = rows[(days[rows] >= day) & (days[rows] < day + TERMINAL_COMPROMISE_DAYS)]
            fraud[rows] = 1
            scenario[rows] = 2
    new_frauds[2] = int(fraud.sum()) - new_frauds[1]

    customer_ids = customers["CUSTOMER_ID"].to_numpy()
    by_customer = _rows_by_key(tx["CUSTOMER_ID"].to_numpy())
    for day in range(last_day):
        picked = customer_ids[sample_ids(len(customer_ids), COMPROMISED_CUSTOMERS_PER_DAY, day)]
        rows = np.concatenate([by_customer.get(int(c), np.empty(0, dtype=np.int64)) for c in set(picked.tolist())])
        rows = np.sort(rows[(days[rows] >= day) & (days[rows] < day + CUSTOMER_COMPROMISE_DAYS)])
        # the Handbook samples the index labels of the filtered frame, i.e. rows in id order
        chosen = random.Random(day).sample(rows.tolist(), k=int(len(rows) / 3))
        chosen = np.asarray(chosen, dtype=np.int64)
        amount[chosen] = amount[chosen] * CUSTOMER_FRAUD_AMOUNT_FACTOR
        fraud[chosen] = 1
        scenario[chosen] = 3
    new_frauds[3] = int(fraud.sum()) - new_frauds[2] - new_frauds[1]

    tx["TX_AMOUNT"] = amount
    tx["TX_FRAUD"] = fraud
    tx["TX_FRAUD_SCENARIO"] = scenario
    return tx, new_frauds


def simulate(n_customers: int = REFERENCE["n_customers"], n_terminals: int = REFERENCE["n_terminals"],
             nb_days: int = REFERENCE["nb_days"], start_date: str = REFERENCE["start_date"],
             r: float = REFERENCE["r"]) -> Simulation:
    """``generate_dataset`` then ``add_frauds``; the defaults are the Handbook's reference call."""
    customers, terminals, transactions = generate_dataset(n_customers, n_terminals, nb_days, start_date, r)
    labelled, new_frauds = add_frauds(customers, terminals, transactions)
    return Simulation(customers, terminals, labelled, new_frauds)


def to_output_frame(transactions: pd.DataFrame) -> pd.DataFrame:
    """The Handbook's labelled table with our generator's columns and types (:data:`OUTPUT_COLUMNS`).

    transaction_id, customer_id, terminal_id int64; event_time datetime64 (naive, = TX_DATETIME);
    amount float64; label and fraud_scenario int32.
    """
    return pd.DataFrame({
        "transaction_id": transactions["TRANSACTION_ID"].to_numpy(dtype=np.int64),
        "event_time": transactions["TX_DATETIME"].to_numpy(),
        "customer_id": transactions["CUSTOMER_ID"].to_numpy(dtype=np.int64),
        "terminal_id": transactions["TERMINAL_ID"].to_numpy(dtype=np.int64),
        "amount": transactions["TX_AMOUNT"].to_numpy(dtype=np.float64),
        "label": transactions["TX_FRAUD"].to_numpy(dtype=np.int32),
        "fraud_scenario": transactions["TX_FRAUD_SCENARIO"].to_numpy(dtype=np.int32),
    }, columns=list(OUTPUT_COLUMNS))


def handbook_transactions(**kwargs) -> pd.DataFrame:
    """The simulated transactions in our generator's format; keyword arguments go to :func:`simulate`."""
    return to_output_frame(simulate(**kwargs).transactions)


def to_spark(spark, frame: pd.DataFrame, path: str | None = None):
    """A Spark DataFrame with the generator's schema from :func:`to_output_frame`'s output.

    ``event_time`` goes over as epoch seconds of the naive date-time read as UTC and becomes a
    timestamp with ``timestamp_seconds``, so the result does not depend on the session time zone.
    With ``path``, the rows are written there as Parquet with pyarrow and read back (no
    driver-to-JVM copy); otherwise they go through Arrow ``createDataFrame`` (all columns are
    numeric, so the Arrow path does not fall back to row-by-row conversion).
    """
    from pyspark.sql import functions as F

    epoch = frame["event_time"].to_numpy().astype("datetime64[s]").astype(np.int64)
    plain = frame.drop(columns=["event_time"]).assign(event_seconds=epoch)
    if path is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pandas(plain, preserve_index=False), path)
        df = spark.read.parquet(path)
    else:
        key = "spark.sql.execution.arrow.pyspark.enabled"
        previous = spark.conf.get(key, "false")
        spark.conf.set(key, "true")
        try:
            df = spark.createDataFrame(plain)
        finally:
            spark.conf.set(key, previous)
    return df.select(
        F.col("transaction_id").cast("long"),
        F.timestamp_seconds(F.col("event_seconds")).alias("event_time"),
        F.col("customer_id").cast("long"), F.col("terminal_id").cast("long"),
        F.col("amount").cast("double"), F.col("label").cast("int"), F.col("fraud_scenario").cast("int"))


def fraud_summary(frame: pd.DataFrame) -> dict:
    """Transactions, frauds, fraud share and transactions per final scenario of an output frame."""
    total = len(frame)
    frauds = int(frame["label"].sum())
    summary = {"transactions": total, "frauds": frauds, "fraud_share": frauds / total if total else 0.0}
    counts = frame["fraud_scenario"].value_counts()
    summary.update({f"scenario_{s}": int(counts.get(s, 0)) for s in (1, 2, 3)})
    return summary
