"""Fixtures the integration test modules share."""
import contextlib
import io

import pytest


@pytest.fixture(scope="session")
def lake(spark, tmp_path_factory):
    """A small transactions lake: generate -> features -> train, each run with --json; ``json``
    holds each job's stdout (its last line is the job's JSON summary).
    """
    from jobs import build_features, generate, train

    root = tmp_path_factory.mktemp("batch")
    conf = root / "conf.yaml"
    conf.write_text(f"""
spark: {{master: "local[2]", shuffle_partitions: 4, extra_jars: ""}}
storage: {{lake: "{root / 'lake'}"}}
generate: {{transactions: {{customers: 120, terminals: 240, days: 30}}}}
train:
  test_days: 4
  rcf: {{num_trees: 50, num_samples_per_tree: 64}}
  logistic: {{reg_params: [0.001], validation_days: 4}}
""")
    args = ["--conf", str(conf), "--dataset", "transactions"]
    stdout = {}
    for name, job in (("generate", generate), ("features", build_features), ("train", train)):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = job.main(args + ["--json"])
        assert code == 0, out.getvalue()[-3000:]
        stdout[name] = out.getvalue()
    return {"root": root, "args": args, "scores": root / "lake" / "scores" / "transactions", "json": stdout}
