"""Small lakes the integration tests build: a config and the jobs run on it."""
import contextlib
import io

SMALL_LAKE = """
spark: {{master: "local[2]", shuffle_partitions: 4, extra_jars: ""}}
storage: {{lake: "{lake}"}}
generate: {{transactions: {{customers: 120, terminals: 240, days: 30}}}}
train:
  test_days: 4
  rcf: {{num_trees: 50, num_samples_per_tree: 64}}
  logistic: {{reg_params: [0.001], validation_days: 4}}
{train_extra}"""


def small_lake(root, jobs, *, train_extra: str = "", json: bool = False) -> dict:
    """A small transactions lake under ``root``: its config, then each of ``jobs`` (job modules, in
    order) run on it; ``train_extra``: more ``train:`` keys (YAML lines indented by two). Returns
    the common arguments and each job's stdout by module name.
    """
    conf = root / "conf.yaml"
    conf.write_text(SMALL_LAKE.format(lake=root / "lake", train_extra=train_extra))
    args = ["--conf", str(conf), "--dataset", "transactions"]
    stdout = {}
    for job in jobs:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = job.main(args + (["--json"] if json else []))
        assert code == 0, out.getvalue()[-3000:]
        stdout[job.__name__.rsplit(".", 1)[-1]] = out.getvalue()
    return {"root": root, "args": args, "stdout": stdout}
