#!/usr/bin/env bash
# Starts a release stack (chat-api + two gateways) on spare ports against a fresh database and
# Redis prefix, runs chat-latency (A on gateway 1 -> B on gateway 2), then tears it all down.
# Usage: scripts/bench-latency.sh [messages]
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-1000}

scripts/services.sh
cargo build --release --bins -q

run_id="bench_$(date +%s)_$$"
export DATABASE_URL="mysql://root@127.0.0.1:3306/${run_id}"
export REDIS_URL=redis://127.0.0.1:6379 CHAT_REDIS_PREFIX=$run_id CHAT_JWT_SECRET=$run_id
export CHAT_API_URL=http://127.0.0.1:18180 CHAT_LOG_FORMAT=json RUST_LOG=warn
logs=$(mktemp -d)
mariadb -h 127.0.0.1 -uroot -e "CREATE DATABASE \`${run_id}\`"

pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS \`${run_id}\`" || true
}
trap cleanup EXIT

CHAT_LISTEN=127.0.0.1:18180 target/release/chat-api >"$logs/api.log" 2>&1 & pids+=($!)
CHAT_LISTEN=127.0.0.1:18181 CHAT_NODE_ID=bench-gw1 target/release/chat-gateway >"$logs/gw1.log" 2>&1 & pids+=($!)
CHAT_LISTEN=127.0.0.1:18183 CHAT_NODE_ID=bench-gw2 target/release/chat-gateway >"$logs/gw2.log" 2>&1 & pids+=($!)
for port in 18180 18181 18183; do
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
echo "mariadb: $(mariadb -h 127.0.0.1 -uroot -Nse 'select version()'), redis: $(redis-server --version | awk '{print $3}')"
target/release/chat-latency --api-url http://127.0.0.1:18180 \
  --sender-ws ws://127.0.0.1:18181/ws --receiver-ws ws://127.0.0.1:18183/ws --messages "$messages"
