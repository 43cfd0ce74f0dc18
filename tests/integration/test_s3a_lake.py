"""The pipeline with every table on ``s3a://``: generate -> features -> train -> score -> summary
against moto's S3 server (its own process on a free loopback port, stopped by PID).

The jobs run the way ``python -m jobs`` runs them, one after the other in one subprocess (one JVM
start for the five jobs), with nothing but the config pointing them at S3: ``storage.lake`` an
``s3a://`` URI and ``aws.endpoint_url`` the server, from which ``runtime.spark`` builds the s3a
settings of the session. What they wrote is then read here without Spark, through boto3: every
table the jobs write in ``storage.format`` has a Delta log, and replaying that log (add and remove
actions, each add with its partition values and row count) gives the rows the raw input and the
jobs' own summaries say it holds.
"""
import json
import urllib.parse
from collections import Counter

import boto3
import pyarrow.parquet as pq
import pytest
from aws_local import REGION, moto_server_process
from lakes import run_jobs_in_one_process

BUCKET = "zen-s3a-lake"
LAKE = f"s3a://{BUCKET}/lake"
DATASET = "transactions"

# A small transactions lake (lakes.py's sizes) with the session's default jars: sagemaker-pyspark's
# bring hadoop-aws and the AWS SDK, which is what s3a needs.
CONF = """
spark: {master: "local[2]", shuffle_partitions: 2, driver_memory: "2g"}
storage: {lake: "lake", format: "delta"}
generate: {partitions: 2, transactions: {customers: 120, terminals: 240, days: 30}}
train:
  test_days: 4
  rcf: {num_trees: 50, num_samples_per_tree: 64}
  logistic: {reg_params: [0.001], validation_days: 4}
"""

SUMMARY_TABLES = ("daily", "hourly", "entities", "histogram", "top_entities", "expected")

# Five jobs in one JVM over a slow local S3: a few minutes on a quiet machine, more beside other work.
pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def moto_s3():
    with moto_server_process() as url:
        yield url


@pytest.fixture(scope="module")
def s3(moto_s3):
    client = boto3.client("s3", region_name=REGION, endpoint_url=moto_s3)
    client.create_bucket(Bucket=BUCKET)
    return client


def run_jobs(tmp, moto_url, jobs, timeout=900):
    """Run ``jobs`` (argument lists after ``python -m jobs``) in one subprocess on the s3a lake;
    every job gets the config and ``--json``. Returns stdout; fails with its tail if a job failed.
    """
    conf = tmp / "s3a.yaml"
    conf.write_text(CONF)
    common = ["--conf", str(conf), "--dataset", DATASET, "--json",
              "--set", f"storage.lake={LAKE}", "--set", f"aws.endpoint_url={moto_url}"]
    argv = [[job[0], *common, *job[1:]] for job in jobs]
    # run in tmp: a path the config left relative would land there, where a test can see it
    return run_jobs_in_one_process(argv, tmp, timeout)


def summaries(stdout):
    """Each job's JSON summary (the last JSON line before its ``@@ <job> exit 0``), by job."""
    out, last = {}, None
    for line in stdout.splitlines():
        if line.startswith("{"):
            last = json.loads(line)
        elif line.startswith("@@ "):
            out[line.split()[1]] = last
    return out


def keys(s3, prefix):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def delta_rows(s3, table):
    """Rows per partition value (or None for an unpartitioned table) of the Delta table at
    ``lake/<table>``, from replaying its JSON commits: the add actions not removed later, each
    with its partition values and ``numRecords`` statistic. Fails when the table has no log.
    """
    prefix = f"lake/{table}/_delta_log/"
    commits = [k for k in keys(s3, prefix) if k.endswith(".json") and k[len(prefix):-5].isdigit()]
    assert commits and commits[0] == f"{prefix}{0:020d}.json", f"no Delta log under s3://{BUCKET}/{prefix}"
    live = {}
    for key in commits:
        for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines():
            action = json.loads(line)
            if "add" in action:
                add = action["add"]
                date = add["partitionValues"].get("date")
                live[urllib.parse.unquote(add["path"])] = (date, json.loads(add["stats"])["numRecords"])
            elif "remove" in action:
                live.pop(urllib.parse.unquote(action["remove"]["path"]), None)
    for path in live:
        assert keys(s3, f"lake/{table}/{path}"), f"the log of {table} names a missing file {path}"
    rows = Counter()
    for date, count in live.values():
        rows[date] += count
    return rows


def raw_rows_per_date(s3, tmp):
    """Rows per event date of the raw Parquet input the generator wrote, read with pyarrow."""
    per_date = Counter()
    for key in keys(s3, f"lake/raw/{DATASET}/"):
        if key.endswith(".parquet"):
            local = tmp / key.replace("/", "_")
            s3.download_file(BUCKET, key, str(local))
            times = pq.read_table(local, columns=["event_time"]).column("event_time").to_pylist()
            per_date.update(str(t.date()) for t in times)
    return per_date


