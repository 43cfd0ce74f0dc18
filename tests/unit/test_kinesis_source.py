"""Contract tests of the Kinesis source adapter: the options each connector gets, checked without
Spark or AWS (option names from each connector's documentation: awslabs/spark-sql-kinesis-connector
for aws-kinesis, qubole/kinesis-sql for the Maven Central one)."""
import json

import pytest

from runtime.config import ConfigError, load_config
from runtime.sources import (KinesisSettings, StreamConfigError, aws_kinesis_options, is_loopback,
                             kinesis_session_settings, qubole_kinesis_options, trigger_seconds)


def settings(**overrides):
    base = dict(stream_name="tx", region="eu-west-1", endpoint_url=None, starting_position="TRIM_HORIZON",
                max_fetch_records=2500, trigger="30 seconds")
    return KinesisSettings(**{**base, **overrides})


# --------------------------------------------------------------------------- aws-kinesis


def test_aws_connector_gets_the_regional_endpoint_signing_region_and_batch_bounds_with_no_override():
    options = aws_kinesis_options(settings())
    assert options == {
        "kinesis.region": "eu-west-1",
        "kinesis.kinesisRegion": "eu-west-1",
        "kinesis.endpointUrl": "https://kinesis.eu-west-1.amazonaws.com",
        "kinesis.streamName": "tx",
        "kinesis.consumerType": "GetRecords",
        "kinesis.startingPosition": "TRIM_HORIZON",
        "kinesis.maxFetchRecordsPerShard": "2500",
        "kinesis.getRecords.numberOfRecordsPerFetch": "2500",
        "kinesis.maxFetchTimePerShardSec": "30",
    }


def test_aws_connector_local_endpoint_keeps_the_configured_signing_region():
    options = aws_kinesis_options(settings(endpoint_url="http://127.0.0.1:4566"))
    assert options["kinesis.endpointUrl"] == "http://127.0.0.1:4566"
    assert options["kinesis.kinesisRegion"] == "eu-west-1"


def test_aws_connector_fetch_time_is_at_least_ten_seconds_and_per_call_at_most_ten_thousand():
    options = aws_kinesis_options(settings(trigger="2 seconds", max_fetch_records=50000))
    assert options["kinesis.maxFetchTimePerShardSec"] == "10"
    assert options["kinesis.maxFetchRecordsPerShard"] == "50000"
    assert options["kinesis.getRecords.numberOfRecordsPerFetch"] == "10000"
    assert aws_kinesis_options(settings(trigger="1.5 min"))["kinesis.maxFetchTimePerShardSec"] == "90"


def test_aws_connector_subscribe_to_shard_needs_and_gets_a_consumer_name():
    options = aws_kinesis_options(settings(consumer_type="SubscribeToShard", consumer_name="zen-anomaly-tx"))
    assert options["kinesis.consumerType"] == "SubscribeToShard"
    assert options["kinesis.consumerName"] == "zen-anomaly-tx"
    assert "kinesis.consumerName" not in aws_kinesis_options(settings())
    with pytest.raises(StreamConfigError, match="consumer_name"):
        aws_kinesis_options(settings(consumer_type="SubscribeToShard"))


def test_aws_connector_at_timestamp_carries_its_time():
    options = aws_kinesis_options(settings(starting_position="AT_TIMESTAMP  2020-01-01T00:00:00Z"))
    assert options["kinesis.startingPosition"] == "AT_TIMESTAMP 2020-01-01T00:00:00Z"
    with pytest.raises(StreamConfigError, match="ISO 8601"):
        aws_kinesis_options(settings(starting_position="AT_TIMESTAMP yesterday"))


# --------------------------------------------------------------------------- Maven Central (qubole)


def test_qubole_connector_gets_endpoint_region_position_bounds_and_the_default_credential_chain():
    options = qubole_kinesis_options(settings())
    assert options == {
        "streamName": "tx",
        "endpointUrl": "https://kinesis.eu-west-1.amazonaws.com",
        "regionName": "eu-west-1",
        "startingposition": "trim_horizon",
        "awsUseInstanceProfile": "false",
        "kinesis.client.avoidEmptyBatches": "true",
        "kinesis.executor.maxFetchRecordsPerShard": "0",     # stops after one call of 2500 records
        "kinesis.executor.maxRecordPerRead": "2500",
        "kinesis.executor.maxFetchTimeInMs": "30000",
    }
    local = qubole_kinesis_options(settings(endpoint_url="http://localhost:5000", trigger="500 ms"))
    assert local["endpointUrl"] == "http://localhost:5000" and local["regionName"] == "eu-west-1"
    assert local["kinesis.executor.maxFetchTimeInMs"] == "1000"
    many = qubole_kinesis_options(settings(max_fetch_records=25000))
    # it stops once it has read MORE than the bound, after whole calls: 10,000 + 10,000 <= 25,000
    assert (many["kinesis.executor.maxFetchRecordsPerShard"], many["kinesis.executor.maxRecordPerRead"]) == ("15000", "10000")


