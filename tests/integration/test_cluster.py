"""The pipeline on a real Spark standalone cluster (a master and two workers, each its own JVM,
their executors their own Python workers) with every table on ``s3a://`` against moto's S3:
generate -> features -> train -> score -> summary, then the stream over a landing prefix,
each job one ``spark-submit --master spark://...`` application, shipped as on EMR
(tests/integration/cluster_fixture.py says how and why client deploy mode).

What it proves: the jobs run when the driver and the executors share neither a JVM nor (as far
as our code knows) a disk; the executors, not the driver, ran the tasks (read from each
application's event log and the workers' own pages); and the cluster's tables equal those the
same jobs write in local mode from the same seed, row for row and score for score.
"""
import json
import urllib.request
from collections import Counter

import boto3
import pytest
from aws_local import DUMMY_ENV, REGION
from cluster_fixture import BUCKET, Submitter, build_zip
from lakes import run_jobs_in_one_process

from runtime.cluster import master_state

DATASET = "transactions"
LAKE = f"s3a://{BUCKET}/lake"          # the cluster's lake
LOCAL_LAKE = f"s3a://{BUCKET}/local"   # the same jobs in local mode

# A small transactions lake (lakes.py's sizes: a few thousand rows). The master, the Delta
# package and the jars come from spark-submit, as on EMR (conf/emr.yaml leaves them empty too).
CLUSTER_CONF = """
spark: {{master: null, shuffle_partitions: 2, driver_memory: "", extra_jars: "", delta_package: ""}}
storage: {{lake: "{lake}", format: "delta"}}
aws: {{endpoint_url: "{moto}"}}
generate: {{partitions: 2, transactions: {{customers: 120, terminals: 240, days: 30}}}}
train:
  test_days: 4
  rcf: {{num_trees: 50, num_samples_per_tree: 64}}
  logistic: {{reg_params: [0.001], validation_days: 4, max_iter: 20}}
"""

# The same, in local mode (python -m jobs, one JVM; the session's default jars bring s3a)
LOCAL_CONF = """
spark: {{master: "local[2]", shuffle_partitions: 2, driver_memory: "2g"}}
storage: {{lake: "{lake}", format: "delta"}}
aws: {{endpoint_url: "{moto}"}}
generate: {{partitions: 2, transactions: {{customers: 120, terminals: 240, days: 30}}}}
"""


STREAM_GOOD = 200

# Six applications (each a JVM start, Ivy's offline resolution and two executors) and a local run.
pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.timeout(1800)]


def landing_lines():
    """STREAM_GOOD valid transactions on 2018-05-01 (the day after the lake's last), then one bad line."""
    lines = [json.dumps({"transaction_id": f"live{i:04d}", "event_time": f"2018-05-01T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
                         "customer_id": f"c{i % 6}", "terminal_id": f"k{i % 4}", "amount": 5.0 + (i * 37) % 200,
                         "label": 0}) for i in range(STREAM_GOOD)]
    return lines + ["this is not json"]


@pytest.fixture(scope="module")
def s3(cluster_moto):
    return boto3.client("s3", region_name=REGION, endpoint_url=cluster_moto)


