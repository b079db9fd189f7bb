# Sourced by check scripts (tests/browser/run.sh, scripts/openapi-check.sh): a private chat-api
# (and optionally a gateway) on free ports, against a fresh MariaDB database and a unique Redis
# prefix, torn down by stack_down (call it from an EXIT trap). Uses the debug binaries of Cargo's
# target directory (CARGO_TARGET_DIR honoured); set STACK_NO_BUILD=1 to skip `cargo build`.
#
#   stack_up <name> [gateway]   exports API_URL (and WS_URL); logs under $STACK_LOGS
#   stack_down                  stops what stack_up started, drops the database and Redis keys
#
# STACK_MODE=embedded runs one chat-embedded process instead (api + gateway on SQLite and the
# in-memory bus, in a temporary directory): no MariaDB or Redis is touched.

STACK_PIDS=()
STACK_DB=""
STACK_PREFIX=""
STACK_LOGS=${STACK_LOGS:-.tmp/stack-logs}
STACK_DATA=""
STACK_BIN=$(scripts/lib/target-dir.sh)/debug

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() { # url what pid
  for _ in $(seq 1 150); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    kill -0 "$3" 2>/dev/null || { echo "FAIL: $2 exited during start-up; see $STACK_LOGS" >&2; return 1; }
    sleep 0.2
  done
  echo "FAIL: $2 not ready at $1 after 30 s; see $STACK_LOGS" >&2
  return 1
}

stack_up() {
  if [[ ${STACK_MODE:-} == embedded ]]; then
    stack_up_embedded
    return
  fi
  local name=$1 with_gateway=${2:-}
  local tag
  tag="${name}_$(date +%s)_$$"
  if [[ -z ${STACK_NO_BUILD:-} ]]; then
    # The whole workspace, as `make build` does: `-p` alone unifies features differently and so
    # rebuilds the shared dependencies (about a minute on CI).
    cargo build -q --workspace --bins
  fi
  mkdir -p "$STACK_LOGS"
  mariadb -h 127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1 \
    || { echo "FAIL: MariaDB does not answer on 127.0.0.1:3306 (run scripts/services.sh)" >&2; return 1; }
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 \
    || { echo "FAIL: Redis does not answer on 127.0.0.1:6379 (run scripts/services.sh)" >&2; return 1; }

  STACK_DB="chat_${tag}"
  STACK_PREFIX="${tag}"
  mariadb -h 127.0.0.1 -uroot -e "CREATE DATABASE \`${STACK_DB}\` CHARACTER SET utf8mb4"

  local api_port gw_port
  api_port=$(free_port)
  gw_port=$(free_port)
  export API_URL="http://127.0.0.1:${api_port}"
  export WS_URL="ws://127.0.0.1:${gw_port}/ws"
  local secret
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

  DATABASE_URL="mysql://root@127.0.0.1:3306/${STACK_DB}" REDIS_URL=redis://127.0.0.1:6379 \
    CHAT_REDIS_PREFIX="$STACK_PREFIX" CHAT_JWT_SECRET="$secret" CHAT_LISTEN="127.0.0.1:${api_port}" \
    CHAT_WEB_WS_URL="$WS_URL" CHAT_LOG_FORMAT=text \
    "$STACK_BIN/chat-api" >"$STACK_LOGS/chat-api.log" 2>&1 &
  STACK_PIDS+=($!)
  wait_ready "$API_URL/readyz" chat-api "$!" || return 1

  if [[ -n $with_gateway ]]; then
    REDIS_URL=redis://127.0.0.1:6379 CHAT_REDIS_PREFIX="$STACK_PREFIX" CHAT_JWT_SECRET="$secret" \
      CHAT_LISTEN="127.0.0.1:${gw_port}" CHAT_API_URL="$API_URL" CHAT_NODE_ID="gw-${tag}" CHAT_DRAIN_SECS=1 \
      CHAT_LOG_FORMAT=text "$STACK_BIN/chat-gateway" >"$STACK_LOGS/chat-gateway.log" 2>&1 &
    STACK_PIDS+=($!)
    wait_ready "http://127.0.0.1:${gw_port}/readyz" chat-gateway "$!" || return 1
  fi
}

stack_up_embedded() {
  [[ -n ${STACK_NO_BUILD:-} ]] || cargo build -q -p chat-embedded
  mkdir -p "$STACK_LOGS"
  STACK_DATA=$(mktemp -d)
  local api_port gw_port secret
  api_port=$(free_port)
  gw_port=$(free_port)
  export API_URL="http://127.0.0.1:${api_port}"
  export WS_URL="ws://127.0.0.1:${gw_port}/ws"
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  DATABASE_URL="sqlite://${STACK_DATA}/chat.db" CHAT_ATTACHMENTS_DIR="${STACK_DATA}/attachments" \
    CHAT_JWT_SECRET="$secret" CHAT_API_LISTEN="127.0.0.1:${api_port}" CHAT_WS_LISTEN="127.0.0.1:${gw_port}" \
    CHAT_WEB_WS_URL="$WS_URL" CHAT_DRAIN_SECS=1 CHAT_LOG_FORMAT=text \
    "$STACK_BIN/chat-embedded" >"$STACK_LOGS/chat-embedded.log" 2>&1 &
  STACK_PIDS+=($!)
  wait_ready "$API_URL/readyz" chat-embedded "$!" || return 1
  wait_ready "http://127.0.0.1:${gw_port}/readyz" chat-embedded "$!" || return 1
}

stack_down() {
  local pid
  for pid in "${STACK_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STACK_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  STACK_PIDS=()
  if [[ -n $STACK_DATA ]]; then
    rm -rf "$STACK_DATA"
    STACK_DATA=""
  fi
  if [[ -n $STACK_DB ]]; then
    mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS \`${STACK_DB}\`" || true
    STACK_DB=""
  fi
  if [[ -n $STACK_PREFIX ]]; then
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "${STACK_PREFIX}:*" \
      | xargs -r -n 100 redis-cli -h 127.0.0.1 -p 6379 DEL >/dev/null || true
    STACK_PREFIX=""
  fi
}
