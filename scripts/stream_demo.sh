#!/usr/bin/env bash
# A short streaming stage for `make run`: replay transactions into the landing folder for about a
# minute while the stream job scores them, with SNS alerts going to a local AWS-compatible server
# (moto), so the whole path runs without a cloud account.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CONF=${CONF:-conf/local.yaml}
SECONDS_TO_RUN=${STREAM_SECONDS:-60}
RATE=${STREAM_RATE:-200}
LAKE=$($PYTHON -c "from runtime.config import load_config; print(load_config('$CONF')['storage']['lake'])")
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1

mkdir -p "$LAKE"
source scripts/local_moto.sh
moto_start "$LAKE/moto.log"
trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
TOPIC=$(moto_topic zen-anomaly-alerts)
echo "local SNS topic $TOPIC on port $PORT"

# Small micro-batches (about 2,000 events) and alerts at up to 200/s for the demo; the defaults
# (stream.max_files_per_trigger, stream.alerts.rate_per_second) are tuned for a real stream.
STREAM_ARGS=(--conf "$CONF" --dataset transactions
  --set "aws.endpoint_url=http://127.0.0.1:$PORT" --set "stream.alerts.topic_arn=$TOPIC"
  --set stream.max_files_per_trigger=10 --set stream.alerts.rate_per_second=200)
rm -rf "$LAKE/landing/transactions" "$LAKE/stream/transactions" "$LAKE/checkpoints/stream/transactions" \
       "$LAKE/dead_letter/transactions"
mkdir -p "$LAKE/landing/transactions"

# Replay starts with the stream, which scores every 5 seconds and stops itself a little after the
# replay ends; a restart from the checkpoint with available-now then scores whatever is left, so
# every replayed event ends in the sink exactly once however fast this machine is.
$PYTHON -m jobs replay "${STREAM_ARGS[@]}" --mode landing --rate "$RATE" --batch-size "$RATE" \
  --limit $((RATE * SECONDS_TO_RUN)) &
REPLAY=$!
$PYTHON -m jobs stream "${STREAM_ARGS[@]}" --trigger "5 seconds" --run-seconds $((SECONDS_TO_RUN + 30))
wait $REPLAY
echo "restarting the stream from its checkpoint to score what is left (available-now) ..."
$PYTHON -m jobs stream "${STREAM_ARGS[@]}" --trigger available-now
$PYTHON - "$LAKE" <<'PY'
import sys
import pyarrow.dataset as ds
sink = ds.dataset(f"{sys.argv[1]}/stream/transactions", format="parquet", partitioning="hive").to_table(
    columns=["transaction_id", "is_anomaly"]).to_pandas()
print(f"[stream] sink holds {len(sink):,} events ({sink['transaction_id'].nunique():,} distinct), "
      f"{int(sink['is_anomaly'].sum()):,} anomalies")
PY
