#!/usr/bin/env bash
# The CI smoke of chat-load: each scenario for about 10 s against one stack (chat-api and two
# gateways, started once by loadtest/lib/stack.sh), through loadtest/run.sh with
# LT_REUSE_STACK=1: churn, chat (pairs and groups of 10), connect, then storm, which kills gateway
# 1 and therefore runs last. Then storm once more on a stack of its own that refuses resumes
# (one sync at a time, none queued, no recent-event log, a short replay deadline at the gateways),
# so a dropped client's replay is refused and asked again from the same cursor: it must still
# lose nothing, and at least one refusal must have happened. Exits non-zero when any check of any
# scenario fails (loss, errors, not every user or session authenticated, a dropped client that did
# not resume), and ends with
#   chat-load-smoke: N passed, M failed
#
# The latency bounds are loose on purpose, as in smoke.sh: in make test this is the debug build on
# the machine's two shared cores. Extra NAME=VALUE arguments go to every run.sh call;
# LT_PROFILE=debug LT_NO_BUILD=1 reuses the debug build of make test.
set -uo pipefail
cd "$(dirname "$0")/.."

for kv in "$@"; do
  [[ $kv == *=* ]] || { echo "expected NAME=VALUE, got $kv" >&2; exit 2; }
  export "${kv?}"
done
export DRIVER=chat-load
source loadtest/lib/stack.sh
if [ "${LT_NO_BUILD:-0}" != 1 ]; then
  if [ "${LT_PROFILE:-release}" = release ]; then cargo build --release -q -p chat-load; else cargo build -q -p chat-load; fi
fi
trap 'lt_stack_stop; [ "${lt_logs_temporary:-0}" = 1 ] && rm -rf "$LT_LOGS"' EXIT
lt_stack_start || exit 1
export LT_REUSE_STACK=1 LT_NO_BUILD=1
LT_STACK_PIDS="api:${lt_stack_pids[0]} gw1:${lt_stack_pids[1]} gw2:${lt_stack_pids[2]}"
export LT_STACK_PIDS

# Loose on purpose (see above): they catch seconds-long stalls, not a slow debug build. On a busy
# hour the debug chat-api alone took 1.5 s to ack at p50 (send_ack_ms) in the chat run.
loose=(SESSION_AUTH_P99_MS=3000 AUTH_P95_MS=2000 AUTH_P99_MS=3000 DELIVERY_P95_MS=2500
  DELIVERY_P99_MS=5000 RESUME_P99_MS=15000)
runs=(
  "churn 400 RATE=20 RAMP_S=2 HOLD_S=6 DOWN_S=2 SESSION_S=4 MSGS=2"
  "chat 100 GROUP_SIZE=10 RAMP_S=2 HOLD_S=9 SETTLE_S=1 DRAIN_S=2 SEND_EVERY_S=2 GROUP_SEND_EVERY_S=4 FINAL_SPREAD_S=1"
  "connect 300 RAMP1_S=2 HOLD1_S=3 RAMP2_S=2 HOLD2_S=3"
  "storm 100 RAMP_S=2 HOLD_S=10 SETTLE_S=1 DRAIN_S=3 SEND_EVERY_S=2 KILL_AT_S=6 RECONNECT_JITTER_S=1 FINAL_SPREAD_S=1"
)
passed=0
failed=0
summary=()
extra=("$@")
# One run.sh call (its arguments, after a label); adds its checks to the totals and leaves its
# results folder in $run_dir.
one_run() {
  local label=$1 out rc p=0 f=0
  shift
  out=$(mktemp)
  loadtest/run.sh "$@" "${loose[@]}" "${extra[@]}" 2>&1 | tee "$out" | grep -vE '^\[ *[0-9]+s\]'
  rc=${PIPESTATUS[0]}
  run_dir=$(sed -n 's/^loadtest: \(.*\) ([a-z0-9-]* exit .*/\1/p' "$out" | tail -1)
  rm -f "$out"
  if [ -n "$run_dir" ] && [ -f "$run_dir/report.json" ]; then
    read -r p f < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["passed"], r["failed"])' "$run_dir/report.json")
  else
    f=1 # no report: the run did not get that far
  fi
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1 # the driver or the runner failed without a check
  passed=$((passed + p))
  failed=$((failed + f))
  summary+=("$label: $p passed, $f failed")
}
for run in "${runs[@]}"; do
  read -r -a words <<<"$run"
  one_run "${words[0]}" "${words[@]}"
done

lt_stack_stop
refusals=0
CHAT_SYNC_CONCURRENCY=1 CHAT_SYNC_QUEUE=0 CHAT_RECENT_LOG_SECS=0 CHAT_REPLAY_DEADLINE_MS=1000 \
  LT_REUSE_STACK=0 LT_STACK_PIDS= one_run "storm, resumes refused" \
  storm 100 RAMP_S=2 HOLD_S=10 SETTLE_S=1 DRAIN_S=3 SEND_EVERY_S=2 KILL_AT_S=6 RECONNECT_JITTER_S=1 FINAL_SPREAD_S=1
if [ -n "$run_dir" ] && [ -f "$run_dir/report.json" ]; then
  refusals=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["figures"].get("resumes_refused") or 0))' "$run_dir/report.json")
fi
if [ "$refusals" -gt 0 ]; then
  passed=$((passed + 1))
  summary+=("storm, resumes refused: $refusals resumes refused and asked again")
else
  failed=$((failed + 1))
  summary+=("storm, resumes refused: no resume was refused, so asking again went untested")
fi
printf '  %s\n' "${summary[@]}"
echo "chat-load-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
