"""Synthetic card transactions after the Fraud Detection Handbook's simulator, built in Spark.

Le Borgne, Siblini, Lebichot, Bontempi, "Reproducible Machine Learning for Credit Card Fraud
Detection - Practical Handbook", chapter 3 "Transaction data simulator". The rules are the
Handbook's; the implementation is ours:

* customers and terminals sit uniformly on a 100 x 100 grid; a customer has a mean amount
  U(5, 100), a standard deviation of half that, and a mean number of transactions per day U(0, 4);
  a customer uses only the terminals closer than ``radius``;
* per customer and day, Poisson(mean_nb_tx_per_day) transactions; each one gets a second of the
  day int(N(43200, 20000)) and is dropped unless 0 < second < 86400 (the Handbook drops it too),
  an amount N(mean, std) redrawn as U(0, 2 * mean) when negative and rounded to cents, and a
  terminal drawn uniformly among the customer's terminals;
* frauds: (1) amount > 220; (2) every day d in [0, days - 1), 2 terminals are compromised and
  every transaction on them on days [d, d + 28) is fraud; (3) every day d in [0, days - 1),
  3 customers are compromised and int(n / 3) of their n transactions on days [d, d + 14), drawn
  at random, get their amount multiplied by 5 and are fraud. Later scenarios overwrite the
  scenario number of earlier ones, as in the Handbook.

Only the small tables (customer profiles, terminal locations, compromised terminals and
customers) are built on the driver with a seeded numpy generator. The transactions are generated
in Spark by exploding per customer-day counts; every random draw is a hash of (seed, stream,
ids), so the output does not depend on partitioning or on the order tasks run in.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

SECONDS_PER_DAY = 86400
GRID_SIZE = 100.0
FRAUD_AMOUNT_THRESHOLD = 220.0        # scenario 1
COMPROMISED_TERMINALS_PER_DAY = 2     # scenario 2
TERMINAL_COMPROMISE_DAYS = 28
COMPROMISED_CUSTOMERS_PER_DAY = 3     # scenario 3
CUSTOMER_COMPROMISE_DAYS = 14
CUSTOMER_FRAUD_SHARE_DIVISOR = 3      # int(n / 3) of the compromised customers' transactions
CUSTOMER_FRAUD_AMOUNT_FACTOR = 5.0
TIME_MEAN_SECONDS = SECONDS_PER_DAY / 2
TIME_STD_SECONDS = 20000.0
# Length of the Poisson CDF table per customer: P(N >= 40) for a mean of 4 is below 1e-20.
POISSON_CDF_TERMS = 40

OUTPUT_COLUMNS = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "label",
                  "fraud_scenario")

# Independent random streams, one per kind of draw.
_STREAM_COUNT, _STREAM_TIME_1, _STREAM_TIME_2 = 1, 2, 3
_STREAM_AMOUNT_1, _STREAM_AMOUNT_2, _STREAM_AMOUNT_FALLBACK = 4, 5, 6
_STREAM_TERMINAL, _STREAM_CUSTOMER_FRAUD = 7, 8
_MASK_53 = (1 << 53) - 1


def _uniform(seed: int, stream: int, *cols: Column) -> Column:
    """A uniform draw in (0, 1) that is a pure function of (seed, stream, cols)."""
    bits = F.xxhash64(F.lit(seed).cast("long"), F.lit(stream), *cols).bitwiseAND(F.lit(_MASK_53))
    return (bits.cast("double") + 0.5) / float(1 << 53)


def _standard_normal(seed: int, streams: tuple[int, int], *cols: Column) -> Column:
    """Box-Muller on two hash uniforms."""
    u1 = _uniform(seed, streams[0], *cols)
    u2 = _uniform(seed, streams[1], *cols)
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2.0 * np.pi * u2)


def _poisson_cdf(mean: float, terms: int = POISSON_CDF_TERMS) -> list[float]:
    """P(N <= k) for k = 0 .. terms - 1."""
    pmf = np.empty(terms)
    pmf[0] = np.exp(-mean)
    for k in range(1, terms):
        pmf[k] = pmf[k - 1] * mean / k
    return np.cumsum(pmf).tolist()


def customer_profiles(customers: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Locations, amount parameters and daily rates of ``customers`` customers (driver side)."""
    x = rng.uniform(0, GRID_SIZE, customers)
    y = rng.uniform(0, GRID_SIZE, customers)
    mean_amount = rng.uniform(5, 100, customers)
    mean_nb_tx_per_day = rng.uniform(0, 4, customers)
    return {"x": x, "y": y, "mean_amount": mean_amount, "std_amount": mean_amount / 2,
            "mean_nb_tx_per_day": mean_nb_tx_per_day}


