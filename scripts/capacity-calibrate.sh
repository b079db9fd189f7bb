#!/usr/bin/env bash
# Measures the capacity model's unit costs (docs/capacity-units.toml) on this machine: the
# socket-write floor before and after the chat-load runs, and solves for each unit
# (loadtest/lib/capacity.py solve):
#   1-2. connect, SIZE and 10 x SIZE idle sockets over the same ramps: per session, per second of
#        arrivals, per idle socket-second (the last hold's rate; for Redis, the line through the
#        last holds: per socket and per process), RSS per idle socket;
#   3-4. chat, SIZE users in pairs, one message every 4 s and every 1.5 s;
#   5.   chat, SIZE users, groups of 10 every 10 s and pairs every 20 s:
#        per message, per delivery, per second of sending (three runs, three unknowns), the final
#        replays, RSS per chatting socket;
#   6.   chat, SIZE users over four gateways, groups of 10 every 5 s and no pairs: one publish a
#        message that four gateways read, where pairs publish twice to two and the mix of 5
#        publishes 1.33 times to two, so chat-api's and Redis's cost a message, a publish and
#        (Redis) a delivery to a gateway come apart (their units only: the other processes'
#        per-process terms assume two gateways).
# Each shape runs REPEATS times (default 2), the rounds one after the other, and the solve
# takes them all: a run's CPU moves by 15-30% from one run to the next of the same shape, so
# one run of each is not enough.
#
#   scripts/capacity-calibrate.sh [SIZE]      writes the table to stdout (SIZE: 2,000)
#   scripts/capacity-calibrate.sh [SIZE] > docs/capacity-units.toml
#
# Each run has its own private redis-server and mariadbd (scripts/lib/capacity-run.sh). Run it on
# a machine as quiet as it can be; then `cargo test -p chat-capacity` says whether
# k8s/overlays/prod/capacity.yaml must be regenerated (make capacity-k8s).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-2000}
[[ $size =~ ^[0-9]+$ ]] && [ "$size" -ge 100 ] || { echo "SIZE must be a number >= 100" >&2; exit 2; }
bin=$(scripts/lib/target-dir.sh)/release
if [ "${LT_NO_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p chat-api -p chat-gateway -p chat-provision -p chat-load -p chat-bench >&2
fi
source scripts/lib/capacity-run.sh
# The floor before and after the runs: the VM's speed may change while they run.
floor_before=$(capacity_floor) || exit 2
repeats=${REPEATS:-2}
[[ $repeats =~ ^[1-9]$ ]] || { echo "REPEATS must be 1 to 9" >&2; exit 2; }
connect_a=() connect_b=() pairs_a=() pairs_b=() groups=() groups_wide=()
{
  for _ in $(seq "$repeats"); do
    capacity_run connect "$size" RAMP1_S=20 HOLD1_S=10 RAMP2_S=10 HOLD2_S=40
    connect_a+=("$CAPACITY_DIR")
    capacity_run connect $((10 * size)) RAMP1_S=20 HOLD1_S=10 RAMP2_S=10 HOLD2_S=40
    connect_b+=("$CAPACITY_DIR")
    capacity_run chat "$size" RAMP_S=10 HOLD_S=60 SEND_EVERY_S=4
    pairs_a+=("$CAPACITY_DIR")
    capacity_run chat "$size" RAMP_S=10 HOLD_S=60 SEND_EVERY_S=1.5
    pairs_b+=("$CAPACITY_DIR")
    capacity_run chat "$size" RAMP_S=10 HOLD_S=60 SEND_EVERY_S=20 GROUP_SIZE=10 GROUP_SEND_EVERY_S=10
    groups+=("$CAPACITY_DIR")
    GATEWAYS=4 capacity_run chat "$size" RAMP_S=10 HOLD_S=60 SEND_EVERY_S=0 GROUP_SIZE=10 GROUP_SEND_EVERY_S=5
    groups_wide+=("$CAPACITY_DIR")
  done
} >&2
floor_after=$(capacity_floor) || exit 2
runs() { local IFS=,; echo "$*"; }
python3 loadtest/lib/capacity.py solve "$(runs "${connect_a[@]}")" "$(runs "${connect_b[@]}")" \
  "$(runs "${pairs_a[@]}")" "$(runs "${pairs_b[@]}")" "$(runs "${groups[@]}")" "$(runs "${groups_wide[@]}")" \
  "$floor_before" "$floor_after" "$(date -u +%Y-%m-%d)"
