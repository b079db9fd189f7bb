#!/usr/bin/env bash
# Send -> delivered latency: chat-latency against a fresh release stack (scripts/bench-stack.sh).
# Usage: scripts/bench-latency.sh [messages]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-stack.sh
bench_stack_start
"$bench_bin/chat-latency" --api-url http://127.0.0.1:18180 \
  --sender-ws ws://127.0.0.1:18181/ws --receiver-ws ws://127.0.0.1:18183/ws --messages "${1:-1000}"
