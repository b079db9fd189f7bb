#!/usr/bin/env bash
# `make run`. With neither DATABASE_URL nor REDIS_URL set: the embedded single process
# (scripts/run-embedded.sh: SQLite under ./data, in-memory bus, nothing else to install).
# With either set (or `make run-scaled`): chat-api on :8080 and two chat-gateways on :8081 and
# :8083 (the worker's health port is :8082) against MariaDB and Redis. Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${DATABASE_URL:-} && -z ${REDIS_URL:-} ]]; then
  exec scripts/run-embedded.sh
fi

scripts/services.sh
cargo build --release --bins
bin=$(scripts/lib/target-dir.sh)/release

export DATABASE_URL=${DATABASE_URL:-mysql://root@127.0.0.1:3306/chat}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
export CHAT_JWT_SECRET=${CHAT_JWT_SECRET:-local-dev-secret-change-me}
export CHAT_API_URL=${CHAT_API_URL:-http://127.0.0.1:8080}
export CHAT_LOG_FORMAT=${CHAT_LOG_FORMAT:-text}

db=${DATABASE_URL##*/}
mariadb -h 127.0.0.1 -uroot -e "CREATE DATABASE IF NOT EXISTS \`${db%%\?*}\` CHARACTER SET utf8mb4"

pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait || true; }
trap cleanup EXIT INT TERM

CHAT_LISTEN=0.0.0.0:8080 "$bin/chat-api" & pids+=($!)
CHAT_LISTEN=0.0.0.0:8081 CHAT_NODE_ID=gw-8081 "$bin/chat-gateway" & pids+=($!)
CHAT_LISTEN=0.0.0.0:8083 CHAT_NODE_ID=gw-8083 "$bin/chat-gateway" & pids+=($!)
CHAT_LISTEN=0.0.0.0:8082 "$bin/chat-worker" & pids+=($!)

for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
  sleep 0.2
done
cat <<MSG

  web client    http://localhost:8080/  (open it in two browser windows and chat)
  chat-api      http://127.0.0.1:8080   (REST, see docs/protocol.md and /openapi.yaml)
  chat-gateway  ws://127.0.0.1:8081/ws  and  ws://127.0.0.1:8083/ws
  chat-worker   http://127.0.0.1:8082/healthz
  Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
