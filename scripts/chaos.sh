#!/usr/bin/env bash
# `make chaos`: the full-size chaos suite (crates/chat-testkit/tests/chaos.rs with
# CHAT_CHAOS_SCALE=full): 240 simulated clients on 3 gateways, >= 10,000 messages, while a
# gateway is SIGKILLed, Redis (a private redis-server) is restarted, chat-api's MySQL is cut
# for 10 s and a gateway is SIGTERMed. Prints one line per fault and fails on any loss, any
# duplicate on one live stream, any seq going backwards, or any acked/stored difference.
#
# At full size it then runs the storm at 15,000 clients (loadtest/run.sh storm with chat-load, a
# release build: the gateway holding half of them SIGKILLed, every client resumed, nothing lost,
# live delivery p99 < 100 ms for the clients that stayed, drop -> synced p99 < 5 s) and fails if
# that does; CHAT_CHAOS_STORM=0 skips it, CHAT_CHAOS_STORM_VUS=N sizes it.
#
# Overrides: CHAT_CHAOS_SCALE=ci (the small variant `make test` runs), CHAT_CHAOS_USERS=N,
# CHAT_CHAOS_INTERVAL_MS=N (mean pause between a client's messages). The process logs stay in
# $TMPDIR/chat-testkit/<db>-<prefix>/ (CHAT_TEST_KEEP_LOGS=1); the run's output goes to
# chaos-<scale>.log in Cargo's target directory (CARGO_TARGET_DIR honoured) as well.
set -euo pipefail
cd "$(dirname "$0")/.."

export CHAT_CHAOS_SCALE=${CHAT_CHAOS_SCALE:-full}
export CHAT_TEST_KEEP_LOGS=${CHAT_TEST_KEEP_LOGS:-1}
command -v redis-server >/dev/null || {
  echo "chaos: redis-server is needed (the suite runs its own, private one)" >&2
  exit 1
}
scripts/services.sh
cargo build --workspace --bins -q
target=$(scripts/lib/target-dir.sh)
mkdir -p "$target"
out="$target/chaos-${CHAT_CHAOS_SCALE}.log"
set +e
cargo test -q -p chat-testkit --test chaos -- --nocapture "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
echo
echo "chaos: summary (full output in $out)"
grep -E '^(chaos results|fault=|socket ends|send errors|history check|readiness|  FAIL|  WARN)' "$out" || true
[ "$status" -eq 0 ] || exit "$status"
if [ "$CHAT_CHAOS_SCALE" = full ] && [ "${CHAT_CHAOS_STORM:-1}" != 0 ]; then
  vus=${CHAT_CHAOS_STORM_VUS:-15000}
  echo
  echo "chaos: storm at $vus clients (loadtest/run.sh storm, chat-load)"
  DRIVER=chat-load DELIVERY_P99_MS=100 RESUME_P99_MS=5000 loadtest/run.sh storm "$vus"
fi
