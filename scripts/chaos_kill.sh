#!/usr/bin/env bash
# Kill -9 a whole worker (its process group) at a random moment of a fine-tune, N times
# (default 10): during loading, a step, a checkpoint write or registration. Each trial is
# tests/test_lifeline.py's kill trial (beat running, a new worker started after the kill):
# the job must end `succeeded` with each epoch recorded once. Prints a table and
# "N passed, M failed". Needs the local PostgreSQL and Redis (scripts/ensure_services.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
n="${1:-10}"
py="${PYTHON:-.venv/bin/python}"
failed=0
printf '%-6s %-12s %s\n' trial "kill at (s)" outcome
for trial in $(seq 1 "$n"); do
  moment=$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.1f", rand() * 25 }')
  log="$(mktemp)"
  if CHAOS_KILL_AFTER_S="$moment" "$py" -m pytest -q -p no:cacheprovider tests/test_lifeline.py \
      -k "test_whole_worker_killed_in_epoch_2_is_finished_by_a_new_worker and not flush" \
      >"$log" 2>&1; then
    outcome="succeeded, each epoch once"
  else
    outcome="FAILED: $(grep -m1 -E 'AssertionError|Error' "$log" | cut -c1-80)"
    failed=$((failed + 1))
  fi
  printf '%-6s %-12s %s\n' "$trial" "$moment" "$outcome"
  rm -f "$log"
done
echo "$((n - failed)) passed, ${failed} failed"
[ "$failed" -eq 0 ]
