#!/usr/bin/env python3
"""Fail when a deployment file names something the Rust code does not have.

Reads deploy/Dockerfile, deploy/docker-compose.yml, deploy/haproxy/haproxy.cfg,
deploy/prometheus/{prometheus.yml,alerts.yml}, deploy/grafana/dashboards/*.json, k8s/base/*.yaml and
the patches of k8s/overlays/*/ (their containers' images and env names, ConfigMap keys),
and checks each reference against crates/*:

  binary   a binary name (Dockerfile -p/target/ENTRYPOINT, compose build target or image, k8s
           container) is a package or [[bin]] with a main in crates/*/Cargo.toml
  env      every environment variable set for a chat binary is read by that binary's crate or one of
           its workspace dependencies: clap `env = "NAME"`, std::env::var("NAME"), or RUST_LOG when
           the crate uses tracing-subscriber's EnvFilter
  port     every port that points at a binary (EXPOSE, HEALTHCHECK, containerPort, HAProxy server,
           Prometheus target, CHAT_API_URL) is the port it listens on: the CHAT_LISTEN given next to
           it, else the default of CHAT_LISTEN in the code
  path     every HTTP path probed or routed to a binary (/healthz, /readyz, /metrics, /ws, the
           Ingress paths) appears as a string literal in that binary's crate
  metric   every chat_* metric used by the alert rules and the dashboard is a string literal in
           the service crates (histograms may add _bucket, _sum, _count)

Usage: python3 deploy/check-references.py [--repo DIR]
Exit status: 0 all references resolve, 1 something is missing (listed), 2 cannot run.
Needs Python 3.11+ (tomllib) and PyYAML.
"""

import json
import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    print("check-references: needs PyYAML (pip install pyyaml, or Debian's python3-yaml)", file=sys.stderr)
    sys.exit(2)

REPO = Path(__file__).resolve().parent.parent
if "--repo" in sys.argv:
    REPO = Path(sys.argv[sys.argv.index("--repo") + 1]).resolve()
CRATES = REPO / "crates"
DEPLOY = REPO / "deploy"
K8S = REPO / "k8s" / "base"
# Overlays patch the base: the variables and binaries their patches name are checked too.
K8S_OVERLAYS = REPO / "k8s" / "overlays"

DEFAULT_PATHS_OF = {}  # binary -> set of route literals
problems = defaultdict(list)  # category -> [message]
checked = defaultdict(int)


def rel(p):
    try:
        return str(Path(p).relative_to(REPO))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------- the Rust side

class Crate:
    def __init__(self, name, path, manifest):
        self.name = name
        self.path = path
        self.manifest = manifest
        self.sources = sorted((path / "src").rglob("*.rs")) if (path / "src").exists() else []
        self.text = "\n".join(p.read_text(errors="replace") for p in self.sources)
        deps = manifest.get("dependencies", {})
        self.deps = [d for d in deps if d.startswith("chat-")]
        self.bins = set()
        for b in manifest.get("bin", []):
            self.bins.add(b.get("name", name))
        if (path / "src" / "main.rs").exists():
            self.bins.add(name)


def load_crates():
    crates = {}
    if not CRATES.is_dir():
        return crates
    for manifest_path in sorted(CRATES.glob("*/Cargo.toml")):
        try:
            manifest = tomllib.loads(manifest_path.read_text())
        except tomllib.TOMLDecodeError as e:
            problems["binary"].append(f"{rel(manifest_path)} does not parse: {e}")
            continue
        name = manifest.get("package", {}).get("name")
        if name:
            crates[name] = Crate(name, manifest_path.parent, manifest)
    return crates


CRATE_MAP = load_crates()
BIN_TO_CRATE = {b: c for c in CRATE_MAP.values() for b in c.bins}


def closure(crate_name):
    """The crate and its workspace dependencies, transitively."""
    seen, todo = [], [crate_name]
    while todo:
        c = todo.pop()
        if c in seen or c not in CRATE_MAP:
            continue
        seen.append(c)
        todo.extend(CRATE_MAP[c].deps)
    return seen


