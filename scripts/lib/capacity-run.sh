#!/usr/bin/env bash
# Sourced by scripts/capacity-check.sh and scripts/capacity-calibrate.sh: one chat-load run
# (loadtest/run.sh … DRIVER=chat-load) set up for measuring per-process CPU:
#   - a private redis-server and a private mariadbd, each on a free port with its data in a
#     temporary directory (CAPACITY_PRIVATE=0: the shared servers on :6379 and :3306), so that
#     the Redis and MariaDB CPU sampled is this run's alone and not other engineers' tests';
#     the private MariaDB has utf8mb4 and durable commits (innodb_flush_log_at_trx_commit=1) like
#     the shared one, and the memory a database serving this load would be given: a 1 GiB
#     buffer pool and a 512 MiB redo log (CAPACITY_DB_BUFFER_POOL, CAPACITY_DB_REDO_LOG). With
#     the shared one's 128 MiB pool, a 100,000-socket run sending one message a socket a minute
#     stalled its database after about six minutes, 570,000 messages in: more rows and index
#     pages than that pool holds (docs/performance.md, 100,000 sockets);
#   - the stack on ports of its own (LT_API_PORT 18380, gateways from 18381) unless set.
#
#   capacity_run SCENARIO VUS [NAME=VALUE ...]   sets CAPACITY_DIR to the results folder
# Binaries: LT_NO_BUILD=1 skips the release build, as for loadtest/run.sh.

# The socket-write floor now (µs a write, chat-write-floor --sockets 999); its output to stderr.
capacity_floor() {
  local out f
  out=$("$(scripts/lib/target-dir.sh)/release/chat-write-floor" --sockets 999)
  echo "$out" >&2
  f=$(sed -n 's/.*(\([0-9.]*\) µs each.*/\1/p' <<<"$out" | tail -1)
  [ -n "$f" ] || { echo "capacity: no figure from chat-write-floor" >&2; return 1; }
  echo "$f"
}

capacity_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Starts the private servers; sets REDIS_URL, MYSQL_PORT and capacity_private_{pids,dir}.
capacity_private_start() {
  capacity_private_dir=$(mktemp -d)
  capacity_private_pids=()
  local d=$capacity_private_dir rport mport
  rport=$(capacity_free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$d" \
    --logfile "$d/redis.log" --daemonize no &
  capacity_private_pids+=($!)
  mport=$(capacity_free_port)
  mariadb-install-db --no-defaults --datadir="$d/mysql" --user="$(id -un)" \
    --auth-root-authentication-method=normal --skip-test-db >"$d/install.log" 2>&1 \
    || { echo "capacity: mariadb-install-db failed ($d/install.log)" >&2; return 1; }
  mariadbd --no-defaults --datadir="$d/mysql" --port="$mport" --bind-address=127.0.0.1 \
    --socket="$d/mysql.sock" --pid-file="$d/mysql.pid" --log-error="$d/mysql.err" \
    --user="$(id -un)" --skip-name-resolve --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_general_ci \
    --innodb-buffer-pool-size="${CAPACITY_DB_BUFFER_POOL:-1G}" \
    --innodb-log-file-size="${CAPACITY_DB_REDO_LOG:-512M}" \
    --innodb-flush-log-at-trx-commit=1 --max-connections=500 &
  capacity_private_pids+=($!)
  local i
  for i in $(seq 1 150); do
    redis-cli -p "$rport" ping >/dev/null 2>&1 \
      && mariadb -h 127.0.0.1 -P "$mport" -uroot -e 'select 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  [ "$i" -lt 150 ] || { echo "capacity: the private servers did not start ($d)" >&2; return 1; }
  export REDIS_URL="redis://127.0.0.1:$rport" MYSQL_HOST=127.0.0.1 MYSQL_PORT=$mport
}

capacity_private_stop() {
  local pid
  for pid in "${capacity_private_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${capacity_private_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$capacity_private_dir"
  unset REDIS_URL MYSQL_HOST MYSQL_PORT
}

capacity_run() {
  local scenario=$1 vus=$2
  shift 2
  capacity_private_pids=()
  if [ "${CAPACITY_PRIVATE:-1}" = 1 ]; then
    capacity_private_start || { capacity_private_stop; return 1; }
  fi
  local out rc=0
  out=$(mktemp)
  LT_API_PORT=${LT_API_PORT:-18380} LT_GW_PORTS=${LT_GW_PORTS:-$(seq -s ' ' 18381 2 $((18379 + 2 * ${GATEWAYS:-2})))} \
    DRIVER=chat-load loadtest/run.sh "$scenario" "$vus" "$@" 2>&1 | tee "$out" || rc=$?
  CAPACITY_DIR=$(sed -n 's/^loadtest: \(.*\) (chat-load exit .*/\1/p' "$out" | tail -1)
  rm -f "$out"
  [ "${CAPACITY_PRIVATE:-1}" = 1 ] && capacity_private_stop
  if [ -z "$CAPACITY_DIR" ] || [ ! -f "$CAPACITY_DIR/resources.csv" ]; then
    echo "capacity: the run left no results folder (loadtest/run.sh exit $rc)" >&2
    return 1
  fi
  # A threshold the driver failed (exit 99) does not void the measurement; anything else does.
  if [ "$rc" != 0 ] && [ "$rc" != 99 ]; then
    echo "capacity: loadtest/run.sh failed (exit $rc): $CAPACITY_DIR" >&2
    return 1
  fi
  return 0
}
