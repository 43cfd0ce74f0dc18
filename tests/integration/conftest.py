"""Fixtures the integration test modules share."""
import pytest
from cluster_fixture import cluster_moto, spark_cluster  # noqa: F401 (fixtures of test_cluster.py)
from lakes import small_lake
from stack_fixture import stack, stack_moto, stack_pipeline, stack_template  # noqa: F401 (the S3 end-to-end fixture)


@pytest.fixture(scope="session")
def lake(spark, tmp_path_factory):
    """A small transactions lake: generate -> features -> train, each run with --json; ``json``
    holds each job's stdout (its last line is the job's JSON summary).
    """
    from jobs import build_features, generate, train

    root = tmp_path_factory.mktemp("batch")
    made = small_lake(root, (generate, build_features, train), json=True)
    out = made["stdout"]
    stdout = {"generate": out["generate"], "features": out["build_features"], "train": out["train"]}
    return {"root": root, "args": made["args"], "scores": root / "lake" / "scores" / "transactions", "json": stdout}
