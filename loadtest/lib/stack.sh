#!/usr/bin/env bash
# Sourced by loadtest/run.sh: starts a release stack for a load test — chat-api and GATEWAYS (2)
# gateways against a fresh MariaDB database and Redis prefix (the approach of
# scripts/bench-stack.sh, on ports of its own so both can run side by side) — and tears it down on
# exit.
#
# Env: LT_API_PORT (18280), GATEWAYS (2: gateways on 18281, 18283, 18285, ...), LT_GW_PORTS (the
# gateways' ports, overrides GATEWAYS: "18281 18283"), LT_PROFILE (release | debug),
# LT_NO_BUILD=1 (skip cargo build), CARGO_TARGET_DIR (where the binaries are; otherwise cargo
# metadata's target_directory),
# MYSQL_HOST/MYSQL_PORT/MYSQL_USER (127.0.0.1/3306/root), REDIS_URL (redis://127.0.0.1:6379).
# Sets: API_URL, WS_URLS, DATABASE_URL, CHAT_JWT_SECRET, LT_LOGS, lt_stack_pids (api, gw...).
# lt_bin_dir prints the directory of the binaries of LT_PROFILE.

lt_bin_dir() {
  echo "$(scripts/lib/target-dir.sh)/${LT_PROFILE:-release}"
}

# The gateways' ports: LT_GW_PORTS, or GATEWAYS ports from 18281 in steps of 2.
lt_gateway_ports() {
  if [ -n "${LT_GW_PORTS:-}" ]; then
    echo "$LT_GW_PORTS"
    return
  fi
  local n=${GATEWAYS:-2} ports=() i
  for i in $(seq 0 $((n - 1))); do ports+=($((18281 + 2 * i))); done
  echo "${ports[*]}"
}

# Set before any start, so that the exit trap's lt_stack_stop also works (under `set -u`) when
# lt_stack_start gave up before starting anything, e.g. on a port already in use.
lt_stack_pids=()

lt_stack_start() {
  local api_port=${LT_API_PORT:-18280}
  local gw_ports
  read -r -a gw_ports <<<"$(lt_gateway_ports)"
  local mysql_host=${MYSQL_HOST:-127.0.0.1} mysql_port=${MYSQL_PORT:-3306} mysql_user=${MYSQL_USER:-root}
  local bin
  bin=$(lt_bin_dir)
  if [ "${LT_NO_BUILD:-0}" != 1 ]; then
    echo "building ${LT_PROFILE:-release} binaries..."
    if [ "${LT_PROFILE:-release}" = release ]; then cargo build --release --bins -q; else cargo build --bins -q; fi
  fi
  for b in chat-api chat-gateway chat-provision; do
    [ -x "$bin/$b" ] || { echo "no $bin/$b: build it (or unset LT_NO_BUILD)" >&2; return 1; }
  done
  for port in "$api_port" "${gw_ports[@]}"; do
    if curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
      echo "port $port is already serving: set LT_API_PORT/LT_GW_PORTS or reuse it with LT_REUSE_STACK=1" >&2
      return 1
    fi
  done

  lt_run_id="lt_$(date -u +%Y%m%d%H%M%S)_$$"
  export DATABASE_URL="mysql://${mysql_user}@${mysql_host}:${mysql_port}/${lt_run_id}"
  export REDIS_MODE=${REDIS_MODE:-standalone} REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
  export CHAT_REDIS_PREFIX=$lt_run_id
  CHAT_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export CHAT_JWT_SECRET
  export CHAT_API_URL="http://127.0.0.1:${api_port}" CHAT_LOG_FORMAT=json RUST_LOG=${RUST_LOG:-warn}
  # A caller's LT_LOGS is kept after the run; a temporary one is not.
  if [ -z "${LT_LOGS:-}" ]; then LT_LOGS=$(mktemp -d) lt_logs_temporary=1; fi
  mariadb -h "$mysql_host" -P "$mysql_port" -u"$mysql_user" -e "CREATE DATABASE \`${lt_run_id}\`"

  lt_stack_pids=()
  CHAT_LISTEN=127.0.0.1:$api_port $bin/chat-api >"$LT_LOGS/api.log" 2>&1 &
  lt_stack_pids+=($!)
  local i=0 urls=()
  for port in "${gw_ports[@]}"; do
    i=$((i + 1))
    CHAT_LISTEN=127.0.0.1:$port CHAT_NODE_ID=lt-gw$i $bin/chat-gateway >"$LT_LOGS/gw$i.log" 2>&1 &
    lt_stack_pids+=($!)
    urls+=("ws://127.0.0.1:$port/ws")
  done
  export API_URL="http://127.0.0.1:$api_port"
  WS_URLS=$(IFS=,; echo "${urls[*]}")
  export WS_URLS
  for port in "$api_port" "${gw_ports[@]}"; do
    local ok=0
    for _ in $(seq 1 150); do
      if curl -fs -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then ok=1; break; fi
      sleep 0.2
    done
    if [ $ok != 1 ]; then
      echo "port $port did not become ready; logs in $LT_LOGS" >&2
      tail -5 "$LT_LOGS"/*.log >&2
      return 1
    fi
  done
  echo "stack: api $API_URL, gateways $WS_URLS, db $lt_run_id (logs $LT_LOGS)"
}

lt_stack_stop() {
  if [ "${#lt_stack_pids[@]}" -gt 0 ]; then
    kill -TERM "${lt_stack_pids[@]}" 2>/dev/null || true
    for pid in "${lt_stack_pids[@]}"; do
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    done
    lt_stack_pids=()
  fi
  if [ -n "${lt_run_id:-}" ] && [ "${LT_KEEP_DB:-0}" = 1 ]; then
    echo "stack: kept database ${lt_run_id} and its Redis keys (LT_KEEP_DB=1)" >&2
  elif [ -n "${lt_run_id:-}" ]; then
    mariadb -h "${MYSQL_HOST:-127.0.0.1}" -P "${MYSQL_PORT:-3306}" -u"${MYSQL_USER:-root}" \
      -e "DROP DATABASE IF EXISTS \`${lt_run_id}\`" || true
    # Remove what the run left under its own Redis prefix (standalone Redis only).
    if [ "${REDIS_MODE:-standalone}" = standalone ] && command -v redis-cli >/dev/null; then
      redis-cli -u "$REDIS_URL" --scan --pattern "${lt_run_id}:*" 2>/dev/null |
        xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
    fi
    lt_run_id=
  fi
}