@pytest.fixture(scope="module")
def submitter(spark_cluster, cluster_moto, tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster-submit")
    package = build_zip(work / "dist")
    return Submitter(spark_cluster, work, package, CLUSTER_CONF.format(lake=LAKE, moto=cluster_moto), cluster_moto)


@pytest.fixture(scope="module")
def cluster_run(submitter, s3):
    """generate -> features -> train -> score (last two dates) -> summary, then the stream over two
    landing files, each its own application on the cluster; each job's JSON summary by job.
    """
    ran = {
        "generate": submitter.submit("generate", "--dataset", DATASET),
        "features": submitter.submit("build_features", "--dataset", DATASET),
        "train": submitter.submit("train", "--dataset", DATASET, "--model", "all"),
        "score": submitter.submit("score", "--dataset", DATASET, "--last-days", "2"),
        "summary": submitter.submit("summary", "--dataset", DATASET),
    }
    lines = landing_lines()
    half = len(lines) // 2
    for n, part in enumerate((lines[:half], lines[half:])):
        s3.put_object(Bucket=BUCKET, Key=f"lake/landing/{DATASET}/part-{n}.json", Body="\n".join(part) + "\n")
    ran["stream"] = submitter.submit("stream", "--dataset", DATASET, "--source", "landing",
                                     "--trigger", "available-now", "--no-alerts")
    return ran


@pytest.fixture(scope="module")
def local_run(cluster_run, cluster_moto, tmp_path_factory):
    """generate, features and score in local mode (one JVM) into LOCAL_LAKE, from the same seed,
    scoring the same dates with the cluster's registry (its trained models); stdout.
    """
    tmp = tmp_path_factory.mktemp("cluster-local")
    conf = tmp / "local.yaml"
    conf.write_text(LOCAL_CONF.format(lake=LOCAL_LAKE, moto=cluster_moto))
    common = ["--conf", str(conf), "--dataset", DATASET, "--json"]
    argv = [["generate", *common], ["features", *common],
            ["score", *common, "--last-days", "2", "--models", f"{LAKE}/models"]]
    return run_jobs_in_one_process(argv, tmp, 900)


def delta_table(moto_url, lake, table):
    """The Delta table ``<lake>/<table>`` (s3a URI) as a pyarrow table, read with delta-rs (no Spark)."""
    from deltalake import DeltaTable

    uri = lake.replace("s3a://", "s3://", 1) + "/" + table
    options = {"AWS_ENDPOINT_URL": moto_url, "AWS_ALLOW_HTTP": "true", "AWS_REGION": REGION,
               "AWS_ACCESS_KEY_ID": DUMMY_ENV["AWS_ACCESS_KEY_ID"],
               "AWS_SECRET_ACCESS_KEY": DUMMY_ENV["AWS_SECRET_ACCESS_KEY"], "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    return DeltaTable(uri, storage_options=options).to_pyarrow_table()


def by_key(table, key):
    """{key value: row dict} of a pyarrow table; fails on a repeated key."""
    rows = table.to_pylist()
    out = {row[key]: row for row in rows}
    assert len(out) == len(rows), f"repeated {key} values"
    return out


# --------------------------------------------------------------------------- the cluster itself

def test_the_cluster_has_a_master_and_two_workers(spark_cluster):
    state = master_state(spark_cluster.master_ui)
    alive = sorted(w["id"] for w in state["workers"] if w["state"] == "ALIVE")
    print(f"\nmaster URL: {state['url']}\nworkers: {', '.join(alive)}")
    assert state["url"] == spark_cluster.master_url and state["status"] == "ALIVE"
    assert len(alive) == 2 and alive == spark_cluster.worker_ids
    assert all(w["cores"] == 1 and w["memory"] == 1536 for w in state["workers"])


def test_every_job_ran_as_a_cluster_application(cluster_run, spark_cluster):
    assert {job: r["status"] for job, r in cluster_run.items()} == dict.fromkeys(cluster_run, "done")
    finished = {app["id"]: app for app in master_state(spark_cluster.master_ui)["completedapps"]}
    for job, ran in cluster_run.items():
        app = finished[ran["app_id"]]   # the master ran it: not a local session
        assert app["state"] == "FINISHED", (job, app)
        print(f"{job}: {ran['app_id']} on {spark_cluster.master_url}, {ran['seconds']:.0f} s")


def test_the_executors_not_the_driver_ran_the_tasks(cluster_run, submitter, spark_cluster):
    """From each application's event log: every task ended on an executor (never "driver"), and
    executors on both workers ran tasks; the workers' own pages say which executor was theirs."""
    state = master_state(spark_cluster.master_ui)
    executor_worker = {}   # (app id, executor id) -> worker id, from each worker's /json
    for worker in state["workers"]:
        with urllib.request.urlopen(f"{worker['webuiaddress']}/json", timeout=10) as page:
            worker_state = json.load(page)
        for executor in worker_state.get("finishedexecutors", []) + worker_state.get("executors", []):
            executor_worker[(executor["appid"], str(executor["id"]))] = worker["id"]
    for job, ran in cluster_run.items():
        events = submitter.event_log(ran["app_id"])
        tasks = Counter(e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd")
        added = {e["Executor ID"]: e["Executor Info"]["Host"] for e in events
                 if e["Event"] == "SparkListenerExecutorAdded"}
        workers = Counter()
        for executor, count in tasks.items():
            workers[executor_worker.get((ran["app_id"], executor), "?")] += count
        print(f"{job}: tasks per executor {dict(tasks)}; per worker {dict(workers)}; driver ran "
              f"{tasks.get('driver', 0)}")
        assert sum(tasks.values()) > 0, job
        assert "driver" not in tasks, (job, tasks)
        assert set(tasks) <= set(added), (job, tasks, added)
        assert "?" not in workers, (job, tasks, executor_worker)
    # over the whole pipeline both workers' executors did work
    score = cluster_run["score"]
    per_worker = {executor_worker[(score["app_id"], e["Task Info"]["Executor ID"])]
                  for e in submitter.event_log(score["app_id"]) if e["Event"] == "SparkListenerTaskEnd"}
    everywhere = {executor_worker[(r["app_id"], e["Task Info"]["Executor ID"])]
                  for r in cluster_run.values() for e in submitter.event_log(r["app_id"])
                  if e["Event"] == "SparkListenerTaskEnd"}
    print(f"score's tasks ran on {sorted(per_worker)}; the pipeline's on {sorted(everywhere)}")
    assert everywhere == set(spark_cluster.worker_ids)


def test_the_python_workers_fast_path_falls_back_on_the_cluster_with_the_reason(cluster_run):
    score_out = cluster_run["score"]["stdout"] + cluster_run["score"]["stderr"]
    assert "read by Spark: " in score_out and "written by the Python workers" not in score_out
    line = next(line for line in score_out.splitlines() if "read by Spark: " in line)
    print(line)
    assert f"{LAKE}/features/{DATASET} is not a local delta table" in line


def test_nothing_was_written_beside_the_driver(submitter):
    assert sorted(p.name for p in submitter.driver_dir.iterdir()) == ["cluster.yaml"]


# --------------------------------------------------------------------------- the tables it wrote

def test_the_cluster_tables_hold_every_row(cluster_run, cluster_moto):
    features = delta_table(cluster_moto, LAKE, f"features/{DATASET}")
    assert features.num_rows == cluster_run["generate"]["rows_out"] == cluster_run["features"]["rows_out"] > 1000
    scores = delta_table(cluster_moto, LAKE, f"scores/{DATASET}")
    last_two = sorted({str(d) for d in features.column("date").to_pylist()})[-2:]
    assert sorted({str(d) for d in scores.column("date").to_pylist()}) == last_two
    assert scores.num_rows == cluster_run["score"]["rows_out"] == sum(
        str(d) in last_two for d in features.column("date").to_pylist())
    hourly = delta_table(cluster_moto, LAKE, f"summary/{DATASET}/hourly")
    assert hourly.num_rows == 24 * len(cluster_run["summary"]["dates"]) > 0


def test_the_stream_on_the_cluster_scored_the_landing_files(cluster_run, cluster_moto):
    stream = cluster_run["stream"]
    assert (stream["rows_in"], stream["rows_out"], stream["extra"]["dead_letters"]) == (STREAM_GOOD + 1, STREAM_GOOD, 1)
    sink = delta_table(cluster_moto, LAKE, f"stream/{DATASET}")
    assert sorted(sink.column("transaction_id").to_pylist()) == [f"live{i:04d}" for i in range(STREAM_GOOD)]
    assert delta_table(cluster_moto, LAKE, f"dead_letter/{DATASET}").num_rows == 1


# --------------------------------------------------------------------------- cluster == local mode

def test_local_mode_writes_the_same_features(cluster_run, local_run, cluster_moto):
    cluster = by_key(delta_table(cluster_moto, LAKE, f"features/{DATASET}"), "transaction_id")
    local = by_key(delta_table(cluster_moto, LOCAL_LAKE, f"features/{DATASET}"), "transaction_id")
    assert cluster.keys() == local.keys()
    differ = [key for key in cluster if cluster[key] != local[key]]
    assert not differ, f"{len(differ)} of {len(cluster)} feature rows differ, e.g. {differ[:1]}: " \
                       f"{cluster[differ[0]]} vs {local[differ[0]]}"


def test_local_mode_gives_the_same_scores(cluster_run, local_run, cluster_moto):
    cluster = by_key(delta_table(cluster_moto, LAKE, f"scores/{DATASET}"), "transaction_id")
    local = by_key(delta_table(cluster_moto, LOCAL_LAKE, f"scores/{DATASET}"), "transaction_id")
    assert cluster.keys() == local.keys() and len(cluster) == cluster_run["score"]["rows_out"]
    differ = [key for key in cluster if cluster[key] != local[key]]
    assert not differ, f"{len(differ)} of {len(cluster)} scored rows differ, e.g. {cluster[differ[0]]} vs " \
                       f"{local[differ[0]]}"
    print(f"scores: {len(cluster)} rows, every column equal to local mode's "
          f"({sum(r['is_anomaly'] for r in cluster.values())} anomalies)")
