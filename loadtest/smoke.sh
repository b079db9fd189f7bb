#!/usr/bin/env bash
# The small k6 run for CI: chat.js with 200 VUs (SMOKE_VUS) in pairs and groups of 10 over two
# gateways, about 80 s of k6 (plus build and stack start), through loadtest/run.sh. Exits non-zero
# when a threshold or the loss check fails, and always ends with the line
#   k6-smoke: N passed, M failed
# Extra NAME=VALUE arguments go to run.sh (e.g. LT_PROFILE=debug to reuse the debug build).
set -uo pipefail
cd "$(dirname "$0")/.."

vus=${SMOKE_VUS:-200}
# The latency bounds here are loose on purpose: in make test this runs the debug build on the
# machine's two shared cores, where on a slow hour delivery p99 reached 270-870 ms with chat-api
# builds both before and after a change (docs/performance.md, 2026-12-03 afternoon). The smoke
# checks that every message arrives, none is lost, nothing errors, and that nothing stalls for
# seconds; the latency targets live in the release load tests (chat.js's own defaults).
out=$(mktemp)
loadtest/run.sh chat.js "$vus" RAMP_S=10 HOLD_S=65 SETTLE_S=3 DRAIN_S=5 SEND_EVERY_S=5 \
  GROUP_SIZE=10 GROUP_SEND_EVERY_S=20 DELIVERY_P95_MS=500 DELIVERY_P99_MS=2000 "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
dir=$(sed -n 's/^loadtest: \(.*\) ([a-z0-9-]* exit .*/\1/p' "$out" | tail -1)
rm -f "$out"

passed=0
failed=0
if [ -n "$dir" ] && [ -f "$dir/report.json" ]; then
  read -r passed failed < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["passed"], r["failed"])' "$dir/report.json")
else
  failed=1 # no report: the run did not get that far
fi
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1 # k6 or the runner failed without a threshold
echo "k6-smoke: $passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