@pytest.fixture(scope="module")
def batch(s3, moto_s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3a")
    stdout = run_jobs(tmp, moto_s3, [["generate"], ["features"], ["train", "--model", "all"],
                                      ["score", "--last-days", "2"], ["summary"]])
    return {"tmp": tmp, "summaries": summaries(stdout)}


def test_every_job_ran_on_the_s3a_lake(batch, s3):
    done = batch["summaries"]
    assert list(done) == ["generate", "features", "train", "score", "summary"]
    assert all(done[job]["status"] == "done" for job in done), done
    assert sorted(p.name for p in batch["tmp"].iterdir()) == ["s3a.yaml"]  # nothing written locally
    assert keys(s3, f"lake/models/{DATASET}/"), "the model registry is not on S3"
    assert keys(s3, f"lake/reports/summary_{DATASET}_"), "the summary report is not on S3"


def test_the_feature_table_is_delta_on_s3a_with_every_raw_row(batch, s3, tmp_path):
    raw = raw_rows_per_date(s3, tmp_path)
    features = delta_rows(s3, f"features/{DATASET}")
    assert sum(raw.values()) == batch["summaries"]["generate"]["rows_out"] > 0
    assert features == raw  # synthetic rows are all valid: every one has its features, on its date


def test_the_scores_table_is_delta_on_s3a_with_the_scored_dates_rows(batch, s3):
    features = delta_rows(s3, f"features/{DATASET}")
    scores = delta_rows(s3, f"scores/{DATASET}")
    last_two = sorted(features)[-2:]
    assert sorted(scores) == last_two
    assert all(scores[day] == features[day] for day in last_two)
    assert batch["summaries"]["score"]["rows_out"] == sum(scores.values())


def test_the_summary_tables_are_delta_on_s3a(batch, s3):
    day = batch["summaries"]["summary"]["dates"][0]
    for table in SUMMARY_TABLES:
        rows = delta_rows(s3, f"summary/{DATASET}/{table}")
        assert rows[day] > 0, table
    assert delta_rows(s3, f"summary/{DATASET}/hourly")[day] == 24


def test_quicksight_gets_csv_and_manifests_naming_s3_objects(batch, s3):
    day = batch["summaries"]["summary"]["dates"][0]
    key = f"lake/summary/{DATASET}/quicksight/manifests/hourly_{day}.json"
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    [uri] = manifest["fileLocations"][0]["URIs"]
    assert uri.startswith(f"s3://{BUCKET}/lake/summary/{DATASET}/quicksight/hourly/date={day}/part-")
    assert uri.endswith(".csv")
    body = s3.get_object(Bucket=BUCKET, Key=uri[len(f"s3://{BUCKET}/"):])["Body"].read().decode()
    assert body.splitlines()[0].startswith("date,hour,") and len(body.splitlines()) == 1 + 24


def test_athena_ddl_uses_the_delta_form_with_s3_locations(batch, s3):
    for table, location in ((f"{DATASET}_scores", f"scores/{DATASET}"),
                            (f"{DATASET}_features", f"features/{DATASET}"),
                            (f"{DATASET}_summary_daily", f"summary/{DATASET}/daily")):
        key = f"lake/summary/{DATASET}/athena/{table}.sql"
        ddl = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        assert f"LOCATION 's3://{BUCKET}/lake/{location}/'\nTBLPROPERTIES ('table_type' = 'DELTA');" in ddl
        assert "PARTITIONED BY" not in ddl and "NOTE" not in ddl


# --------------------------------------------------------------------------- the stream on S3

STREAM_GOOD = 200


def landing_lines():
    """JSON lines for the landing prefix: STREAM_GOOD valid transactions on 2018-05-01 (the day after
    the lake's last date), 6 customers and 4 terminals, then one line that is not JSON."""
    lines = []
    for i in range(STREAM_GOOD):
        lines.append(json.dumps({
            "transaction_id": f"live{i:04d}", "event_time": f"2018-05-01T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
            "customer_id": f"c{i % 6}", "terminal_id": f"k{i % 4}", "amount": 5.0 + (i * 37) % 200,
            "label": 0}))
    return lines + ["this is not json"]


@pytest.fixture(scope="module")
def stream(batch, s3, moto_s3, tmp_path_factory):
    """The stream job on the landing prefix of the s3a lake (two files), available-now, no alerts;
    its sink, dead letters and checkpoint on S3 too (their defaults under storage.lake).
    """
    lines = landing_lines()
    half = len(lines) // 2
    for n, part in enumerate((lines[:half], lines[half:])):
        s3.put_object(Bucket=BUCKET, Key=f"lake/landing/{DATASET}/part-{n}.json", Body="\n".join(part) + "\n")
    tmp = tmp_path_factory.mktemp("s3a_stream")
    stdout = run_jobs(tmp, moto_s3, [["stream", "--source", "landing", "--trigger", "available-now",
                                      "--no-alerts"]])
    return summaries(stdout)["stream"]


def test_the_stream_scores_the_landing_files_on_the_s3a_lake(stream):
    assert stream["status"] == "done"
    assert (stream["rows_in"], stream["rows_out"], stream["extra"]["dead_letters"]) == (STREAM_GOOD + 1, STREAM_GOOD, 1)


def test_the_stream_sink_on_s3a_is_a_delta_table_with_every_event(stream, s3):
    sink = delta_rows(s3, f"stream/{DATASET}")
    assert sink == {"2018-05-01": STREAM_GOOD}


def test_the_stream_dead_letters_on_s3a_are_a_delta_table(stream, s3):
    assert sum(delta_rows(s3, f"dead_letter/{DATASET}").values()) == 1
