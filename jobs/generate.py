"""The `generate` job: write synthetic telemetry or card transactions with labeled anomalies.

Telemetry: IoT / telecom sessions per device with daily and weekly seasonality and injected
anomalies of several kinds (label, anomaly_type). Transactions: the Fraud Detection Handbook's
simulator (customers and terminals on a grid, three fraud scenarios). Rows are made by Spark
(deterministic by generate.seed), never collected to the driver.

generate.transactions.simulator: "handbook" instead runs the Handbook's own simulator draw for draw
on the driver (synthetic/handbook.py: its fixed seeds, so generate.seed plays no part):
with the reference sizes (the defaults) it writes the Handbook's published data set, 1,754,155
transactions and 14,681 frauds, so results compare directly with the book's baselines. About
10 s and 0.5 GB of driver memory at that size; use "spark" (the default) for large data.

Submitted as `python -m jobs generate --conf FILE` or `spark-submit jobs/generate.py --conf FILE`.
"""
import sys

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import InputError, base_parser, log, run_main, step
from runtime.spark import build_session
from runtime.storage import write_table

PROG = "python -m jobs generate"


def build_parser():
    parser = base_parser(PROG, __doc__, input_help="not used (generate makes its own data)",
                         output_help="where the raw data goes (default paths.raw)")
    parser.add_argument("--rows", type=int, metavar="N",
                        help="telemetry: about N rows (sets the number of devices from generate.telemetry.days "
                             "and sessions_per_hour); transactions: scale generate.transactions.customers and "
                             "terminals to about N rows. Default: the config's sizes")
    parser.add_argument("--format", choices=("parquet", "csv", "json"), default="parquet",
                        help="file format to write (default parquet; csv/json to try the input mapping)")
    parser.add_argument("--seed", type=int, help="random seed (default generate.seed)")
    return parser


def generate(spark, dataset, gen_conf, seed, partitions, rows=None):
    """The synthetic frame for ``dataset`` from plain settings."""
    if dataset == "telemetry":
        from synthetic.telemetry import devices_for_rows, generate_telemetry

        conf = dict(gen_conf["telemetry"])
        if rows:
            conf["devices"] = devices_for_rows(rows, conf["days"], conf["sessions_per_hour"])
        return generate_telemetry(spark, seed=seed, partitions=partitions, **conf)
    from synthetic.transactions import generate_transactions

    conf = dict(gen_conf["transactions"])
    if rows:
        # The Handbook's reference (5000 customers, 183 days) makes ~1.75M rows: ~1.9 per customer-day.
        scale = rows / (1.92 * conf["customers"] * conf["days"])
        conf["customers"] = max(1, round(conf["customers"] * scale))
        conf["terminals"] = max(1, round(conf["terminals"] * scale))
    simulator = conf.pop("simulator", "spark")
    if simulator not in ("spark", "handbook"):
        raise InputError(f"generate.transactions.simulator must be 'spark' or 'handbook', got {simulator!r}")
    if simulator == "handbook":
        from synthetic.handbook import simulate, to_output_frame, to_spark

        sim = simulate(n_customers=conf["customers"], n_terminals=conf["terminals"], nb_days=conf["days"],
                       start_date=conf["start_date"], r=conf["radius"])
        return to_spark(spark, to_output_frame(sim.transactions))
    return generate_transactions(spark, seed=seed, partitions=partitions, **conf)


def run(args, config):
    dataset = config["dataset"]
    output = args.output or config.path("raw")
    seed = config["generate"]["seed"] if args.seed is None else args.seed
    spark = build_session(config)
    with step("generate", f"writing {dataset} to {output} ({args.format})"):
        df = generate(spark, dataset, config["generate"], seed, config["generate"]["partitions"], args.rows)
        write_table(df, output, args.format)
    written = spark.read.format(args.format).option("header", "true").load(output) \
        if args.format == "csv" else spark.read.format(args.format).load(output)
    stats = written.selectExpr("count(*) AS rows", "sum(cast(label AS int)) AS labeled").first()
    share = (stats["labeled"] or 0) / stats["rows"] if stats["rows"] else 0.0
    log("generate", f"{stats['rows']:,} rows, {stats['labeled'] or 0:,} labeled anomalous ({share:.2%}) in {output}")


def main(argv=None) -> int:
    return run_main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
