#!/usr/bin/env bash
# Fan-out through standalone Redis and through the Redis Cluster: chat-fanout against a fresh
# release stack per run (scripts/bench-stack.sh), first one group of every receiver, then the
# same receivers in many small groups that the messages go to in turn; then the machine's floor
# for the same socket count (chat-write-floor: one small write per loopback socket, nothing
# else), which bounds what a gateway can reach here, and the same in bursts of half a small
# group with pauses between them, as a gateway writes a small group's messages. Small groups
# cost chat-api one write per nine deliveries instead of one per receiver, so their sender
# keeps 256 requests in flight: with 4, the gateways idle between messages and the figure
# measures their wake-ups, not their work.
# chat-fanout also reads INFO on every Redis server before and after the sends: the PUBLISH and
# SPUBLISH calls per message (a group's message should cost one per gateway holding members, not
# one per member) and the Redis CPU per message, and the gateways' own delivery time (publish ->
# written to the socket, from their /metrics) beside what its receivers measure.
# FANOUT_MODES (default "standalone cluster") and FANOUT_SIZES (default "0 <small>"; 0 is the
# one group) pick a part of the matrix, e.g. to alternate two builds on one shape:
#   CARGO_TARGET_DIR=/tmp/old BENCH_NO_BUILD=1 FANOUT_MODES=cluster FANOUT_SIZES=10 scripts/bench-fanout.sh 999 200
# FANOUT_CONCURRENCY replaces the requests in flight and FANOUT_ARGS adds flags to chat-fanout,
# e.g. FANOUT_ARGS="--rate 2000" for latency at a paced rate instead of the closed loop's queue.
# Usage: scripts/bench-fanout.sh [receivers] [messages per chat] [members of a small chat]
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
small=${3:-10}
for mode in ${FANOUT_MODES:-standalone cluster}; do
  for size in ${FANOUT_SIZES:-0 $small}; do
    if [ "$size" = 0 ]; then echo "== REDIS_MODE=$mode, one group"; else echo "== REDIS_MODE=$mode, groups of $size"; fi
    (
      export REDIS_MODE=$mode
      unset REDIS_URL
      source scripts/bench-stack.sh
      bench_stack_start
      # Every server, for the publish count and the Redis CPU (chat-fanout reads INFO).
      if [ "$mode" = cluster ]; then
        redis_nodes=$(for port in 7000 7001 7002 7003 7004 7005; do printf 'redis://127.0.0.1:%s,' "$port"; done)
        redis_nodes=${redis_nodes%,}
      else
        redis_nodes=$REDIS_URL
      fi
      "$bench_bin/chat-fanout" --api-url http://127.0.0.1:18180 \
        --ws ws://127.0.0.1:18181/ws,ws://127.0.0.1:18183/ws --receivers "${1:-200}" --messages "${2:-300}" \
        --chat-size "$size" --concurrency "${FANOUT_CONCURRENCY:-$([ "$size" = 0 ] && echo 4 || echo 256)}" \
        --gateway-pids "${bench_pids[1]},${bench_pids[2]}" --redis "$redis_nodes" ${FANOUT_ARGS:-}
    )
  done
done
echo "== floor"
"$(scripts/lib/target-dir.sh)/release/chat-write-floor" --sockets "${1:-200}"
# A gateway's share of a small group's message is a burst of about half the group's writes to
# clients that sleep in between, and the gateway sleeps between its bursts too.
echo "== floor, bursts of $((small / 2)) writes with pauses"
"$(scripts/lib/target-dir.sh)/release/chat-write-floor" --sockets "${1:-200}" --burst $((small / 2)) --writes 200000
