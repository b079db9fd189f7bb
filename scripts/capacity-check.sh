#!/usr/bin/env bash
# Checks the capacity model against a run: prints the model's prediction of each process's CPU
# and peak RSS for a chat-load run, runs it, and prints predicted vs measured with the % error
# (docs/capacity.md, "Checking the model").
#
#   scripts/capacity-check.sh SCENARIO VUS [NAME=VALUE ...]
#   e.g. scripts/capacity-check.sh connect 10000 RAMP1_S=30 HOLD1_S=20 RAMP2_S=15 HOLD2_S=30
#        scripts/capacity-check.sh chat 10000 GROUP_SIZE=10 RAMP_S=20 HOLD_S=60
#        GATEWAYS=6 scripts/capacity-check.sh connect 100000 RAMP1_S=200 HOLD1_S=30 RAMP2_S=100 HOLD2_S=60
#
# SCENARIO is connect or chat; NAME=VALUE are chat-load's knobs (loadtest/run.sh), which the
# prediction reads too. CAPACITY_UNITS=FILE predicts from another unit table; PREDICT_ONLY=1 stops
# after the prediction. Exit status: 0 when every compared figure is within 25%, 1 otherwise, 2
# on a usage error or a failed run. The prediction is saved in the results folder
# (prediction.json, prediction.txt) beside the run's own files.
#
# The socket-write floor is measured before and after the run and kept beside it (floors.txt).
# FLOOR_SCALE=1 also prints the prediction scaled by the run's floor over the calibration's
# (floor_write_us in the table); the verdict stays on the unscaled figures: the floor moved
# 2.4x between two checks while the services' CPU for the same run moved 10-30%, so it is not
# a speed to scale CPU by (docs/capacity.md).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
scenario=$1 vus=$2
shift 2
case $scenario in connect | chat) ;; *) echo "SCENARIO must be connect or chat" >&2; exit 2 ;; esac
[[ $vus =~ ^[0-9]+$ ]] || { echo "VUS must be a positive integer" >&2; exit 2; }
for kv in "$@"; do
  [[ $kv == *=* ]] || { echo "expected NAME=VALUE, got $kv" >&2; exit 2; }
  export "${kv?}"
done

bin=$(scripts/lib/target-dir.sh)/release
if [ "${LT_NO_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p chat-capacity -p chat-api -p chat-gateway -p chat-provision -p chat-load -p chat-bench
fi
[ -x "$bin/chat-capacity" ] || { echo "no $bin/chat-capacity: build it or unset LT_NO_BUILD" >&2; exit 2; }

pred=$(mktemp)
trap 'rm -f "$pred"' EXIT
"$bin/chat-capacity" --json run "$scenario" --vus "$vus" --gateways "${GATEWAYS:-2}" >"$pred"
echo "== predicted: $scenario, $vus sockets over ${GATEWAYS:-2} gateways (units: ${CAPACITY_UNITS:-docs/capacity-units.toml})"
"$bin/chat-capacity" run "$scenario" --vus "$vus" --gateways "${GATEWAYS:-2}" | tee "$pred.txt"
[ "${PREDICT_ONLY:-0}" = 1 ] && exit 0

source scripts/lib/capacity-run.sh
floor_before=$(capacity_floor) || exit 2
LT_NO_BUILD=1 capacity_run "$scenario" "$vus" "$@" || exit 2
floor_after=$(capacity_floor) || exit 2
cp "$pred" "$CAPACITY_DIR/prediction.json"
mv "$pred.txt" "$CAPACITY_DIR/prediction.txt"
printf 'write_floor_before_us %s\nwrite_floor_after_us %s\n' "$floor_before" "$floor_after" >"$CAPACITY_DIR/floors.txt"
calibration_floor=$(sed -n 's/^floor_write_us *= *\([0-9.]*\).*/\1/p' "${CAPACITY_UNITS:-docs/capacity-units.toml}")
scale=()
if [ "${FLOOR_SCALE:-0}" = 1 ]; then
  scale=(--floor-us "$(python3 -c "print(($floor_before + $floor_after) / 2)")" --calibration-floor-us "$calibration_floor")
fi
echo
echo "== predicted vs measured"
python3 loadtest/lib/capacity.py compare "$CAPACITY_DIR/prediction.json" "$CAPACITY_DIR" "${scale[@]}" | tee "$CAPACITY_DIR/capacity-check.txt"