def env_vars_of(binary):
    names = set()
    for c in closure(BIN_TO_CRATE[binary].name):
        text = CRATE_MAP[c].text
        names |= set(re.findall(r'\benv\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)"', text))
        names |= set(re.findall(r'env::var(?:_os)?\(\s*"([A-Za-z_][A-Za-z0-9_]*)"', text))
        names |= set(re.findall(r'"(RUST_LOG)"', text))
        if re.search(r"EnvFilter::(try_)?from_default_env|EnvFilter::from_env\(\s*\"RUST_LOG\"|from_env_lossy", text):
            names.add("RUST_LOG")
    return names


def strings_of(binary):
    out = set()
    for c in closure(BIN_TO_CRATE[binary].name):
        out |= set(re.findall(r'"((?:[^"\\]|\\.)*)"', CRATE_MAP[c].text))
    return out


def default_listen_port(binary):
    """Port of `default_value = "host:port"` on the CHAT_LISTEN argument of the binary's crate."""
    text = CRATE_MAP[BIN_TO_CRATE[binary].name].text
    for m in re.finditer(r'#\[arg\(([^]]*env\s*=\s*"CHAT_LISTEN"[^]]*)\)\]', text):
        d = re.search(r'default_value\s*=\s*"[^"]*:(\d+)"', m.group(1))
        if d:
            return int(d.group(1))
    return None


def metric_literals():
    names = set()
    for c in CRATE_MAP.values():
        if c.name == "chat-testkit":
            continue
        names |= set(re.findall(r'"(chat_[a-z0-9_]+)"', c.text))
    return names


# ---------------------------------------------------------------- reference checks

def check_binary(binary, where):
    checked["binary"] += 1
    if binary in BIN_TO_CRATE:
        return True
    known = ", ".join(sorted(BIN_TO_CRATE)) or "none"
    problems["binary"].append(
        f"{where}: binary {binary!r} not found: no crates/*/Cargo.toml package or [[bin]] with a "
        f"main by that name (binaries found: {known})")
    return False


def check_env(binary, name, where):
    checked["env"] += 1
    if binary not in BIN_TO_CRATE:
        return
    if name not in env_vars_of(binary):
        crates = ", ".join(closure(BIN_TO_CRATE[binary].name))
        problems["env"].append(
            f"{where}: {binary} is given {name}, but no `env = \"{name}\"` (clap) or "
            f"env::var(\"{name}\") in crates {crates}")


def effective_port(binary, listen_value, where):
    if listen_value:
        m = re.search(r":(\d+)$", listen_value)
        if m:
            return int(m.group(1))
        problems["port"].append(f"{where}: CHAT_LISTEN={listen_value!r} has no :port")
        return None
    port = default_listen_port(binary) if binary in BIN_TO_CRATE else None
    if port is None and binary in BIN_TO_CRATE:
        problems["port"].append(
            f"{where}: no CHAT_LISTEN given and no `env = \"CHAT_LISTEN\", default_value = \"host:port\"` "
            f"in crate {BIN_TO_CRATE[binary].name} to take the port from")
    return port


def check_port(binary, port, listen_port, where):
    checked["port"] += 1
    if binary not in BIN_TO_CRATE or listen_port is None:
        return
    if int(port) != int(listen_port):
        problems["port"].append(f"{where}: port {port} for {binary}, which listens on {listen_port}")


def check_path(binary, path, where, prefix=False):
    checked["path"] += 1
    if binary not in BIN_TO_CRATE:
        return
    literals = strings_of(binary)
    if path in literals:
        return
    if prefix and any(s.startswith(path + "/") or s == path for s in literals):
        return
    problems["path"].append(
        f"{where}: {binary} has no route {path!r} (no string literal \"{path}\" in crates "
        f"{', '.join(closure(BIN_TO_CRATE[binary].name))})")


def binary_of_image(image):
    m = re.search(r"(?:^|/)(chat-[a-z0-9-]+)(?::|$)", image or "")
    return m.group(1) if m else None


# ---------------------------------------------------------------- Dockerfile

