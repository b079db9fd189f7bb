#!/usr/bin/env bash
# Sourced by the benchmark scripts: starts a release stack (chat-api on :18180, gateways on
# :18181 and :18183) against a fresh database and Redis prefix, and tears it down on exit.
# Honors REDIS_MODE/REDIS_URL (cluster: the local cluster is started first), CARGO_TARGET_DIR, and
# BENCH_NO_BUILD=1 (run the release binaries as they are, e.g. to compare two builds), and
# GATEWAY_WORKER_THREADS (the gateways' runtime threads alone, CHAT_WORKER_THREADS for them).
# Sets bench_bin, the directory of the release binaries, for the scripts that source it.

bench_bin=$(scripts/lib/target-dir.sh)/release

bench_stack_start() {
  scripts/services.sh
  if [ "${REDIS_MODE:-standalone}" = cluster ]; then
    deploy/local/redis-cluster.sh start
    export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002}
  fi
  [ "${BENCH_NO_BUILD:-0}" = 1 ] || cargo build --release --bins -q

  run_id="bench_$(date +%s)_$$"
  export DATABASE_URL="mysql://root@127.0.0.1:3306/${run_id}"
  export REDIS_MODE=${REDIS_MODE:-standalone} REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
  export CHAT_REDIS_PREFIX=$run_id CHAT_JWT_SECRET=$run_id
  export CHAT_API_URL=http://127.0.0.1:18180 CHAT_LOG_FORMAT=json RUST_LOG=warn
  # The benchmarks send as fast as the pipeline allows from one user: measure the pipeline, not
  # the per-user message bucket (CHAT_MSG_RATE_PER_SEC, docs/security.md).
  export CHAT_MSG_RATE_PER_SEC=${CHAT_MSG_RATE_PER_SEC:-0}
  bench_logs=$(mktemp -d)
  mariadb -h 127.0.0.1 -uroot -e "CREATE DATABASE \`${run_id}\`"

  bench_pids=()
  trap bench_stack_stop EXIT
  CHAT_LISTEN=127.0.0.1:18180 "$bench_bin/chat-api" >"$bench_logs/api.log" 2>&1 & bench_pids+=($!)
  local gateway_env=()
  [ -z "${GATEWAY_WORKER_THREADS:-}" ] || gateway_env=(CHAT_WORKER_THREADS="$GATEWAY_WORKER_THREADS")
  env "${gateway_env[@]}" CHAT_LISTEN=127.0.0.1:18181 CHAT_NODE_ID=bench-gw1 "$bench_bin/chat-gateway" >"$bench_logs/gw1.log" 2>&1 & bench_pids+=($!)
  env "${gateway_env[@]}" CHAT_LISTEN=127.0.0.1:18183 CHAT_NODE_ID=bench-gw2 "$bench_bin/chat-gateway" >"$bench_logs/gw2.log" 2>&1 & bench_pids+=($!)
  for port in 18180 18181 18183; do
    for _ in $(seq 1 100); do
      curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
      sleep 0.2
    done
  done
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
  echo "mariadb: $(mariadb -h 127.0.0.1 -uroot -Nse 'select version()'), redis: $(redis-server --version | awk '{print $3}'), REDIS_MODE=$REDIS_MODE"
}

bench_stack_stop() {
  kill -TERM "${bench_pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS \`${run_id}\`" || true
}
