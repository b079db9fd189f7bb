#!/usr/bin/env bash
# Gateway RSS per idle authenticated socket: provisions N users (chat-provision), opens one socket
# each spread over the two gateways of a fresh release stack (scripts/bench-stack.sh), and prints
# each gateway's RSS growth per socket.
# Usage: scripts/bench-idle-rss.sh [sockets]   (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
sockets=${1:-10000}
# Each socket is one fd here and one in a gateway; the client needs more than the default 1024.
ulimit -n "$(ulimit -Hn)"
source scripts/bench-stack.sh
bench_stack_start
tokens="$bench_logs/tokens.json"
"$bench_bin/chat-provision" --users "$sockets" --out "$tokens" >/dev/null
"$bench_bin/chat-idle-rss" --tokens "$tokens" --connections "$sockets" \
  --ws ws://127.0.0.1:18181/ws,ws://127.0.0.1:18183/ws \
  --gateway-pids "${bench_pids[1]},${bench_pids[2]}"