def test_qubole_connector_at_timestamp_is_a_per_shard_position_in_epoch_millis():
    options = qubole_kinesis_options(settings(starting_position="AT_TIMESTAMP 2020-01-01T00:00:00Z"),
                                     shard_ids=["shardId-000000000000", "shardId-000000000001"])
    position = json.loads(options["startingposition"])
    assert position["metadata"]["streamName"] == "tx"
    assert position["shardId-000000000001"] == {"iteratorType": "AT_TIMESTAMP", "iteratorPosition": "1577836800000"}
    assert len(position) == 3
    with pytest.raises(StreamConfigError, match="shard ids"):
        qubole_kinesis_options(settings(starting_position="AT_TIMESTAMP 2020-01-01T00:00:00Z"))


def test_qubole_connector_refuses_subscribe_to_shard():
    with pytest.raises(StreamConfigError, match="GetRecords only"):
        qubole_kinesis_options(settings(consumer_type="SubscribeToShard", consumer_name="c"))
    with pytest.raises(ConfigError, match="stream.kinesis.consumer_type"):
        load_config(overrides=["stream.kinesis.connector=qubole", "stream.kinesis.consumer_type=SubscribeToShard"])


# --------------------------------------------------------------------------- JVM settings


@pytest.mark.parametrize("endpoint,local", [("http://127.0.0.1:5000", True), ("http://localhost:1", True),
                                            ("https://kinesis.us-east-1.amazonaws.com", False),
                                            ("http://127example.com", False)])
def test_loopback_endpoints_are_recognised(endpoint, local):
    assert is_loopback(endpoint) is local


def test_cbor_is_off_for_loopback_endpoints_only_per_sdk():
    qubole, env = kinesis_session_settings("qubole", "http://127.0.0.1:5000")
    assert qubole == {"spark.speculation": "false", "spark.executorEnv.AWS_CBOR_DISABLE": "true"}
    assert env == {"AWS_CBOR_DISABLE": "true"}
    aws, env = kinesis_session_settings("aws", "http://127.0.0.1:5000")
    assert aws["spark.driver.extraJavaOptions"] == aws["spark.executor.extraJavaOptions"] == "-Daws.cborEnabled=false"
    assert env == {} and "spark.executorEnv.AWS_CBOR_DISABLE" not in aws
    auto, env = kinesis_session_settings("auto", "http://localhost:5000")
    assert env and "spark.driver.extraJavaOptions" in auto and "spark.executorEnv.AWS_CBOR_DISABLE" in auto
    assert kinesis_session_settings("auto", "https://kinesis.us-east-1.amazonaws.com") == ({"spark.speculation": "false"}, {})


def test_trigger_seconds():
    assert trigger_seconds("5 seconds") == 5 and trigger_seconds("250ms") == 0.25 and trigger_seconds("2 min") == 120
    assert trigger_seconds("available-now") is None


def test_the_session_asks_for_the_maven_central_connector_only_for_a_kinesis_stream_that_may_use_it():
    from runtime.spark import session_settings

    landing = session_settings(load_config(overrides=["spark.extra_jars="]))
    assert "qubole" not in landing.get("spark.jars.packages", "")
    packages = session_settings(load_config(overrides=["spark.extra_jars=", "stream.source=kinesis"]))["spark.jars.packages"]
    assert packages.split(",") == ["io.delta:delta-spark_2.12:3.3.2", "com.qubole.spark:spark-sql-kinesis_2.12:1.2.0_spark-3.0"]
    aws = session_settings(load_config(overrides=["spark.extra_jars=", "stream.source=kinesis",
                                                  "stream.kinesis.connector=aws"]))
    assert "qubole" not in aws["spark.jars.packages"]


def test_the_stream_session_config_carries_the_jvm_settings_and_keeps_the_users_java_options(monkeypatch):
    from streaming.job import StreamOptions, session_config

    monkeypatch.setenv("AWS_CBOR_DISABLE", "unset")     # restored after the test
    config = load_config(overrides=["aws.endpoint_url=http://127.0.0.1:5999", "stream.kinesis.connector=auto",
                                    "spark.conf={spark.driver.extraJavaOptions: '-Xss4m'}"])
    options = StreamOptions(source="kinesis", input="tx", output="o", checkpoint="c", dead_letter="d",
                            trigger="5 seconds", alerts=False, engine="auto")
    chosen = session_config(config, options)
    assert chosen["stream"]["source"] == "kinesis" and config["stream"]["source"] == "landing"
    assert chosen["spark"]["conf"]["spark.driver.extraJavaOptions"] == "-Xss4m -Daws.cborEnabled=false"
    assert chosen["spark"]["conf"]["spark.executorEnv.AWS_CBOR_DISABLE"] == "true"
    import os

    assert os.environ["AWS_CBOR_DISABLE"] == "true", "the driver's own SDK v1 client reads its environment"
