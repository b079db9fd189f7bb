#!/usr/bin/env python3
"""Checks of k8s/base/ and k8s/loadtest/ beyond the Kubernetes schemas, run by k8s/validate.sh.

Usage: check-manifests.py listing           k8s/base/kustomization.yaml lists every *.yaml there, nothing else
       check-manifests.py files             print the listed files whose objects have built-in
                                            schemas (for kubernetes-validate), one per line
       check-manifests.py crds RULES_OUT    validate monitoring.coreos.com/v1 objects against
                                            k8s/schemas/*.json; write the PrometheusRule groups to
                                            RULES_OUT for promtool
       check-manifests.py semantics RENDERED PROFILE
                                            the properties the deployment promises (probes, drain
                                            timing, security context, HPAs, PDBs, selectors, keys)
                                            in a kustomize build's output; PROFILE base, dev or prod
                                            adds that overlay's promises (dev: one pod of each tier
                                            and a single Redis; prod: autoscaled, zone-spread,
                                            one gateway per node, a Redis Cluster)
       check-manifests.py loadtest          k8s/loadtest/ (its own kustomization): the listing, the
                                            TestRuns against k8s/schemas/k6-testrun.json, and what
                                            they refer to (claim, scripts, parameters)
       check-manifests.py loadtest-files    print k8s/loadtest's files with built-in kinds

Exit status 1 with one line per problem.
"""

import json
import re
import sys
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parent
REPO = K8S.parent
# The application's manifests; overlays (k8s/overlays/*) build on them.
BASE = K8S / "base"
CRD_GROUPS = {"monitoring.coreos.com/v1": {"ServiceMonitor": "servicemonitor.json",
                                           "PrometheusRule": "prometheusrule.json"}}
# k8s/loadtest/ is a kustomization of its own (k6 at cluster scale), checked by `loadtest`.
LOADTEST = K8S / "loadtest"
LOADTEST_CRDS = {"k6.io/v1alpha1": {"TestRun": "k6-testrun.json"}}
TIERS = ("chat-api", "chat-gateway", "chat-worker")
errors = []


def err(msg):
    errors.append(msg)


def listed_files():
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return list(kust.get("resources") or [])


def docs_of(name):
    return [d for d in yaml.safe_load_all((BASE / name).read_text()) if isinstance(d, dict)]


def all_docs():
    out = []
    for name in listed_files():
        if (BASE / name).exists():
            out += [(name, d) for d in docs_of(name)]
    return out


def cmd_listing():
    listed = listed_files()
    on_disk = sorted(str(p.relative_to(BASE)) for p in BASE.rglob("*.yaml") if p.name != "kustomization.yaml")
    on_disk += sorted(str(p.relative_to(BASE)) for p in BASE.rglob("*.yml"))
    dupes = sorted({f for f in listed if listed.count(f) > 1})
    for f in dupes:
        err(f"k8s/base/kustomization.yaml lists {f} more than once")
    for f in sorted(set(on_disk) - set(listed)):
        err(f"k8s/base/{f} exists but k8s/base/kustomization.yaml does not list it (add it under resources:)")
    for f in sorted(set(listed) - set(on_disk)):
        err(f"k8s/base/kustomization.yaml lists {f}, which does not exist in k8s/base/")
    if not errors:
        print(f"    ok: k8s/base/kustomization.yaml lists all {len(listed)} manifest files and nothing else")


def cmd_files():
    for name in listed_files():
        path = BASE / name
        if path.exists() and not any(d.get("apiVersion") in CRD_GROUPS for d in docs_of(name)):
            print(path)


