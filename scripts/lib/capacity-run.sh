#!/usr/bin/env bash
# Sourced by scripts/capacity-check.sh and scripts/capacity-calibrate.sh: one chat-load run
# (loadtest/run.sh … DRIVER=chat-load) set up for measuring per-process CPU:
#   - a private redis-server on a free port (CAPACITY_PRIVATE_REDIS=0: the shared one on :6379),
#     so that the Redis CPU sampled is this run's alone;
#   - the shared MariaDB's CPU rate over CAPACITY_BASELINE_S (10) seconds before the run, written
#     to the results folder as baseline.json, so that loadtest/lib/capacity.py can take out what
#     other users of the server did meanwhile;
#   - the stack on ports of its own (LT_API_PORT 18380, gateways from 18381) unless set.
#
#   capacity_run SCENARIO VUS [NAME=VALUE ...]   sets CAPACITY_DIR to the results folder
# Binaries: LT_NO_BUILD=1 skips the release build, as for loadtest/run.sh.

capacity_cpu_s() { # pid -> utime+stime in seconds
  awk -v tck="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / tck }' "/proc/$1/stat" 2>/dev/null || echo 0
}

capacity_run() {
  local scenario=$1 vus=$2
  shift 2
  local redis_pid="" redis_dir="" port
  if [ "${CAPACITY_PRIVATE_REDIS:-1}" = 1 ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    redis_dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" \
      --logfile "$redis_dir/redis.log" --daemonize no &
    redis_pid=$!
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    export REDIS_URL="redis://127.0.0.1:$port"
  fi
  local db_pid a b t_a t_b
  db_pid=$(pidof mariadbd 2>/dev/null || pidof mysqld 2>/dev/null || true)
  db_pid=${db_pid%% *}
  local baseline=0
  if [ -n "$db_pid" ]; then
    a=$(capacity_cpu_s "$db_pid"); t_a=$(date +%s.%N)
    sleep "${CAPACITY_BASELINE_S:-10}"
    b=$(capacity_cpu_s "$db_pid"); t_b=$(date +%s.%N)
    baseline=$(python3 -c "print(max(($b - $a) / ($t_b - $t_a), 0.0))")
  fi
  local out rc=0
  out=$(mktemp)
  LT_API_PORT=${LT_API_PORT:-18380} LT_GW_PORTS=${LT_GW_PORTS:-$(seq -s ' ' 18381 2 $((18379 + 2 * ${GATEWAYS:-2})))} \
    DRIVER=chat-load loadtest/run.sh "$scenario" "$vus" "$@" 2>&1 | tee "$out" || rc=$?
  CAPACITY_DIR=$(sed -n 's/^loadtest: \(.*\) (chat-load exit .*/\1/p' "$out" | tail -1)
  rm -f "$out"
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    rm -rf "$redis_dir"
  fi
  if [ -z "$CAPACITY_DIR" ] || [ ! -f "$CAPACITY_DIR/resources.csv" ]; then
    echo "capacity: the run left no results folder (loadtest/run.sh exit $rc)" >&2
    return 1
  fi
  printf '{"mariadb": %s}\n' "$baseline" >"$CAPACITY_DIR/baseline.json"
  # A threshold the driver failed (exit 99) does not void the measurement; anything else does.
  if [ "$rc" != 0 ] && [ "$rc" != 99 ]; then
    echo "capacity: loadtest/run.sh failed (exit $rc): $CAPACITY_DIR" >&2
    return 1
  fi
  return 0
}
