#!/usr/bin/env bash
# The whole pipeline on the embedded default, step by step, each step the command a user would
# run by hand. Prints timings per step and where the reports are. Used by `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CONF=${CONF:-conf/local.yaml}
LAKE=$($PYTHON -c "from runtime.config import load_config; print(load_config('$CONF')['storage']['lake'])")
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
step "telemetry: generate"  job generate $T --set generate.telemetry.devices=1000
step "telemetry: features"  job features $T
step "telemetry: train"     job train $T --model all
step "telemetry: evaluate"  job evaluate $T
step "telemetry: score"     job score $T --last-days 3
step "telemetry: summary"   job summary $T

# Transactions: the Fraud Detection Handbook's simulator, 2,000 customers over 70 days.
X="--conf $CONF --dataset transactions"
step "transactions: generate" job generate $X --set generate.transactions.customers=2000 \
                                               --set generate.transactions.terminals=4000 \
                                               --set generate.transactions.days=70
step "transactions: features" job features $X
step "transactions: train"    job train $X --model all
step "transactions: evaluate" job evaluate $X
step "transactions: score"    job score $X --last-days 3
step "transactions: summary"  job summary $X

# Streaming: about a minute of replayed transactions scored as they land, alerts to a local SNS.
step "stream: replay + score + alerts" env PYTHON="$PYTHON" CONF="$CONF" bash scripts/stream_demo.sh

echo
echo "=== timings"
printf '%s\n' "${TIMINGS[@]}"
printf '%5d s  total\n' $(( $(date +%s) - START ))
echo
echo "reports:"
ls -1 "$LAKE"/reports/*.html 2>/dev/null | sed 's/^/  /'