def cmd_crds(rules_out):
    import jsonschema

    groups = []
    count = 0
    for name, d in all_docs():
        api = d.get("apiVersion", "")
        if api in CRD_GROUPS:
            schema_file = CRD_GROUPS[api].get(d.get("kind"))
            if not schema_file:
                err(f"k8s/base/{name}: no schema for {api} {d.get('kind')} (add one to k8s/schemas/)")
                continue
            schema = json.loads((K8S / "schemas" / schema_file).read_text())
            v = jsonschema.Draft7Validator(schema)
            for e in sorted(v.iter_errors(d), key=lambda e: list(e.absolute_path)):
                where = "/".join(str(p) for p in e.absolute_path) or "(top)"
                err(f"k8s/base/{name}: {d.get('kind')} {d['metadata'].get('name')}: {where}: {e.message}")
            count += 1
            if d.get("kind") == "PrometheusRule":
                groups += (d.get("spec") or {}).get("groups") or []
        elif "." in api.split("/")[0] and not api.split("/")[0].endswith(".k8s.io"):
            err(f"k8s/base/{name}: {api} {d.get('kind')} is a custom resource without a schema in k8s/schemas/")
    Path(rules_out).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    # The chat group must equal the compose stack's.
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    want = [g for g in alerts["groups"] if g["name"] == "chat"]
    have = [g for g in groups if g.get("name") == "chat"]
    if want != have:
        err("k8s/base/prometheusrule.yaml: group `chat` differs from the one in deploy/prometheus/alerts.yml; copy it over")
    if not errors:
        print(f"    ok: {count} custom resources match k8s/schemas/*.json; PrometheusRule group `chat` equals deploy/prometheus/alerts.yml")


def seconds_of_sleep(container):
    pre = ((container.get("lifecycle") or {}).get("preStop") or {})
    if "sleep" in pre:
        return int(pre["sleep"].get("seconds", 0))
    cmd = (pre.get("exec") or {}).get("command") or []
    for i, a in enumerate(cmd):
        if a.endswith("sleep") and i + 1 < len(cmd):
            return float(cmd[i + 1])
    return None