def check_dockerfile():
    path = DEPLOY / "Dockerfile"
    if not path.exists():
        problems["binary"].append("deploy/Dockerfile is missing")
        return {}
    stage = None
    stage_info = {}
    lines = path.read_text().replace("\\\n", " ").splitlines()
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", s, re.IGNORECASE)
        if m:
            stage = m.group(1)
            base = m.group(0).split()[1]
            stage_info.setdefault(stage, {"expose": [], "health": [], "entry": None, "env": [],
                                          "base": base})
            continue
        where = f"deploy/Dockerfile stage {stage}"
        for pkg in re.findall(r"(?:^|\s)-p\s+([A-Za-z0-9_-]+)", s):
            check_binary(pkg, f"{where} (cargo -p)")
        for b in re.findall(r"target/release/([A-Za-z0-9_-]+)", s):
            check_binary(b, f"{where} (target/release)")
        if s.upper().startswith("EXPOSE"):
            stage_info[stage]["expose"] += [int(p.split("/")[0]) for p in s.split()[1:]]
        if s.upper().startswith("HEALTHCHECK"):
            cmd = re.search(r"CMD\s+(\[.*\])", s)
            if cmd:
                args = json.loads(cmd.group(1))
                stage_info[stage]["health"].append(args)
        if s.upper().startswith("ENV "):
            stage_info[stage]["env"] += re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", s[4:])
        if s.upper().startswith("ENTRYPOINT"):
            args = json.loads(s.split(None, 1)[1])
            stage_info[stage]["entry"] = Path(args[0]).name
    for stage, info in stage_info.items():
        if not stage or not stage.startswith("chat-"):
            continue
        where = f"deploy/Dockerfile target {stage}"
        if not check_binary(stage, where):
            continue
        # ENV of this stage and of the stages it is built FROM.
        env, base = list(info["env"]), info["base"]
        while base in stage_info:
            env += stage_info[base]["env"]
            base = stage_info[base]["base"]
        for var in env:
            check_env(stage, var, f"{where} ENV")
        if info["entry"] and info["entry"] != stage:
            problems["binary"].append(f"{where}: ENTRYPOINT runs {info['entry']}, expected {stage}")
        listen = effective_port(stage, None, where)
        for port in info["expose"]:
            check_port(stage, port, listen, f"{where} EXPOSE")
        for args in info["health"]:
            nums = [a for a in args if re.fullmatch(r"\d+", a)]
            paths = [a for a in args if a.startswith("/") and not a.startswith("/usr/")]
            for port in nums:
                check_port(stage, port, listen, f"{where} HEALTHCHECK")
            for p in paths:
                check_path(stage, p, f"{where} HEALTHCHECK")
    return stage_info


# ---------------------------------------------------------------- compose, HAProxy, Prometheus

def check_compose():
    path = DEPLOY / "docker-compose.yml"
    if not path.exists():
        problems["binary"].append("deploy/docker-compose.yml is missing")
        return {}
    compose = yaml.safe_load(path.read_text())
    service_bin = {}
    service_port = {}
    for name, svc in (compose.get("services") or {}).items():
        build = svc.get("build") or {}
        binary = None
        if isinstance(build, dict) and str(build.get("target", "")).startswith("chat-"):
            binary = build["target"]
        binary = binary or binary_of_image(svc.get("image"))
        if not binary:
            continue
        where = f"deploy/docker-compose.yml service {name}"
        if not check_binary(binary, where):
            continue
        service_bin[name] = binary
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
        for var in env:
            check_env(binary, var, where)
        listen = env.get("CHAT_LISTEN")
        listen = None if listen is None else re.sub(r"\$\{[^}]*:-([^}]*)\}", r"\1", str(listen))
        service_port[name] = effective_port(binary, listen, where)
        for url_var in ("CHAT_API_URL",):
            if url_var in env:
                check_url(str(env[url_var]), f"{where} {url_var}", compose_lookup=(service_bin, None))
        hc = svc.get("healthcheck") or {}
        test = hc.get("test")
        if isinstance(test, list):
            for a in test:
                if str(a).startswith("/") and not str(a).startswith("/usr/"):
                    check_path(binary, a, f"{where} healthcheck")
    # CHAT_API_URL needs the api's port, known only now.
    for name, svc in (compose.get("services") or {}).items():
        env = svc.get("environment") or {}
        if isinstance(env, dict) and "CHAT_API_URL" in env:
            check_url(str(env["CHAT_API_URL"]), f"deploy/docker-compose.yml service {name} CHAT_API_URL",
                      compose_lookup=(service_bin, service_port))
    aliases = {}
    for name, svc in (compose.get("services") or {}).items():
        nets = svc.get("networks") or {}
        if isinstance(nets, dict):
            for net in nets.values():
                for a in (net or {}).get("aliases") or []:
                    aliases.setdefault(a, []).append(name)
    return {"bin": service_bin, "port": service_port, "aliases": aliases}


