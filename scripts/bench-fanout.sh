#!/usr/bin/env bash
# Fan-out through standalone Redis and through the Redis Cluster: chat-fanout against a fresh
# release stack per mode (scripts/bench-stack.sh), then the machine's floor for the same
# socket count (chat-write-floor: one small write per loopback socket, nothing else), which
# bounds what a gateway can reach here.
# Usage: scripts/bench-fanout.sh [receivers] [messages]
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
for mode in standalone cluster; do
  echo "== REDIS_MODE=$mode"
  (
    export REDIS_MODE=$mode
    unset REDIS_URL
    source scripts/bench-stack.sh
    bench_stack_start
    target/release/chat-fanout --api-url http://127.0.0.1:18180 \
      --ws ws://127.0.0.1:18181/ws,ws://127.0.0.1:18183/ws --receivers "${1:-200}" --messages "${2:-300}" \
      --gateway-pids "${bench_pids[1]},${bench_pids[2]}"
  )
done
echo "== floor"
target/release/chat-write-floor --sockets "${1:-200}"
