#!/usr/bin/env bash
# The whole pipeline on the embedded default, step by step, each step the command a user would
# run by hand. Prints timings per step, the tables written (Delta: each with a _delta_log; a
# warning names the count of those without one when storage.format is delta) and where the
# reports are. Used by `make run`.
#   SMALL=1   smaller data sets (200 devices; 500 customers over 40 days), for a quick check
#   SERVE=0   skip the scoring API stage
#   STREAM=0  skip the streaming stage; STREAM_SOURCE=landing streams from a landing folder, not Kinesis
set -euo pipefail
cd "$(dirname "$0")/.."

# the project virtualenv's interpreter (make install makes it) unless PYTHON names another
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
CONF=${CONF:-conf/local.yaml}
read -r LAKE FORMAT < <($PYTHON -c "from runtime.config import load_config; c = load_config('$CONF'); print(c['storage']['lake'], c['storage']['format'])")
if [[ "${SMALL:-0}" == 1 ]]; then
  DEVICES=200 CUSTOMERS=500 TERMINALS=1000 TX_DAYS=40
else
  DEVICES=1000 CUSTOMERS=2000 TERMINALS=4000 TX_DAYS=70
fi
declare -a TIMINGS=()
START=$(date +%s)

step() {  # step "title" command...
  local title=$1; shift
  echo
  echo "=== $title"
  echo "\$ $*"
  local t0=$(date +%s)
  "$@"
  local dt=$(( $(date +%s) - t0 ))
  TIMINGS+=("$(printf '%5d s  %s' "$dt" "$title")")
}

job() { $PYTHON -m jobs "$@"; }

# Telemetry: 14 days of sessions from 1,000 devices with injected anomalies of six kinds.
T="--conf $CONF --dataset telemetry"
step "telemetry: generate"  job generate $T --set generate.telemetry.devices=$DEVICES
step "telemetry: features"  job features $T
step "telemetry: train"     job train $T --model all
step "telemetry: evaluate"  job evaluate $T
step "telemetry: score"     job score $T --last-days 3
step "telemetry: summary"   job summary $T

# Transactions: the Fraud Detection Handbook's simulator, 2,000 customers over 70 days.
X="--conf $CONF --dataset transactions"
step "transactions: generate" job generate $X --set generate.transactions.customers=$CUSTOMERS \
                                               --set generate.transactions.terminals=$TERMINALS \
                                               --set generate.transactions.days=$TX_DAYS
step "transactions: features" job features $X
step "transactions: train"    job train $X --model all
step "transactions: evaluate" job evaluate $X
step "transactions: score"    job score $X --last-days 3
step "transactions: summary"  job summary $X
# The scoring API: the server started on a free port, a few events scored, stopped (SERVE=0 skips it).
if [[ "${SERVE:-1}" != 0 ]]; then
  step "transactions: serve (HTTP scoring API)" env PYTHON="$PYTHON" CONF="$CONF" bash scripts/serve_demo.sh
fi

# Streaming: about a minute of transactions replayed into a local Kinesis stream (moto) and scored
# as they arrive, alerts to a local SNS; STREAM_SOURCE=landing replays into a landing folder instead.
if [[ "${STREAM:-1}" != 0 ]]; then
  if [[ "${STREAM_SOURCE:-kinesis}" == landing ]]; then
    step "stream: replay to landing + score + alerts" env PYTHON="$PYTHON" CONF="$CONF" bash scripts/stream_demo.sh
  else
    step "stream: replay to Kinesis + score + alerts" env PYTHON="$PYTHON" CONF="$CONF" bash scripts/kinesis_demo.sh
  fi
fi

echo
echo "=== timings"
printf '%s\n' "${TIMINGS[@]}"
printf '%5d s  total\n' $(( $(date +%s) - START ))
echo
echo "tables (storage.format $FORMAT):"
missing=0
for table in "$LAKE"/features/* "$LAKE"/quarantine/* "$LAKE"/scores/* "$LAKE"/summary/*/* \
             "$LAKE"/stream/* "$LAKE"/dead_letter/*; do
  [[ -d "$table" ]] || continue
  case "$(basename "$table")" in quicksight|athena) continue ;; esac  # exports and DDL, not tables
  if [[ -d "$table/_delta_log" ]]; then
    echo "  delta    $table"
  else
    echo "  parquet  $table"
    [[ "$FORMAT" == delta ]] && missing=$((missing + 1))
  fi
done
echo
echo "reports:"
ls -1 "$LAKE"/reports/*.html 2>/dev/null | sed 's/^/  /'
if (( missing )); then
  echo "WARNING: $missing table(s) above without a _delta_log although storage.format is delta" >&2
fi
