#!/usr/bin/env bash
# The scoring API for a moment (make run's serve stage): `python -m jobs serve` on a free loopback
# port, three requests (a large amount for a known customer, a small one, a record with a negative
# amount), their answers printed, then the server stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CONF=${CONF:-conf/local.yaml}
LOG=$(mktemp -t serve-demo.XXXXXX.log)
$PYTHON -m jobs serve --conf "$CONF" --dataset transactions --host 127.0.0.1 --port 0 >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
BASE=""
for _ in $(seq 1 360); do
  BASE=$(grep -o 'listening on http://[0-9.:]*' "$LOG" | head -1 | cut -d' ' -f3 || true)
  [[ -n "$BASE" ]] && break
  if ! kill -0 "$PID" 2>/dev/null; then cat "$LOG" >&2; echo "the server exited before listening" >&2; exit 1; fi
  sleep 0.5
done
[[ -n "$BASE" ]] || { cat "$LOG" >&2; echo "the server did not start" >&2; exit 1; }
grep '^\[serve\]' "$LOG" || true
$PYTHON - "$BASE" <<'PY'
import json, sys, urllib.error, urllib.request

base = sys.argv[1]


def call(path, body=None):
    request = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


status, health = call("/health")
print(f"GET /health -> {status}: {health['history_rows']:,} events of history up to {health['history_newest']}, "
      f"models {health['model_versions']}")
_, sample = call("/v1/sample")
events = [sample, dict(sample, transaction_id=sample["transaction_id"] + "-small", amount=12.5),
          dict(sample, transaction_id=sample["transaction_id"] + "-bad", amount=-3)]
for event in events:
    status, answer = call("/v1/score", event)
    if status == 200:
        r = answer["results"][0]
        print(f"POST /v1/score amount {event['amount']:>8} -> {status}: risk {r['risk']:.3f} "
              f"{'ANOMALY' if r['is_anomaly'] else 'normal'}; reasons {r['reasons']}; "
              f"scores {{rcf {r['scores'].get('rcf', float('nan')):.3f}, logistic {r['scores'].get('logistic', float('nan')):.3f}}}")
    else:
        print(f"POST /v1/score amount {event['amount']:>8} -> {status}: {answer['error']}: "
              f"{[x['reason'] for x in answer.get('rejected', [])]}")
print(f"demo page: {base}/ (while `make serve` runs)")
PY
kill "$PID"
wait "$PID" 2>/dev/null || true
grep '^\[serve\] status' "$LOG" || true