def check_url(url, where, compose_lookup=None, k8s_lookup=None):
    m = re.match(r"https?://([^:/]+)(?::(\d+))?", url)
    if not m:
        problems["port"].append(f"{where}: cannot parse URL {url!r}")
        return
    host, port = m.group(1), int(m.group(2) or 80)
    if compose_lookup:
        service_bin, service_port = compose_lookup
        if service_port is None:
            return
        if host not in service_bin:
            problems["binary"].append(f"{where}: {url} names {host!r}, not a chat service in the compose file")
            return
        check_port(service_bin[host], port, service_port.get(host), where)
    if k8s_lookup:
        svc_ports = k8s_lookup.get(host.split(".")[0])
        if svc_ports is None:
            problems["binary"].append(f"{where}: {url} names Service {host!r}, not defined in k8s/")
        elif port not in svc_ports:
            problems["port"].append(f"{where}: {url} uses port {port}, Service {host} exposes {sorted(svc_ports)}")
        checked["port"] += 1


def check_haproxy(compose):
    path = DEPLOY / "haproxy" / "haproxy.cfg"
    if not path.exists() or not compose:
        return
    section = None
    backend_servers = defaultdict(list)
    backend_paths = defaultdict(list)
    use_backend_paths = []
    acls = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        w = line.split()
        if w[0] in ("backend", "frontend", "listen", "defaults", "global", "resolvers"):
            section = (w[0], w[1] if len(w) > 1 else "")
            continue
        if w[0] in ("server", "server-template"):
            addr = w[3] if w[0] == "server-template" else w[2]
            backend_servers[section[1]].append(addr)
        if w[0] == "http-check" and "uri" in w:
            backend_paths[section[1]].append(w[w.index("uri") + 1])
        if w[0] == "acl" and len(w) >= 4 and w[2] in ("path", "path_beg"):
            acls[w[1]] = w[3]
        if w[0] == "use_backend" and len(w) >= 4 and w[2] == "if":
            use_backend_paths.append((w[1], acls.get(w[3])))
    backend_bins = defaultdict(set)
    for backend, addrs in backend_servers.items():
        for addr in addrs:
            host, _, port = addr.rpartition(":")
            services = [host] if host in compose["bin"] else compose["aliases"].get(host, [])
            for svc in services:
                if svc not in compose["bin"]:
                    continue
                binary = compose["bin"][svc]
                backend_bins[backend].add(binary)
                check_port(binary, port, compose["port"].get(svc), f"deploy/haproxy/haproxy.cfg backend {backend} server {addr}")
    for backend, paths in backend_paths.items():
        for binary in backend_bins[backend]:
            for p in paths:
                check_path(binary, p, f"deploy/haproxy/haproxy.cfg backend {backend} health check")
    for backend, p in use_backend_paths:
        if p:
            for binary in backend_bins[backend]:
                check_path(binary, p, f"deploy/haproxy/haproxy.cfg routes {p} to {backend}")


def check_prometheus(compose):
    path = DEPLOY / "prometheus" / "prometheus.yml"
    if not path.exists() or not compose:
        return
    prom = yaml.safe_load(path.read_text())
    for job in prom.get("scrape_configs", []):
        metrics_path = job.get("metrics_path", "/metrics")
        targets = []
        for sc in job.get("static_configs", []):
            targets += sc.get("targets", [])
        for sd in job.get("dns_sd_configs", []):
            targets += [f"{n}:{sd.get('port')}" for n in sd.get("names", [])]
        for t in targets:
            host, _, port = t.rpartition(":")
            if host in compose["bin"]:
                binary = compose["bin"][host]
                where = f"deploy/prometheus/prometheus.yml job {job['job_name']} target {t}"
                check_port(binary, port, compose["port"].get(host), where)
                check_path(binary, metrics_path, where)


# ---------------------------------------------------------------- Kubernetes

