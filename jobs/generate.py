"""The `generate` job: write synthetic telemetry or card transactions with labeled anomalies.

Telemetry: IoT / telecom sessions per device with daily and weekly seasonality and injected
anomalies of several kinds (label, anomaly_type). Transactions: the Fraud Detection Handbook's
simulator (customers and terminals on a grid, three fraud scenarios). Rows are made by Spark
(deterministic by generate.seed), never collected to the driver.

generate.transactions.simulator: "handbook" instead runs the Handbook's own simulator draw for draw
on the driver (synthetic/handbook.py: its fixed seeds, so generate.seed plays no part):
with the reference sizes (the defaults) it writes the Handbook's published data set, 1,754,155
transactions and 14,681 frauds, so results compare directly with the book's baselines. It holds
the whole data set in driver memory; use "spark" (the default) for large data.

Submitted as `python -m jobs generate --conf FILE` or `spark-submit jobs/generate.py --conf FILE`.
"""
if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (spark-submit runs this file as a script)

from jobs.common import job_main
from runtime.spark import build_session


def options(parser):
    parser.add_argument("--rows", type=int, metavar="N",
                        help="telemetry: about N rows (sets the number of devices from generate.telemetry.days "
                             "and sessions_per_hour); transactions: scale generate.transactions.customers and "
                             "terminals to about N rows. Default: the config's sizes")
    parser.add_argument("--format", choices=("parquet", "csv", "json"), default="parquet",
                        help="file format to write (default parquet; csv/json to try the input mapping)")
    parser.add_argument("--seed", type=int, help="random seed (default generate.seed)")


def run(args, config):
    from synthetic import write_synthetic

    seed = config["generate"]["seed"] if args.seed is None else args.seed
    return write_synthetic(build_session(config), config["dataset"], config["generate"], seed=seed, rows=args.rows,
                    output=args.output or config.path("raw"), fmt=args.format)


main = job_main("generate", __doc__, run, options, input_help="not used (generate makes its own data)",
                output_help="where the raw data goes (default paths.raw)")

if __name__ == "__main__":
    raise SystemExit(main())
