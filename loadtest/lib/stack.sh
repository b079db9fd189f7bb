#!/usr/bin/env bash
# Sourced by loadtest/run.sh: starts a release stack for a load test — APIS (1) chat-api replicas
# and GATEWAYS (2) gateways against a fresh MariaDB database and Redis prefix (the approach of
# scripts/bench-stack.sh, on ports of its own so both can run side by side) — and tears it down on
# exit.
#
# Env: LT_API_PORT (18280; with APIS=N the replicas on it, +40, +80, ...: every gateway is given
# all of them and fails over between them), GATEWAYS (2: gateways on 18281, 18283, 18285, ...), LT_GW_PORTS (the
# gateways' ports, overrides GATEWAYS: "18281 18283"), LT_PROFILE (release | debug),
# LT_NO_BUILD=1 (skip cargo build), CARGO_TARGET_DIR (where the binaries are; otherwise cargo
# metadata's target_directory),
# MYSQL_HOST/MYSQL_PORT/MYSQL_USER (127.0.0.1/3306/root), REDIS_URL (redis://127.0.0.1:6379).
# Sets: API_URL (the first replica), API_URLS (all, comma-separated), WS_URLS, DATABASE_URL,
# CHAT_JWT_SECRET, LT_LOGS, lt_stack_pids (the replicas, then the gateways), lt_api_count.
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
lt_api_count=0

# The chat-api replicas' ports: APIS of them from LT_API_PORT in steps of 40 (clear of the
# gateways' odd ports).
lt_api_ports() {
  local first=${LT_API_PORT:-18280} n=${APIS:-1} ports=() i
  [[ $n =~ ^[1-9]$ ]] || { echo "APIS must be 1 to 9" >&2; return 1; }
  for i in $(seq 0 $((n - 1))); do ports+=($((first + 40 * i))); done
  echo "${ports[*]}"
}

# The name of replica N (1-based) in logs and samples: api, api2, api3, ...
lt_api_name() {
  if [ "$1" = 1 ]; then echo api; else echo "api$1"; fi
}

lt_stack_start() {
  local api_ports gw_ports
  read -r -a api_ports <<<"$(lt_api_ports)"
  [ "${#api_ports[@]}" -gt 0 ] || return 1
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
  for port in "${api_ports[@]}" "${gw_ports[@]}"; do
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
  local api_urls=() port
  for port in "${api_ports[@]}"; do api_urls+=("http://127.0.0.1:$port"); done
  API_URLS=$(IFS=,; echo "${api_urls[*]}")
  export API_URLS API_URL=${api_urls[0]}
  export CHAT_API_URL=$API_URLS CHAT_LOG_FORMAT=json RUST_LOG=${RUST_LOG:-warn}
  # A caller's LT_LOGS is kept after the run; a temporary one is not.
  if [ -z "${LT_LOGS:-}" ]; then LT_LOGS=$(mktemp -d) lt_logs_temporary=1; fi
  mariadb -h "$mysql_host" -P "$mysql_port" -u"$mysql_user" -e "CREATE DATABASE \`${lt_run_id}\`"

  lt_stack_pids=()
  local i=0 urls=()
  for port in "${api_ports[@]}"; do
    i=$((i + 1))
    CHAT_LISTEN=127.0.0.1:$port $bin/chat-api >"$LT_LOGS/$(lt_api_name "$i").log" 2>&1 &
    lt_stack_pids+=($!)
  done
  lt_api_count=$i
  i=0
  for port in "${gw_ports[@]}"; do
    i=$((i + 1))
    CHAT_LISTEN=127.0.0.1:$port CHAT_NODE_ID=lt-gw$i $bin/chat-gateway >"$LT_LOGS/gw$i.log" 2>&1 &
    lt_stack_pids+=($!)
    urls+=("ws://127.0.0.1:$port/ws")
  done
  WS_URLS=$(IFS=,; echo "${urls[*]}")
  export WS_URLS
  for port in "${api_ports[@]}" "${gw_ports[@]}"; do
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
  echo "stack: api $API_URLS, gateways $WS_URLS, db $lt_run_id (logs $LT_LOGS)"
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
