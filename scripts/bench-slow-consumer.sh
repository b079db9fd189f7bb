#!/usr/bin/env bash
# One socket that stops reading vs. everyone else on the same gateway: chat-slow-consumer
# against a fresh release stack (scripts/bench-stack.sh).
# Usage: scripts/bench-slow-consumer.sh [receivers] [messages] [text bytes]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-stack.sh
bench_stack_start
"$bench_bin/chat-slow-consumer" --api-url http://127.0.0.1:18180 --ws ws://127.0.0.1:18181/ws \
  --receivers "${1:-20}" --messages "${2:-2000}" --text-bytes "${3:-4000}"
