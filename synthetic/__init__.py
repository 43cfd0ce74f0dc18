"""Synthetic data sets with labeled anomalies: one generator per data set, picked by name.

``generate(spark, dataset_name, generate_section, seed, partitions, rows)`` returns the frame of
data set ``dataset_name`` from the config's ``generate`` section; :func:`write_synthetic` writes it
and says how many rows are labeled. A new data set's generator is one entry in ``GENERATORS``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Optional

from runtime.errors import InputError
from runtime.progress import RunSummary, log, step

if TYPE_CHECKING:  # importing the package (e.g. synthetic.handbook alone) does not start pyspark
    from pyspark.sql import DataFrame, SparkSession

# The Handbook's reference (5000 customers, 183 days) makes ~1.75M rows: ~1.92 per customer-day.
_TRANSACTIONS_PER_CUSTOMER_DAY = 1.92


def _telemetry(spark: SparkSession, section: Mapping, seed: int, partitions: int, rows: Optional[int]) -> DataFrame:
    from synthetic.telemetry import devices_for_rows, generate_telemetry

    conf = dict(section["telemetry"])
    if rows:
        conf["devices"] = devices_for_rows(rows, conf["days"], conf["sessions_per_hour"])
    return generate_telemetry(spark, seed=seed, partitions=partitions, **conf)


def _spark_transactions(spark: SparkSession, conf: Mapping, seed: int, partitions: int) -> DataFrame:
    from synthetic.transactions import generate_transactions

    return generate_transactions(spark, seed=seed, partitions=partitions, **conf)


def _handbook_transactions(spark: SparkSession, conf: Mapping, seed: int, partitions: int) -> DataFrame:
    """The Handbook's own simulator on the driver: its fixed seeds, so ``seed`` plays no part."""
    from synthetic.handbook import handbook_transactions, to_spark

    return to_spark(spark, handbook_transactions(n_customers=conf["customers"], n_terminals=conf["terminals"],
                                                 nb_days=conf["days"], start_date=conf["start_date"], r=conf["radius"]))


SIMULATORS = {"spark": _spark_transactions, "handbook": _handbook_transactions}


def _transactions(spark: SparkSession, section: Mapping, seed: int, partitions: int, rows: Optional[int]) -> DataFrame:
    conf = dict(section["transactions"])
    if rows:
        scale = rows / (_TRANSACTIONS_PER_CUSTOMER_DAY * conf["customers"] * conf["days"])
        conf["customers"] = max(1, round(conf["customers"] * scale))
        conf["terminals"] = max(1, round(conf["terminals"] * scale))
    simulator = conf.pop("simulator", "spark")
    if simulator not in SIMULATORS:  # the config refuses other names; a caller's own dict may not
        raise InputError(f"generate.transactions.simulator must be one of {', '.join(SIMULATORS)}, got {simulator!r}")
    return SIMULATORS[simulator](spark, conf, seed, partitions)


GENERATORS: dict[str, Callable[..., "DataFrame"]] = {"telemetry": _telemetry, "transactions": _transactions}


def generate(spark: SparkSession, dataset_name: str, generate_section: Mapping, seed: int, partitions: int,
             rows: Optional[int] = None) -> DataFrame:
    """The synthetic frame of ``dataset_name``; ``rows`` (when given) scales the configured sizes to about that."""
    try:
        generator = GENERATORS[dataset_name]
    except KeyError:
        raise InputError(f"no generator for data set {dataset_name!r} (have: {', '.join(GENERATORS)})") from None
    return generator(spark, generate_section, seed, partitions, rows)


def write_synthetic(spark: SparkSession, dataset_name: str, generate_section: Mapping, *, seed: int,
                    rows: Optional[int], output: str, fmt: str) -> RunSummary:
    """Generate ``dataset_name``, write it to ``output`` as ``fmt``, and log how many rows are labeled;
    the summary counts the rows written (rows_out) and the labeled ones (extra ``labeled``).
    """
    from runtime.storage import write_table

    with step("generate", f"writing {dataset_name} to {output} ({fmt})"):
        df = generate(spark, dataset_name, generate_section, seed, generate_section["partitions"], rows)
        write_table(df, output, fmt)
    reader = spark.read.format(fmt)
    written = (reader.option("header", "true") if fmt == "csv" else reader).load(output)
    stats = written.selectExpr("count(*) AS rows", "sum(cast(label AS int)) AS labeled").first()
    share = (stats["labeled"] or 0) / stats["rows"] if stats["rows"] else 0.0
    log("generate", f"{stats['rows']:,} rows, {stats['labeled'] or 0:,} labeled anomalous ({share:.2%}) in {output}")
    return RunSummary("generate", dataset=dataset_name, rows_out=stats["rows"], extra={"labeled": stats["labeled"] or 0})
