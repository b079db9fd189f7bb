#!/bin/bash
# Creates a Redis Cluster (3 masters, 1 replica each) from six nodes given as arguments, each
# `host` or `host:port` (port default $REDIS_PORT or 6379), e.g.
# `cluster-create.sh redis-node-1 ... redis-node-6`. Idempotent: when the nodes already form a
# cluster it waits for cluster_state:ok, prints it and exits 0.
# Runs in the redis image (redis-cli, getent). The Kubernetes Job in k8s/redis-cluster-job.yaml
# carries a copy of this logic.
set -euo pipefail

default_port="${REDIS_PORT:-6379}"
if [ "$#" -lt 6 ]; then
  echo "usage: $0 host[:port] x6" >&2
  exit 2
fi
hosts=()
ports=()
for arg in "$@"; do
  case "$arg" in
    *:*) hosts+=("${arg%:*}"); ports+=("${arg##*:}") ;;
    *) hosts+=("$arg"); ports+=("$default_port") ;;
  esac
done

addrs=()
for i in "${!hosts[@]}"; do
  host="${hosts[$i]}"
  port="${ports[$i]}"
  for _ in $(seq 1 60); do
    if redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG; then
      break
    fi
    echo "waiting for $host:$port"
    sleep 2
  done
  redis-cli -h "$host" -p "$port" ping | grep -q PONG || { echo "$host:$port never answered" >&2; exit 1; }
  # redis-cli --cluster create wants addresses; resolve the names.
  ip="$(getent ahostsv4 "$host" | awk '{print $1; exit}')"
  [ -n "$ip" ] || ip="$(getent ahosts "$host" | awk '{print $1; exit}')"
  [ -n "$ip" ] || { echo "cannot resolve $host" >&2; exit 1; }
  addrs+=("$ip:$port")
done

# Already formed (by an earlier run) when any node knows other nodes or holds slots.
formed=0
for i in "${!hosts[@]}"; do
  info="$(redis-cli -h "${hosts[$i]}" -p "${ports[$i]}" cluster info | tr -d '\r')"
  known="$(awk -F: '/^cluster_known_nodes:/ {print $2}' <<<"$info")"
  slots="$(awk -F: '/^cluster_slots_assigned:/ {print $2}' <<<"$info")"
  if [ "${known:-1}" -gt 1 ] || [ "${slots:-0}" -gt 0 ]; then
    formed=1
  fi
done
if [ "$formed" = 1 ]; then
  for _ in $(seq 1 30); do
    if redis-cli -h "${hosts[0]}" -p "${ports[0]}" cluster info | grep -q '^cluster_state:ok'; then
      echo "the cluster already exists:"
      redis-cli -h "${hosts[0]}" -p "${ports[0]}" cluster info | grep -E '^cluster_(state|slots_assigned|known_nodes|size):'
      exit 0
    fi
    sleep 1
  done
  echo "the nodes already belong to a cluster that is not ok; repair it by hand (redis-cli --cluster fix ${hosts[0]}:${ports[0]}) or reset the nodes" >&2
  exit 1
fi

echo "creating the cluster from ${addrs[*]}"
timeout 120 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes

for _ in $(seq 1 30); do
  if redis-cli -h "${hosts[0]}" -p "${ports[0]}" cluster info | grep -q '^cluster_state:ok'; then
    echo "cluster_state:ok"
    exit 0
  fi
  sleep 1
done
echo "the cluster did not reach cluster_state:ok" >&2
exit 1