def available_terminals(cx: np.ndarray, cy: np.ndarray, tx: np.ndarray, ty: np.ndarray,
                        radius: float, chunk: int = 512) -> list[list[int]]:
    """For each customer, the ids of the terminals at a distance < ``radius`` (as the Handbook)."""
    result: list[list[int]] = []
    for start in range(0, len(cx), chunk):
        dx = cx[start:start + chunk, None] - tx[None, :]
        dy = cy[start:start + chunk, None] - ty[None, :]
        close = (dx * dx + dy * dy) < radius * radius
        result.extend(np.flatnonzero(row).tolist() for row in close)
    return result


def profile_tables(customers: int, terminals: int, radius: float,
                   seed: int) -> tuple[dict[str, np.ndarray], list[list[int]]]:
    """Customer profiles and, per customer, the terminals within ``radius`` (driver side)."""
    rng = np.random.default_rng(seed)
    profiles = customer_profiles(customers, rng)
    term_x = rng.uniform(0, GRID_SIZE, terminals)
    term_y = rng.uniform(0, GRID_SIZE, terminals)
    return profiles, available_terminals(profiles["x"], profiles["y"], term_x, term_y, radius)


def _compromised(population: int, per_day: int, days: int, seed: int, stream: int) -> list[tuple[int, int]]:
    """(id, start day) pairs: ``per_day`` distinct ids drawn every day d in [0, days - 1).

    The Handbook loops over ``range(TX_TIME_DAYS.max())``, i.e. it stops one day before the last.
    """
    pairs = []
    for day in range(max(days - 1, 0)):
        rng = np.random.default_rng([seed, stream, day])
        for ident in rng.choice(population, size=min(per_day, population), replace=False):
            pairs.append((int(ident), day))
    return pairs