def k8s_docs():
    for f in sorted(K8S.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        try:
            for doc in yaml.safe_load_all(f.read_text()):
                if isinstance(doc, dict):
                    yield f, doc
        except yaml.YAMLError as e:
            problems["binary"].append(f"{rel(f)}: YAML error {e}")


def check_k8s():
    if not K8S.is_dir():
        return
    docs = list(k8s_docs())
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for f, d in docs if d.get("kind") == "ConfigMap"}
    services = {}
    service_target = {}
    for f, d in docs:
        if d.get("kind") == "Service":
            ports = {p.get("port") for p in d["spec"].get("ports", [])}
            services[d["metadata"]["name"]] = ports
            service_target[d["metadata"]["name"]] = (f, d)
    pod_bins = {}  # app label -> (binary, {port name: port}, listen port)
    for f, d in docs:
        kind = d.get("kind")
        if kind not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            continue
        tmpl = d["spec"]["template"]
        for c in tmpl["spec"].get("containers", []):
            binary = binary_of_image(c.get("image")) or (c["name"] if c["name"].startswith("chat-") else None)
            if not binary:
                continue
            where = f"{rel(f)} {kind} {d['metadata']['name']} container {c['name']}"
            if not check_binary(binary, where):
                continue
            env = {}
            for e in c.get("env", []):
                check_env(binary, e["name"], where)
                if "value" in e:
                    env[e["name"]] = e["value"]
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and ref.get("name") in configmaps:
                    env[e["name"]] = configmaps[ref["name"]].get(ref.get("key"))
            for src in c.get("envFrom", []):
                cm = (src.get("configMapRef") or {}).get("name")
                for k, v in (configmaps.get(cm) or {}).items():
                    check_env(binary, k, f"{where} envFrom {cm}")
                    env[k] = v
            listen = effective_port(binary, env.get("CHAT_LISTEN"), where)
            named = {}
            for p in c.get("ports", []):
                check_port(binary, p["containerPort"], listen, f"{where} containerPort")
                if p.get("name"):
                    named[p["name"]] = p["containerPort"]
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                http = (c.get(probe) or {}).get("httpGet")
                if http:
                    port = named.get(http.get("port"), http.get("port"))
                    check_port(binary, port, listen, f"{where} {probe}")
                    check_path(binary, http.get("path", "/"), f"{where} {probe}")
            if "CHAT_API_URL" in env and env["CHAT_API_URL"]:
                check_url(env["CHAT_API_URL"], f"{where} CHAT_API_URL", k8s_lookup=services)
            app = (tmpl["metadata"].get("labels") or {}).get("app.kubernetes.io/name")
            if app:
                pod_bins[app] = (binary, named, listen)
    # Services -> pods -> binary; Ingress and ServiceMonitor paths.
    svc_bin = {}
    for name, (f, d) in service_target.items():
        app = (d["spec"].get("selector") or {}).get("app.kubernetes.io/name")
        if app in pod_bins:
            binary, named, listen = pod_bins[app]
            svc_bin[name] = binary
            for p in d["spec"].get("ports", []):
                tp = p.get("targetPort", p.get("port"))
                port = named.get(tp, tp)
                if isinstance(port, str):
                    problems["port"].append(f"{rel(f)} Service {name}: targetPort {tp!r} is not a named port of {binary}")
                else:
                    check_port(binary, port, listen, f"{rel(f)} Service {name} targetPort")
    for f, d in docs:
        if d.get("kind") == "Ingress":
            for rule in d["spec"].get("rules", []):
                for p in (rule.get("http") or {}).get("paths", []):
                    svc = p["backend"]["service"]["name"]
                    if svc in svc_bin:
                        check_path(svc_bin[svc], p["path"], f"{rel(f)} Ingress {d['metadata']['name']}",
                                   prefix=p.get("pathType") == "Prefix")
        if d.get("kind") == "ServiceMonitor":
            apps = []
            for e in d["spec"]["selector"].get("matchExpressions", []):
                if e.get("key") == "app.kubernetes.io/name":
                    apps += e.get("values", [])
            apps += [v for k, v in (d["spec"]["selector"].get("matchLabels") or {}).items()
                     if k == "app.kubernetes.io/name"]
            for ep in d["spec"].get("endpoints", []):
                for app in apps:
                    if app in svc_bin:
                        check_path(svc_bin[app], ep.get("path", "/metrics"),
                                   f"{rel(f)} ServiceMonitor {d['metadata']['name']}")


