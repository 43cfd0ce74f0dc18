# Sourced by the scripts that need a local AWS (moto's server): stream_demo.sh, kinesis_demo.sh,
# kinesis_local.sh. Needs PYTHON set.
#   moto_start LOG    start moto on 127.0.0.1:$MOTO_PORT (a free port when unset), output to LOG;
#                     sets PORT, MOTO_URL and MOTO_PID once it answers (exits 1 if it dies first)
#   moto_topic NAME   create the SNS topic NAME there and print its ARN

moto_start() {
  local log=$1
  PORT=${MOTO_PORT:-$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  MOTO_URL="http://127.0.0.1:$PORT"
  nohup $PYTHON -m moto.server -H 127.0.0.1 -p "$PORT" >"$log" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 100); do
    $PYTHON -c "import urllib.request; urllib.request.urlopen('$MOTO_URL/moto-api/')" 2>/dev/null && return 0
    kill -0 "$MOTO_PID" 2>/dev/null || { echo "moto did not start, see $log" >&2; exit 1; }
    sleep 0.2
  done
  kill "$MOTO_PID" 2>/dev/null || true
  echo "moto did not answer on $MOTO_URL within 20 s, see $log" >&2
  exit 1
}

moto_topic() {
  $PYTHON -c "import boto3, sys; print(boto3.client('sns', endpoint_url='$MOTO_URL', region_name='us-east-1').create_topic(Name=sys.argv[1])['TopicArn'])" "$1"
}