def matches(selector, labels):
    """A LabelSelector (matchLabels / matchExpressions) against a pod's labels."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        if e["operator"] == "In" and labels.get(e["key"]) not in e.get("values", []):
            return False
        if e["operator"] == "NotIn" and labels.get(e["key"]) in e.get("values", []):
            return False
        if e["operator"] == "Exists" and e["key"] not in labels:
            return False
    return True


def rendered_docs(path):
    return [("rendered", d) for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]


def cmd_semantics(rendered, profile):
    if profile not in ("base", "dev", "prod"):
        err(f"unknown profile {profile!r} (base, dev or prod)")
        return
    docs = rendered_docs(rendered)
    where_of = f"k8s/{'base' if profile == 'base' else 'overlays/' + profile} (rendered)"
    by_kind = {}
    for name, d in docs:
        by_kind.setdefault(d["kind"], []).append((name, d))
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for _, d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: {**(d.get("data") or {}), **(d.get("stringData") or {})}
               for _, d in by_kind.get("Secret", [])}
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []) + by_kind.get("Job", [])
    pod_labels = {}
    deployments = {d["metadata"]["name"]: (n, d) for n, d in by_kind.get("Deployment", [])}

    # Every pod: restricted Pod Security (the namespace enforces it), env references resolve.
    for name, w in workloads:
        spec = w["spec"]["template"]["spec"]
        wname = f"{where_of} {w['kind']} {w['metadata']['name']}"
        pod_labels[w["metadata"]["name"]] = w["spec"]["template"]["metadata"].get("labels") or {}
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            err(f"{wname}: pod securityContext.runAsNonRoot must be true")
        if (psc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            err(f"{wname}: pod securityContext.seccompProfile.type must be RuntimeDefault")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            csc = c.get("securityContext") or {}
            cname = f"{wname} container {c['name']}"
            if csc.get("allowPrivilegeEscalation") is not False:
                err(f"{cname}: allowPrivilegeEscalation must be false")
            if csc.get("readOnlyRootFilesystem") is not True:
                err(f"{cname}: readOnlyRootFilesystem must be true")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                err(f"{cname}: capabilities.drop must contain ALL")
            res = c.get("resources") or {}
            if not (res.get("requests") or {}).get("cpu") or not (res.get("requests") or {}).get("memory"):
                err(f"{cname}: resources.requests needs cpu and memory")
            if not (res.get("limits") or {}).get("memory"):
                err(f"{cname}: resources.limits needs memory")
            for e in c.get("env", []):
                src = e.get("valueFrom") or {}
                for kind, table in (("configMapKeyRef", configmaps), ("secretKeyRef", secrets)):
                    ref = src.get(kind)
                    if ref and ref.get("key") not in (table.get(ref.get("name")) or {}):
                        err(f"{cname}: env {e['name']} refers to {kind} {ref.get('name')}/{ref.get('key')}, which does not exist")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            vols = {v["name"]: v for v in spec.get("volumes", [])}
            vols.update({t["metadata"]["name"]: t for t in w["spec"].get("volumeClaimTemplates", [])})
            for m in sorted(mounts - set(vols)):
                err(f"{cname}: volumeMount {m} has no volume")
            for v in vols.values():
                cm = (v.get("configMap") or {}).get("name")
                if cm and cm not in configmaps:
                    err(f"{wname}: volume {v['name']} uses ConfigMap {cm}, which does not exist")

    # The chat tiers.
    drain = float(configmaps.get("chat-config", {}).get("CHAT_DRAIN_SECS", 10))
    for tier in TIERS:
        if tier not in deployments:
            err(f"no Deployment {tier}")
            continue
        name, d = deployments[tier]
        where = f"{where_of} Deployment {tier}"
        spec = d["spec"]["template"]["spec"]
        c = next((c for c in spec["containers"] if c["name"] == tier), None)
        if not c:
            err(f"{where}: no container named {tier}")
            continue
        if ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path") != "/healthz":
            err(f"{where}: livenessProbe must GET /healthz")
        if ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path") != "/readyz":
            err(f"{where}: readinessProbe must GET /readyz")
        sleep = seconds_of_sleep(c)
        if sleep is None:
            err(f"{where}: needs a preStop sleep")
        if not ((spec.get("affinity") or {}).get("podAntiAffinity")):
            err(f"{where}: needs podAntiAffinity")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if tier == "chat-gateway":
            env = {e["name"]: e for e in c.get("env", [])}
            if "CHAT_DRAIN_SECS" not in env:
                err(f"{where}: CHAT_DRAIN_SECS is not set")
            need = (sleep or 0) + drain
            if grace <= need + 5:
                err(f"{where}: terminationGracePeriodSeconds {grace} must exceed preStop {sleep} + CHAT_DRAIN_SECS {drain:g} + 5 s of shutdown")
            strategy = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
            if str(strategy.get("maxUnavailable", "25%")) not in ("0", "0%"):
                err(f"{where}: rollingUpdate.maxUnavailable must be 0 (a new gateway is ready before an old one drains)")

    # HPAs: one per tier, pointing at it, with the metrics promised.
    hpas = {d["spec"]["scaleTargetRef"]["name"]: (n, d) for n, d in by_kind.get("HorizontalPodAutoscaler", [])}
    for tier in TIERS:
        if profile == "dev":
            if tier in hpas:
                err(f"{where_of}: dev runs one pod of each tier, but an HPA targets {tier}")
            if deployments.get(tier, (None, {"spec": {}}))[1]["spec"].get("replicas") != 1:
                err(f"{where_of}: dev runs one pod of each tier: Deployment {tier} must have replicas 1")
            continue
        if tier not in hpas:
            err(f"no HorizontalPodAutoscaler targets Deployment {tier}")
            continue
        n, h = hpas[tier]
        kinds = {(m["type"], (m.get("resource") or {}).get("name") or ((m.get(m["type"][0].lower() + m["type"][1:]) or {}).get("metric") or {}).get("name"))
                 for m in h["spec"].get("metrics", [])}
        if ("Resource", "cpu") not in kinds:
            err(f"{where_of}: HPA {h['metadata']['name']} needs a CPU metric")
        if tier == "chat-gateway" and ("Pods", "chat_gateway_connections") not in kinds:
            err(f"{where_of}: gateway HPA needs the Pods metric chat_gateway_connections")
        if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
            err(f"{where_of}: minReplicas > maxReplicas")
    for target, (n, h) in hpas.items():
        if target not in deployments:
            err(f"{where_of}: HPA targets Deployment {target}, which does not exist")

    # PDBs, Services and NetworkPolicies select existing pods.
    def selects_something(selector):
        return any(matches(selector, labels) for labels in pod_labels.values())

    pdb_targets = set()
    for n, p in by_kind.get("PodDisruptionBudget", []):
        if not selects_something(p["spec"]["selector"]):
            err(f"{where_of}: PDB {p['metadata']['name']} selects no pods")
        for wname, labels in pod_labels.items():
            if matches(p["spec"]["selector"], labels):
                pdb_targets.add(wname)
    for tier in TIERS:
        if tier not in pdb_targets:
            err(f"no PodDisruptionBudget covers {tier}")
    for n, s in by_kind.get("Service", []):
        sel = s["spec"].get("selector") or {}
        if not any(all(labels.get(k) == v for k, v in sel.items()) for labels in pod_labels.values()):
            err(f"{where_of}: Service {s['metadata']['name']} selects no pods")
    for n, np in by_kind.get("NetworkPolicy", []):
        sel = np["spec"]["podSelector"]
        if sel and not selects_something(sel):
            err(f"{where_of}: NetworkPolicy {np['metadata']['name']} selects no pods")
    if not any(np["spec"]["podSelector"] == {} for _, np in by_kind.get("NetworkPolicy", [])):
        err("no default-deny NetworkPolicy (podSelector: {})")

    # StatefulSets: headless Services and volume claims.
    services = {s["metadata"]["name"]: s for _, s in by_kind.get("Service", [])}
    for n, st in by_kind.get("StatefulSet", []):
        svc = services.get(st["spec"].get("serviceName"))
        if not svc or svc["spec"].get("clusterIP") != "None":
            err(f"{where_of}: StatefulSet {st['metadata']['name']} needs a headless Service named {st['spec'].get('serviceName')}")
        if not st["spec"].get("volumeClaimTemplates"):
            err(f"{where_of}: StatefulSet {st['metadata']['name']} has no volumeClaimTemplates")
    # Redis: the cluster (base, prod), or one server (dev); chat-config must name what runs.
    cfg = configmaps.get("chat-config", {})
    redis = [st for _, st in by_kind.get("StatefulSet", []) if st["metadata"]["name"] == "redis-cluster"]
    single = [st for _, st in by_kind.get("StatefulSet", []) if st["metadata"]["name"] == "redis"]
    if profile == "dev":
        if redis or not single or single[0]["spec"].get("replicas") != 1:
            err(f"{where_of}: dev runs one Redis (StatefulSet redis, 1 replica) and no redis-cluster")
        if cfg.get("REDIS_MODE") != "standalone" or cfg.get("REDIS_URL") != "redis://redis:6379":
            err(f"{where_of}: chat-config must say REDIS_MODE=standalone, REDIS_URL=redis://redis:6379")
        if single and (single[0]["spec"]["template"]["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "bus":
            err(f"{where_of}: the Redis pods need app.kubernetes.io/component: bus (the tiers' NetworkPolicies select it)")
    else:
        nodes = redis[0]["spec"].get("replicas") if redis else None
        if not nodes or nodes < 6 or nodes % 2:
            err(f"{where_of}: the Redis Cluster StatefulSet (redis-cluster) must run an even number of nodes, at least 6")
        if cfg.get("REDIS_MODE") != "cluster":
            err(f"{where_of}: chat-config must say REDIS_MODE=cluster")
        jobs = [j for _, j in by_kind.get("Job", []) if j["metadata"]["name"] == "redis-cluster-create"]
        if not jobs:
            err("no Job redis-cluster-create")
        elif nodes:
            args = jobs[0]["spec"]["template"]["spec"]["containers"][0].get("args") or []
            want = [f"redis-cluster-{i}.redis-cluster" for i in range(nodes)]
            if args != want:
                err(f"{where_of}: Job redis-cluster-create must name the {nodes} nodes in order, got {args}")
        script = configmaps.get("redis-cluster-create", {}).get("cluster-create.sh")
        if script != (REPO / "deploy" / "redis" / "cluster-create.sh").read_text():
            err("ConfigMap redis-cluster-create (k8s/base/redis-configmap.yaml) differs from deploy/redis/cluster-create.sh; copy it over")

    # prod: what the capacity model sized (k8s/overlays/prod/capacity.yaml) is spread over the
    # zones, one gateway per node, and never below one pod per zone.
    if profile == "prod":
        for tier in TIERS:
            if tier not in deployments:
                continue
            spec = deployments[tier][1]["spec"]["template"]["spec"]
            zone = [t for t in spec.get("topologySpreadConstraints") or []
                    if t.get("topologyKey") == "topology.kubernetes.io/zone"]
            if not zone or any(t.get("whenUnsatisfiable") != "DoNotSchedule" for t in zone):
                err(f"{where_of}: Deployment {tier} must spread over zones with whenUnsatisfiable: DoNotSchedule")
            if tier in hpas and hpas[tier][1]["spec"].get("minReplicas", 1) < 2:
                err(f"{where_of}: HPA {tier} minReplicas must be at least 2 in prod")
        gw = deployments.get("chat-gateway", (None, {"spec": {"template": {"spec": {}}}}))[1]["spec"]["template"]["spec"]
        req = ((gw.get("affinity") or {}).get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
        if not any(t.get("topologyKey") == "kubernetes.io/hostname" for t in req):
            err(f"{where_of}: prod gateways need required podAntiAffinity on kubernetes.io/hostname (a node lost costs one pod's sockets)")
        for n, p in by_kind.get("PodDisruptionBudget", []):
            if p["metadata"]["name"] in TIERS and p["spec"].get("maxUnavailable") != 1:
                err(f"{where_of}: PDB {p['metadata']['name']} must be maxUnavailable: 1 in prod")

    # Ingress: both tiers reachable, WebSocket timeouts on the gateway's.
    ingress_targets = {}
    for n, ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules", []):
            for p in (rule.get("http") or {}).get("paths", []):
                ingress_targets[p["backend"]["service"]["name"]] = (n, ing)
    for svc in ("chat-api", "chat-gateway"):
        if svc not in ingress_targets:
            err(f"no Ingress routes to Service {svc}")
    if "chat-gateway" in ingress_targets:
        n, ing = ingress_targets["chat-gateway"]
        ann = ing["metadata"].get("annotations") or {}
        for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
            if int(ann.get(key, 60)) < 600:
                err(f"{where_of}: {key} should be long (>= 600 s) for WebSockets")

    if not errors:
        print(f"    ok: {where_of}: {len(docs)} objects: probes, drain timing, security contexts, resources, "
              f"HPAs, PDBs, selectors, config keys, StatefulSets, Redis, Ingress"
              + {"dev": ", one pod each", "prod": ", zone spread, anti-affinity"}.get(profile, ""))


def loadtest_docs():
    kust = yaml.safe_load((LOADTEST / "kustomization.yaml").read_text())
    out = []
    for name in kust.get("resources") or []:
        if (LOADTEST / name).exists():
            out += [(name, d) for d in yaml.safe_load_all((LOADTEST / name).read_text()) if isinstance(d, dict)]
    return kust, out


def cmd_loadtest_files():
    kust, _ = loadtest_docs()
    for name in kust.get("resources") or []:
        path = LOADTEST / name
        if path.exists() and not any(d.get("apiVersion") in LOADTEST_CRDS
                                     for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)):
            print(path)


def cmd_loadtest():
    import jsonschema

    kust, docs = loadtest_docs()
    listed = list(kust.get("resources") or [])
    on_disk = sorted(p.name for p in LOADTEST.glob("*.y*ml") if p.name != "kustomization.yaml")
    for f in sorted(set(on_disk) - set(listed)):
        err(f"k8s/loadtest/{f} exists but k8s/loadtest/kustomization.yaml does not list it")
    for f in sorted(set(listed) - set(on_disk)):
        err(f"k8s/loadtest/kustomization.yaml lists {f}, which does not exist")
    claims = {(d["metadata"].get("namespace"), d["metadata"]["name"])
              for _, d in docs if d.get("kind") == "PersistentVolumeClaim"}
    namespaces = {d["metadata"]["name"] for _, d in docs if d.get("kind") == "Namespace"}
    namespaces |= {"chat"}  # the application's own, from k8s/base/namespace.yaml
    runs = 0
    for name, d in docs:
        where = f"k8s/loadtest/{name} {d.get('kind')} {d['metadata'].get('name')}"
        if d.get("kind") != "Namespace" and d["metadata"].get("namespace") not in namespaces:
            err(f"{where}: metadata.namespace must be set to chat-loadtest or chat (the kustomization sets none)")
        api = d.get("apiVersion", "")
        if api in LOADTEST_CRDS:
            schema_file = LOADTEST_CRDS[api].get(d.get("kind"))
            if not schema_file:
                err(f"{where}: no schema for {api} {d.get('kind')} (add one to k8s/schemas/)")
                continue
            schema = json.loads((K8S / "schemas" / schema_file).read_text())
            for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=lambda e: list(e.absolute_path)):
                at = "/".join(str(p) for p in e.absolute_path) or "(top)"
                err(f"{where}: {at}: {e.message}")
            spec = d.get("spec") or {}
            script = spec.get("script") or {}
            claim = (script.get("volumeClaim") or {}).get("name")
            if claim and (d["metadata"].get("namespace"), claim) not in claims:
                err(f"{where}: script.volumeClaim {claim} is not a PersistentVolumeClaim of its namespace here")
            file = (script.get("volumeClaim") or {}).get("file") or (script.get("configMap") or {}).get("file")
            if file and not (REPO / "loadtest" / file).exists():
                err(f"{where}: script {file} is not in loadtest/")
            args = spec.get("arguments") or ""
            for needed in ("-e VUS=", "-e USERS_FILE=/test/", "-e WS_URLS="):
                if needed not in args:
                    err(f"{where}: arguments need {needed}... (the scripts' parameters)")
            for pod in ("runner", "initializer", "starter"):
                p = spec.get(pod) or {}
                if (p.get("securityContext") or {}).get("runAsNonRoot") is not True:
                    err(f"{where}: {pod}.securityContext.runAsNonRoot must be true (restricted namespace)")
                if (p.get("containerSecurityContext") or {}).get("allowPrivilegeEscalation") is not False:
                    err(f"{where}: {pod}.containerSecurityContext.allowPrivilegeEscalation must be false")
            runs += 1
        elif "." in api.split("/")[0] and not api.split("/")[0].endswith(".k8s.io"):
            err(f"{where}: {api} is a custom resource without a schema in k8s/schemas/")
    if runs == 0:
        err("k8s/loadtest has no TestRun")
    if not errors:
        print(f"    ok: k8s/loadtest lists its {len(listed)} files; {runs} TestRuns match k8s/schemas/k6-testrun.json "
              f"and name an existing claim, script and the scripts' parameters")


def main(argv):
    cmd = argv[0] if argv else ""
    if cmd == "listing":
        cmd_listing()
    elif cmd == "files":
        cmd_files()
    elif cmd == "crds":
        cmd_crds(argv[1])
    elif cmd == "semantics" and len(argv) == 3:
        cmd_semantics(argv[1], argv[2])
    elif cmd == "loadtest":
        cmd_loadtest()
    elif cmd == "loadtest-files":
        cmd_loadtest_files()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for e in errors:
        print(f"    FAIL: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