def check_k8s_overlays():
    """Patches name containers and variables too; a patch is a partial object, so only those."""
    if not K8S_OVERLAYS.is_dir():
        return
    base_keys = {}
    for f, d in k8s_docs():
        if d.get("kind") == "ConfigMap":
            base_keys[d["metadata"]["name"]] = set((d.get("data") or {}).keys())
    for f in sorted(K8S_OVERLAYS.glob("*/*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for d in yaml.safe_load_all(f.read_text()):
            if not isinstance(d, dict):
                continue
            name = (d.get("metadata") or {}).get("name", "?")
            if d.get("kind") == "ConfigMap" and name in base_keys:
                # A key the base does not define is read by no container (they pick keys by name).
                for k in sorted(set((d.get("data") or {}).keys()) - base_keys[name]):
                    problems["env"].append(f"{rel(f)} ConfigMap {name}: key {k} is not in the base's ConfigMap, so no container reads it")
                checked["env"] += len(d.get("data") or {})
            tmpl = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
            for c in tmpl.get("containers") or []:
                binary = binary_of_image(c.get("image")) or (c.get("name") if str(c.get("name", "")).startswith("chat-") else None)
                if not binary:
                    continue
                where = f"{rel(f)} {d.get('kind')} {name} container {c.get('name')}"
                if not check_binary(binary, where):
                    continue
                for e in c.get("env") or []:
                    check_env(binary, e["name"], where)


# ---------------------------------------------------------------- metrics in rules and dashboards

def check_metrics():
    known = metric_literals()
    used = defaultdict(set)

    def scan(expr, where):
        for name in re.findall(r"\b(chat_[a-z0-9_]+)\b", expr):
            used[name].add(where)

    alerts = DEPLOY / "prometheus" / "alerts.yml"
    if alerts.exists():
        for g in yaml.safe_load(alerts.read_text()).get("groups", []):
            for r in g.get("rules", []):
                scan(str(r.get("expr", "")), f"deploy/prometheus/alerts.yml {r.get('alert') or r.get('record')}")
    for f in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for p in json.loads(f.read_text()).get("panels", []):
            for t in p.get("targets", []):
                scan(t.get("expr", ""), f"{rel(f)} panel {p.get('title')!r}")
    for f in sorted(K8S.glob("*.yaml")) + sorted(K8S_OVERLAYS.glob("*/*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "HorizontalPodAutoscaler":
                for m in doc["spec"].get("metrics", []):
                    spec = m.get(m.get("type", "").lower().replace("containerresource", "containerResource")) or {}
                    name = (spec.get("metric") or {}).get("name")
                    if name:
                        used[name].add(f"{rel(f)} HPA {doc['metadata']['name']}")
    for name, wheres in sorted(used.items()):
        checked["metric"] += 1
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in known or base in known:
            continue
        first = sorted(wheres)[0]
        more = f" (and {len(wheres) - 1} more)" if len(wheres) > 1 else ""
        problems["metric"].append(f"{first}{more}: metric {name!r} is not a string literal in any service crate")


def main():
    if not CRATE_MAP:
        print(f"check-references: no crates found under {rel(CRATES)}", file=sys.stderr)
        return 2
    check_dockerfile()
    compose = check_compose()
    check_haproxy(compose)
    check_prometheus(compose)
    check_k8s()
    check_k8s_overlays()
    check_metrics()
    summary = ", ".join(f"{k} {checked[k]}" for k in ("binary", "env", "port", "path", "metric"))
    total = sum(len(v) for v in problems.values())
    if total:
        print(f"check-references: {total} reference(s) not found in the Rust code:", file=sys.stderr)
        for cat in ("binary", "env", "port", "path", "metric"):
            for msg in sorted(set(problems[cat])):
                word = "WRONG" if cat == "port" else "MISSING"
                print(f"  {word} {cat}: {msg}", file=sys.stderr)
        print(f"(references checked: {summary})", file=sys.stderr)
        return 1
    print(f"check-references: OK (references checked: {summary}; binaries: "
          f"{', '.join(sorted(b for b in BIN_TO_CRATE if b.startswith('chat-')))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