def generate_transactions(spark: SparkSession, *, customers: int = 5000, terminals: int = 10000,
                          days: int = 183, start_date: str = "2018-04-01", radius: float = 5.0,
                          seed: int = 0, partitions: int = 8) -> DataFrame:
    """Labelled transactions following the Handbook's simulator (see the module docstring).

    Returns columns ``transaction_id`` (long, 0.. in event-time order, ties broken by customer),
    ``event_time`` (timestamp, UTC), ``customer_id`` (long), ``terminal_id`` (long), ``amount``
    (double), ``label`` (int, the Handbook's TX_FRAUD) and ``fraud_scenario`` (int, 0-3).
    """
    if customers < 1 or terminals < 1 or days < 1:
        raise ValueError("customers, terminals and days must be positive")
    if radius <= 0:
        raise ValueError("radius must be positive")
    start = dt.datetime.strptime(start_date, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    start_epoch = int(start.timestamp())

    profiles, reachable = profile_tables(customers, terminals, radius, seed)

    customer_rows = [
        (cid, float(profiles["mean_amount"][cid]), float(profiles["std_amount"][cid]),
         _poisson_cdf(float(profiles["mean_nb_tx_per_day"][cid])), terms)
        for cid, terms in enumerate(reachable) if terms  # no terminal nearby: no transaction
    ]
    customer_schema = T.StructType([
        T.StructField("customer_id", T.LongType(), False),
        T.StructField("mean_amount", T.DoubleType(), False),
        T.StructField("std_amount", T.DoubleType(), False),
        T.StructField("count_cdf", T.ArrayType(T.DoubleType(), False), False),
        T.StructField("terminals", T.ArrayType(T.LongType(), False), False),
    ])
    customer_df = spark.createDataFrame(customer_rows, customer_schema)

    pair_schema = "id long, start_day int"
    terminal_attacks = spark.createDataFrame(
        _compromised(terminals, COMPROMISED_TERMINALS_PER_DAY, days, seed, 2), pair_schema)
    customer_attacks = spark.createDataFrame(
        _compromised(customers, COMPROMISED_CUSTOMERS_PER_DAY, days, seed, 3), pair_schema)

    key = (F.col("customer_id"), F.col("day"), F.col("j"))

    customer_days = spark.range(0, customers * days, numPartitions=partitions).select(
        F.floor(F.col("id") / days).cast("long").alias("customer_id"), (F.col("id") % days).cast("int").alias("day"))
    draw = _uniform(seed, _STREAM_COUNT, F.col("customer_id"), F.col("day"))
    counted = (customer_days.join(F.broadcast(customer_df), "customer_id")
               .withColumn("nb_tx", F.size(F.filter("count_cdf", lambda c: c < draw))))
    base = (
        counted.where(F.col("nb_tx") > 0)
        .withColumn("j", F.explode(F.sequence(F.lit(0), F.col("nb_tx") - 1)))
        # int() truncates toward zero, like the Handbook's int(np.random.normal(...))
        .withColumn("second", (F.lit(TIME_MEAN_SECONDS) + TIME_STD_SECONDS
                               * _standard_normal(seed, (_STREAM_TIME_1, _STREAM_TIME_2), *key)).cast("int"))
        .where((F.col("second") > 0) & (F.col("second") < SECONDS_PER_DAY))
        .withColumn("normal_amount", F.col("mean_amount") + F.col("std_amount")
                    * _standard_normal(seed, (_STREAM_AMOUNT_1, _STREAM_AMOUNT_2), *key))
        .withColumn("amount", F.bround(
            F.when(F.col("normal_amount") >= 0, F.col("normal_amount"))
            .otherwise(2 * F.col("mean_amount") * _uniform(seed, _STREAM_AMOUNT_FALLBACK, *key)), 2))
        .withColumn("terminal_id", F.element_at(
            "terminals",
            (F.floor(_uniform(seed, _STREAM_TERMINAL, *key) * F.size("terminals")) + 1).cast("int")))
        .select("customer_id", "day", "j", "second", "terminal_id", "amount")
    )

    # Scenario 2: (terminal, day) pairs inside some 28-day compromise window.
    compromised_terminal_days = (
        terminal_attacks
        .select(F.col("id").alias("terminal_id"),
                F.explode(F.sequence(F.col("start_day"), F.col("start_day") + TERMINAL_COMPROMISE_DAYS - 1))
                .alias("day"))
        .where(F.col("day") < days).distinct().withColumn("scenario_2", F.lit(True)))

    # Scenario 3: for every attack day d, a random int(n / 3) of the n transactions of that day's
    # customers on days [d, d + 14); a transaction picked k times has its amount multiplied 5^k.
    attacked = (
        customer_attacks
        .select(F.col("id").alias("customer_id"), F.col("start_day"),
                F.explode(F.sequence(F.col("start_day"), F.col("start_day") + CUSTOMER_COMPROMISE_DAYS - 1))
                .alias("day"))
        .where(F.col("day") < days))
    per_attack = Window.partitionBy("start_day")
    picked = (
        base.select("customer_id", "day", "j").join(F.broadcast(attacked), ["customer_id", "day"])
        .withColumn("draw", _uniform(seed, _STREAM_CUSTOMER_FRAUD, F.col("start_day"), *key))
        .withColumn("rank", F.row_number().over(per_attack.orderBy("draw", "customer_id", "day", "j")))
        .withColumn("n", F.count(F.lit(1)).over(per_attack))
        .where(F.col("rank") <= F.floor(F.col("n") / CUSTOMER_FRAUD_SHARE_DIVISOR))
        .groupBy("customer_id", "day", "j").agg(F.count(F.lit(1)).alias("times_picked")))

    labelled = (
        base.join(F.broadcast(compromised_terminal_days), ["terminal_id", "day"], "left")
        .join(F.broadcast(picked), ["customer_id", "day", "j"], "left")
        .withColumn("scenario_1", F.col("amount") > FRAUD_AMOUNT_THRESHOLD)
        .withColumn("amount", F.when(F.col("times_picked").isNull(), F.col("amount"))
                    .otherwise(F.col("amount") * F.pow(F.lit(CUSTOMER_FRAUD_AMOUNT_FACTOR), F.col("times_picked"))))
        .withColumn("fraud_scenario",
                    F.when(F.col("times_picked").isNotNull(), 3)
                    .when(F.col("scenario_2").isNotNull(), 2)
                    .when(F.col("scenario_1"), 1).otherwise(0))
        .withColumn("label", (F.col("fraud_scenario") > 0).cast("int"))
    )

    # transaction_id: rank in (time, customer, j) order, computed per day plus the number of
    # transactions on earlier days, so no single task has to sort the whole data set.
    per_day = base.groupBy("day").agg(F.count(F.lit(1)).alias("day_count"))
    offsets = per_day.select(
        "day", (F.sum("day_count").over(Window.orderBy("day")) - F.col("day_count")).alias("day_offset"))
    within_day = Window.partitionBy("day").orderBy("second", "customer_id", "j")
    return (
        labelled.join(F.broadcast(offsets), "day")
        .withColumn("transaction_id", F.col("day_offset") + F.row_number().over(within_day) - 1)
        .withColumn("event_time", F.timestamp_seconds(
            F.lit(start_epoch) + F.col("day").cast("long") * SECONDS_PER_DAY + F.col("second")))
        .select(F.col("transaction_id").cast("long"), "event_time", F.col("customer_id").cast("long"),
                F.col("terminal_id").cast("long"), F.col("amount").cast("double"),
                F.col("label").cast("int"), F.col("fraud_scenario").cast("int"))
    )


def fraud_summary(transactions: DataFrame) -> dict:
    """Counts the Handbook reports: transactions, frauds, fraud share and frauds per scenario."""
    row = transactions.agg(
        F.count(F.lit(1)).alias("transactions"), F.sum("label").alias("frauds"),
        *[F.sum((F.col("fraud_scenario") == s).cast("long")).alias(f"scenario_{s}") for s in (1, 2, 3)],
    ).first()
    summary = row.asDict()
    summary["frauds"] = int(summary["frauds"] or 0)
    summary["fraud_share"] = summary["frauds"] / summary["transactions"] if summary["transactions"] else 0.0
    return summary
