#!/usr/bin/env bash
# A local Kinesis (and SNS, S3) for people: moto's server on a free loopback port, in the
# background, with the config's Kinesis stream created (stream.kinesis.stream_name, else
# stream.replay.stream_name; stream.kinesis.shards shards). Prints the endpoint, the --set options
# that point the jobs at it, and how to stop it. Used by `make kinesis-local`.
#   MOTO_PORT=N   use this port instead of a free one
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CONF=${CONF:-conf/local.yaml}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
mkdir -p .make
LOG=.make/kinesis-local.$$.log
source scripts/local_moto.sh
moto_start "$LOG"
URL=$MOTO_URL PID=$MOTO_PID
STREAM=$($PYTHON - "$CONF" "$URL" <<'PY'
import sys
import boto3
from runtime.config import load_config
from runtime.sources import ensure_kinesis_stream
conf = load_config(sys.argv[1])["stream"]
name = conf["kinesis"]["stream_name"] or conf["replay"]["stream_name"] or "zen-anomaly-events"
kinesis = boto3.client("kinesis", endpoint_url=sys.argv[2], region_name="us-east-1")
ensure_kinesis_stream(kinesis, name, conf["kinesis"]["shards"])
print(f"{name} {conf['kinesis']['shards']}")
PY
)
read -r NAME SHARDS <<<"$STREAM"
cat <<TXT
local Kinesis (moto) at $URL, pid $PID, log $LOG
stream $NAME with $SHARDS shards (credentials: any, e.g. AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local)
replay into it:  python -m jobs replay --conf $CONF --dataset transactions --mode kinesis --stream $NAME --set aws.endpoint_url=$URL
stream from it:  python -m jobs stream --conf $CONF --dataset transactions --source kinesis --input $NAME --trigger '5 seconds' --no-alerts --set aws.endpoint_url=$URL
stop it:         kill $PID
TXT
