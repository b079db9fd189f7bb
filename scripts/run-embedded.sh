#!/usr/bin/env bash
# The zero-setup topology: chat-api (:8080, web client at /), a gateway (:8081) and the push
# worker in one chat-embedded process, on SQLite (./data/chat.db) and the in-memory bus. Needs
# only the Rust toolchain: no MariaDB, no Redis. Ctrl-C stops it (gateway drain first).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p chat-embedded
mkdir -p data
# A secret kept beside the data, so tokens (and logged-in browser tabs) survive a restart.
if [[ -z ${CHAT_JWT_SECRET:-} ]]; then
  [[ -s data/jwt-secret ]] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >data/jwt-secret
  CHAT_JWT_SECRET=$(cat data/jwt-secret)
  export CHAT_JWT_SECRET
fi
export CHAT_LOG_FORMAT=${CHAT_LOG_FORMAT:-text}
export CHAT_DRAIN_SECS=${CHAT_DRAIN_SECS:-2}
export CHAT_ATTACHMENTS_DIR=${CHAT_ATTACHMENTS_DIR:-data/attachments}

cat <<MSG

  web client    http://localhost:8080/  (open it in two browser windows and chat)
  chat-api      http://127.0.0.1:8080   (REST, see docs/protocol.md and /openapi.yaml)
  chat-gateway  ws://127.0.0.1:8081/ws
  storage       SQLite data/chat.db, in-memory bus (make run-scaled: MariaDB + Redis instead)
  Ctrl-C stops it.

MSG
exec "$(scripts/lib/target-dir.sh)/release/chat-embedded" "$@"
