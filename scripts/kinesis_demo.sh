#!/usr/bin/env bash
# The streaming stage of `make run` through Kinesis: moto's server on a free loopback port plays
# Kinesis and SNS; the replay job puts the newest window of transactions (after the training
# window, inside the nightly scoring window) into a Kinesis stream
# (stream.kinesis.shards shards, created here) at a rate while the stream job reads it through the
# Kinesis connector (stream.kinesis.connector: the Maven Central one off EMR), scores it and
# alerts, warm from the batch feature table; the stream job stops itself once nothing new has
# arrived for a while. Prints records put, scored, alerts, their precision against the labels,
# how many equal the nightly job's flags for the same events, and the event-to-sink latency.
#   STREAM_SECONDS (60) x STREAM_RATE (100/s) records replayed; REPLAY_FIRST=1 replays before the
#   stream job starts instead of beside it
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CONF=${CONF:-conf/local.yaml}
SECONDS_TO_RUN=${STREAM_SECONDS:-60}
RATE=${STREAM_RATE:-100}
read -r LAKE STREAM SHARDS < <($PYTHON -c "
from runtime.config import load_config
c = load_config('$CONF')
k = c['stream']['kinesis']
print(c['storage']['lake'], k['stream_name'] or c['stream']['replay']['stream_name'] or 'zen-anomaly-transactions', k['shards'])")
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1

mkdir -p "$LAKE"
source scripts/local_moto.sh
moto_start "$LAKE/moto.log"
trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
TOPIC=$(moto_topic zen-anomaly-alerts)
echo "local Kinesis and SNS (moto) on http://127.0.0.1:$PORT: stream $STREAM ($SHARDS shards), topic $TOPIC"

ARGS=(--conf "$CONF" --dataset transactions --set "aws.endpoint_url=http://127.0.0.1:$PORT"
  --set "stream.alerts.topic_arn=$TOPIC" --set stream.alerts.rate_per_second=200)
rm -rf "$LAKE/stream/transactions" "$LAKE/checkpoints/stream/transactions" "$LAKE/dead_letter/transactions"
$PYTHON -c "
import boto3
from runtime.sources import ensure_kinesis_stream
ensure_kinesis_stream(boto3.client('kinesis', endpoint_url='http://127.0.0.1:$PORT', region_name='us-east-1'), '$STREAM', $SHARDS)"

# The replay runs beside the stream job (events arrive while it reads: a real latency); the stream
# job stops 20 s after the last record it saw, or at the replay's length plus 3 minutes.
$PYTHON -m jobs replay "${ARGS[@]}" --mode kinesis --stream "$STREAM" --rate "$RATE" \
  --last $((RATE * SECONDS_TO_RUN)) --order-by event_time 2>&1 | tee "$LAKE/replay.log" | grep -E '^\[replay\]|Error|error:' &
REPLAY=$!
if [[ "${REPLAY_FIRST:-0}" == 1 ]]; then wait $REPLAY; fi   # one Spark process at a time (latency then includes the wait)
$PYTHON -m jobs stream "${ARGS[@]}" --source kinesis --input "$STREAM" --trigger "5 seconds" \
  --stop-when-idle 20 --run-seconds $((SECONDS_TO_RUN + 180)) 2>&1 | tee "$LAKE/stream.log" | grep -E '^\[stream\]|Error|error:'
wait $REPLAY || true
$PYTHON - "$LAKE" "$CONF" <<'PY'
import re
import sys
lake, conf = sys.argv[1:3]
put = re.search(r"records sent ([\d,]*\d)", open(f"{lake}/replay.log").read())
log = open(f"{lake}/stream.log").read()
done = re.search(r"([\d,]+) events scored, ([\d,]+) alerts raised, ([\d,]+) dead letters", log)
p95 = [float(x) for x in re.findall(r"p95 ([\d.]+) s", log)]
p50 = [float(x) for x in re.findall(r"latency p50 ([\d.]+) s", log)]
print(f"[kinesis] records put {put.group(1) if put else '?'}, scored {done.group(1) if done else '?'}, "
      f"alerts {done.group(2) if done else '?'}, dead letters {done.group(3) if done else '?'}; event-to-sink "
      f"latency p50 {sorted(p50)[len(p50) // 2] if p50 else float('nan'):.1f} s (median batch), "
      f"worst batch p95 {max(p95) if p95 else float('nan'):.1f} s")
try:   # the alerts against the labels and against the nightly job's flags for the same events
    from deltalake import DeltaTable
    from runtime.config import load_config
    scores_path = load_config(conf, ["dataset=transactions"]).path("scores")
    sink = DeltaTable(f"{lake}/stream/transactions").to_pandas(columns=["transaction_id", "is_anomaly", "label"])
    flagged = sink[sink["is_anomaly"]]
    frauds = int((flagged["label"] == 1).sum())
    nightly = DeltaTable(scores_path).to_pandas(columns=["transaction_id", "is_anomaly"])
    nightly = nightly[nightly["transaction_id"].isin(sink["transaction_id"])]
    batch_flags = set(nightly.loc[nightly["is_anomaly"], "transaction_id"])
    # the stream's flags on the events the nightly job scored too (its window may be shorter)
    stream_flags = set(flagged["transaction_id"]) & set(nightly["transaction_id"])
    print(f"[kinesis] alert precision {frauds:,} frauds / {len(flagged):,} flagged = "
          f"{frauds / max(len(flagged), 1):.3f}; on the {len(nightly):,} of these {len(sink):,} events the nightly "
          f"job scored too, it flagged {len(batch_flags):,}: {len(stream_flags & batch_flags):,} flagged by both, "
          f"{len(stream_flags - batch_flags):,} by the stream only, {len(batch_flags - stream_flags):,} by the batch only")
except Exception as exc:   # a summary line, never the stage's failure
    print(f"[kinesis] alert precision and batch agreement: not available ({type(exc).__name__}: {exc})")
PY
