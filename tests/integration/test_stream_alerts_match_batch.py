"""The stream's alerts are the nightly job's flags: three days after training, replayed through the
stream job (warm from the batch feature table, the champion models, SNS on moto), alert exactly
the events the score job flags for those days - no cold-start burst, none missed.
"""
import json

from aws_local import local_aws
from pyspark.sql import functions as F
from test_stream import drain, topic_with_queue, write_landing


def test_the_streams_alerts_are_the_nightly_jobs_flags_for_the_same_days(spark, lake, tmp_path):
    from jobs import score, stream
    from runtime.config import load_config
    from runtime.storage import input_format
    from streaming.replay import read_records

    args = lake["args"]
    config = load_config(args[1], ["dataset=transactions"])
    features = spark.read.format("delta").load(config.path("features"))
    days = sorted(r["date"] for r in features.select("date").distinct().collect())[-3:]
    first, last = str(days[0]), str(days[-1])

    scores = tmp_path / "scores"
    assert score.main(args + ["--from", first, "--to", last, "--output", str(scores)]) == 0
    scored = spark.read.format("delta").load(str(scores))
    flagged = {r["transaction_id"] for r in scored.where(F.col("is_anomaly")).select("transaction_id").collect()}
    assert len(flagged) >= 3, "the nightly job flags a few of these days' events"

    # those days' raw events as the replay job sends them (JSON, event-time order), in landing files
    window = tmp_path / "window"
    raw = spark.read.format(input_format(config.path("raw"), config["schema"]["transactions"]["format"])).load(
        config.path("raw"))
    raw.where(F.to_date("event_time").between(F.lit(first), F.lit(last))).write.parquet(str(window))
    lines = [payload.decode() for payload, _ in read_records(spark, str(window), "parquet", order_by="event_time",
                                                             key_column=None, limit=None)]
    assert len(lines) == scored.count()
    write_landing(tmp_path / "landing", lines, per_file=max(1, len(lines) // 3 + 1))

    with local_aws() as endpoint:
        topic, sqs, queue = topic_with_queue(endpoint)
        code = stream.main(args + [
            "--source", "landing", "--input", str(tmp_path / "landing"), "--trigger", "available-now",
            "--output", str(tmp_path / "sink"), "--checkpoint", str(tmp_path / "ckpt"),
            "--dead-letter", str(tmp_path / "dead"), "--set", f"aws.endpoint_url={endpoint}",
            "--set", f"stream.alerts.topic_arn={topic}", "--set", "stream.alerts.rate_per_second=10000"])
        assert code == 0
        alerted = [m["MessageAttributes"]["event_id"]["StringValue"] for m in drain(sqs, queue)]

    assert len(alerted) == len(set(alerted)), "an alert went out twice"
    sink = spark.read.format("delta").load(str(tmp_path / "sink"))
    assert sink.count() == len(lines), "every replayed event was scored"
    assert set(alerted) == flagged, (sorted(set(alerted) - flagged)[:5], sorted(flagged - set(alerted))[:5])
    stream_risk = {r["transaction_id"]: r["risk"] for r in sink.select("transaction_id", "risk").collect()}
    batch_risk = {r["transaction_id"]: r["risk"] for r in scored.select("transaction_id", "risk").collect()}
    assert stream_risk.keys() == batch_risk.keys()
    worst = max(abs(stream_risk[k] - batch_risk[k]) for k in batch_risk)
    assert worst <= 1e-9, json.dumps({"max risk difference": worst})
