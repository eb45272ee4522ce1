#!/usr/bin/env bash
# Kill a worker mid fine-tune N times (default 3) and check each job resumes and finishes.
# Needs the local PostgreSQL and Redis (scripts/ensure_services.sh). Prints "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
n="${1:-3}"
log="$(mktemp)"
KILL_TRIALS="$n" .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_reliability.py \
  -k test_worker_killed_after_an_epoch_resumes_and_finishes >"$log" 2>&1
passed=$(grep -oE '[0-9]+ passed' "$log" | tail -n1 | grep -oE '[0-9]+' || echo 0)
failed=$(grep -oE '[0-9]+ (failed|error)' "$log" | awk '{s+=$1} END {print s+0}')
[ "${passed:-0}" -eq 0 ] && [ "${failed:-0}" -eq 0 ] && failed="$n"
tail -n 5 "$log" >&2
echo "${passed:-0} passed, ${failed} failed"
[ "${failed}" -eq 0 ]
