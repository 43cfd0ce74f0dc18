"""The pipeline with every table on ``s3a://``: generate -> features -> train -> score -> summary
and the stream, on the lake bucket of the AWS stack deployed into moto (the shared S3 end-to-end
fixture, stack_fixture.py: moto's server in its own process, the jobs in one subprocess, one JVM).

Nothing but the config points the jobs at S3: ``storage.lake`` an ``s3a://`` URI from the stack's
outputs and ``aws.endpoint_url`` the server, from which ``runtime.spark`` builds the s3a settings
of the session. What they wrote is then read here without Spark, through boto3: every table the
jobs write in ``storage.format`` has a Delta log, and replaying that log (add and remove actions,
each add with its partition values and row count) gives the rows the raw input and the jobs' own
summaries say it holds.
"""
import json
import urllib.parse
from collections import Counter

import boto3
import pyarrow.parquet as pq
import pytest
from aws_local import REGION
from stack_fixture import FIREHOSE_RUN, LANDING_DATE, LANDING_GOOD

SUMMARY_TABLES = ("daily", "hourly", "entities", "histogram", "top_entities", "expected")

pytestmark = pytest.mark.timeout(1500)

BUCKET = PREFIX = DATASET = None    # the stack's lake bucket, the lake's key prefix, the data set: set by `lake`


@pytest.fixture(scope="module")
def s3(stack_moto):
    return boto3.client("s3", region_name=REGION, endpoint_url=stack_moto)


@pytest.fixture(scope="module", autouse=True)
def lake(stack_pipeline):
    """The lake the pipeline wrote: s3a://BUCKET/PREFIX (storage.lake of the stack's config)."""
    global BUCKET, PREFIX, DATASET
    BUCKET, PREFIX = stack_pipeline["lake"][len("s3a://"):].rstrip("/").split("/", 1)
    DATASET = stack_pipeline["config"]["dataset"]
    return stack_pipeline


def keys(s3, prefix):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def delta_rows(s3, table):
    """Rows per partition value (or None for an unpartitioned table) of the Delta table at
    ``PREFIX/<table>``, from replaying its JSON commits: the add actions not removed later, each
    with its partition values and ``numRecords`` statistic. Fails when the table has no log.
    """
    prefix = f"{PREFIX}/{table}/_delta_log/"
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
        assert keys(s3, f"{PREFIX}/{table}/{path}"), f"the log of {table} names a missing file {path}"
    rows = Counter()
    for date, count in live.values():
        rows[date] += count
    return rows


def raw_rows_per_date(s3, tmp):
    """Rows per event date of the raw Parquet input the generator wrote, read with pyarrow."""
    per_date = Counter()
    for key in keys(s3, f"{PREFIX}/raw/{DATASET}/"):
        if key.endswith(".parquet"):
            local = tmp / key.replace("/", "_")
            s3.download_file(BUCKET, key, str(local))
            times = pq.read_table(local, columns=["event_time"]).column("event_time").to_pylist()
            per_date.update(str(t.date()) for t in times)
    return per_date


@pytest.fixture(scope="module")
def batch(lake):
    return {"tmp": lake["tmp"], "summaries": lake["summaries"]}


def test_every_job_ran_on_the_s3a_lake(batch, s3):
    done = batch["summaries"]
    assert list(done)[:5] == ["generate", "features", "train", "score", "summary"]
    assert all(done[job]["status"] == "done" for job in done), done
    # nothing written locally: the configs and the replay's input only
    assert {p.name for p in batch["tmp"].iterdir()} <= {"emr.yaml", "local.yaml", "events.json"}
    assert keys(s3, f"{PREFIX}/models/{DATASET}/"), "the model registry is not on S3"
    assert keys(s3, f"{PREFIX}/reports/summary_{DATASET}_"), "the summary report is not on S3"


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
    key = f"{PREFIX}/summary/{DATASET}/quicksight/manifests/hourly_{day}.json"
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    [uri] = manifest["fileLocations"][0]["URIs"]
    assert uri.startswith(f"s3://{BUCKET}/{PREFIX}/summary/{DATASET}/quicksight/hourly/date={day}/part-")
    assert uri.endswith(".csv")
    body = s3.get_object(Bucket=BUCKET, Key=uri[len(f"s3://{BUCKET}/"):])["Body"].read().decode()
    assert body.splitlines()[0].startswith("date,hour,") and len(body.splitlines()) == 1 + 24


def test_athena_ddl_uses_the_delta_form_with_s3_locations(batch, s3):
    for table, location in ((f"{DATASET}_scores", f"scores/{DATASET}"),
                            (f"{DATASET}_features", f"features/{DATASET}"),
                            (f"{DATASET}_summary_daily", f"summary/{DATASET}/daily")):
        key = f"{PREFIX}/summary/{DATASET}/athena/{table}.sql"
        ddl = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        assert f"LOCATION 's3://{BUCKET}/{PREFIX}/{location}/'\nTBLPROPERTIES ('table_type' = 'DELTA');" in ddl
        assert "PARTITIONED BY" not in ddl and "NOTE" not in ddl


# --------------------------------------------------------------------------- the stream on S3


@pytest.fixture(scope="module")
def stream(lake):
    """The stream job on landing files laid out as Firehose writes them under the stack's landing
    prefix (two files), available-now, no alerts; its sink, dead letters and checkpoint on S3 too."""
    return lake["landing_stream"]


def test_the_stream_scores_the_landing_files_on_the_s3a_lake(stream):
    assert stream["status"] == "done"
    assert (stream["rows_in"], stream["rows_out"], stream["extra"]["dead_letters"]) == (LANDING_GOOD + 1, LANDING_GOOD, 1)


def test_the_stream_sink_on_s3a_is_a_delta_table_with_every_event(stream, s3):
    sink = delta_rows(s3, f"{FIREHOSE_RUN}/stream")
    assert sink == {LANDING_DATE: LANDING_GOOD}


def test_the_stream_dead_letters_on_s3a_are_a_delta_table(stream, s3):
    assert sum(delta_rows(s3, f"{FIREHOSE_RUN}/dead_letter").values()) == 1
