#!/usr/bin/env bash
# Kill -9 a whole worker (its process group) at random moments of fine-tunes, N times
# (default 10): during a training step, during a checkpoint write, during export and
# registration. Runs tests/test_chaos.py with CHAOS_TRIALS=N (one Redis, one PostgreSQL
# database, one beat, a chain of N+1 workers: each trial's rescuer is the next trial's
# victim); every job must end `succeeded` with each epoch recorded once. Prints the table
# (trial, moment, outcome) and pytest's verdict. CHAOS_SEED=<n> replays a run's moments.
# Needs the local PostgreSQL (scripts/ensure_services.sh); the test starts its own Redis.
set -uo pipefail
cd "$(dirname "$0")/.."
n="${1:-10}"
py="${PYTHON:-.venv/bin/python}"
table="$(mktemp)"
log="$(mktemp)"
trap 'rm -f "$table" "$log"' EXIT
CHAOS_TRIALS="$n" CHAOS_TABLE="$table" PYTHONPATH="$PWD" HF_HUB_OFFLINE=1 \
  "$py" -m pytest -q -p no:cacheprovider tests/test_chaos.py >"$log" 2>&1
status=$?
if [ -s "$table" ]; then
  cat "$table"
else
  tail -n 40 "$log"
fi
tail -n 1 "$log"
exit "$status"
