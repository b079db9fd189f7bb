#!/usr/bin/env bash
# chat-api persisted messages per second and request p99 on MariaDB: chat-api-throughput against
# a fresh release stack (scripts/bench-stack.sh) with users and pair chats from chat-provision.
# Ends with the database floor measured in the same run (chat-db-floor: a bare SELECT 1).
# Usage: scripts/bench-api.sh [in-flight requests] [seconds]   (defaults 64, 20)
set -euo pipefail
cd "$(dirname "$0")/.."
concurrency=${1:-64}
source scripts/bench-stack.sh
bench_stack_start
tokens="$bench_logs/tokens.json"
"$bench_bin/chat-provision" --users $((concurrency * 2)) --pairs --out "$tokens" >/dev/null
pids="${bench_pids[0]}"
echo "pid ${bench_pids[0]}: chat-api"
for name in mariadbd redis-server; do
  pid=$(pgrep -o -x "$name" || true)
  [ -n "$pid" ] && pids="$pids,$pid" && echo "pid $pid: $name"
done
"$bench_bin/chat-api-throughput" --api-url http://127.0.0.1:18180 --tokens "$tokens" \
  --concurrency "$concurrency" --seconds "${2:-20}" --pids "$pids"
# The database floor of the same run: one bare SELECT 1 round trip, one after another.
"$bench_bin/chat-db-floor" --database-url "mysql://root@127.0.0.1:3306/mysql"
