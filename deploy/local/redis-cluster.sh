#!/usr/bin/env bash
# A local Redis Cluster for tests and `make run-cluster`: 6 nodes (3 masters, 3 replicas) on
# 127.0.0.1:7000-7005, started from the installed redis-server. Idempotent.
#   deploy/local/redis-cluster.sh start|stop|status|restart-node PORT
# Data lives under $CHAT_CLUSTER_DIR (default /tmp/chat-redis-cluster); nothing is persisted.
set -euo pipefail

dir=${CHAT_CLUSTER_DIR:-/tmp/chat-redis-cluster}
first_port=${CHAT_CLUSTER_FIRST_PORT:-7000}
ports=()
for i in 0 1 2 3 4 5; do ports+=($((first_port + i))); done

log() { printf '[redis-cluster] %s\n' "$*" >&2; }
cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
up() { cli "$1" ping 2>/dev/null | grep -q PONG; }

start_node() {
  local port=$1
  if up "$port"; then return 0; fi
  mkdir -p "$dir/$port"
  # A node restarted after a stop rejoins with its nodes.conf (as a replica after failover).
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
    --cluster-node-timeout 2000 --cluster-replica-validity-factor 0 \
    --save "" --appendonly no --dir "$dir/$port" --logfile "$dir/$port/redis.log"
  for _ in $(seq 1 50); do up "$port" && return 0; sleep 0.1; done
  log "node $port did not start; see $dir/$port/redis.log"
  return 1
}

cluster_ok() {
  for port in "${ports[@]}"; do
    cli "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
}

start() {
  command -v redis-server >/dev/null || { log "redis-server is not installed (apt-get install redis-server)"; exit 1; }
  for port in "${ports[@]}"; do start_node "$port"; done
  if ! cli "${ports[0]}" cluster info | grep -q 'cluster_known_nodes:6'; then
    log "creating the cluster"
    local addrs=()
    for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  fi
  for _ in $(seq 1 100); do
    if cluster_ok; then log "cluster is up on 127.0.0.1:${ports[0]}-${ports[5]}"; return 0; fi
    sleep 0.2
  done
  log "cluster did not reach state ok"
  status
  return 1
}

stop() {
  for port in "${ports[@]}"; do
    if up "$port"; then cli "$port" shutdown nosave >/dev/null 2>&1 || true; fi
  done
  rm -rf "$dir"
  log "stopped"
}

status() {
  for port in "${ports[@]}"; do
    if up "$port"; then
      role=$(cli "$port" role | head -1)
      state=$(cli "$port" cluster info | awk -F: '/cluster_state/{print $2}' | tr -d '\r')
      echo "127.0.0.1:$port up $role cluster_state=$state"
    else
      echo "127.0.0.1:$port down"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart-node) start_node "${2:?port}" ;;
  *) echo "usage: $0 start|stop|status|restart-node PORT" >&2; exit 2 ;;
esac
