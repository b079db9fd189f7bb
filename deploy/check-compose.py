#!/usr/bin/env python3
"""Consistency checks of the compose stack, run by deploy/validate-compose.sh.

Usage: check-compose.py PROFILE=RESOLVED.yml [PROFILE=RESOLVED.yml ...] [--dashboard-rules OUT.yml]

Each RESOLVED.yml is the output of `docker-compose config` for one profile. Checks the topology
that a schema cannot: which services each profile starts, that no started service depends on a
stopped one, that the chat services' Redis settings match the profile, the gateways' drain timing,
that HAProxy and Prometheus name services and ports that exist, that bind-mounted files exist,
that Dockerfile targets exist, and that the Grafana dashboard uses the provisioned datasource.
With --dashboard-rules it also writes every dashboard query as a recording rule, so that
`promtool check rules` can parse the PromQL.
"""

import json
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
errors = []


def err(msg):
    errors.append(msg)


def duration_secs(text):
    """Compose durations: 30s, 1m30s, 1h, 500ms."""
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text)):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}[unit]
    return total


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def listen_port(svc, default):
    listen = env_of(svc).get("CHAT_LISTEN", "")
    m = re.search(r":(\d+)$", listen)
    return int(m.group(1)) if m else default


def dockerfile_stages(path):
    stages = set()
    for line in path.read_text().splitlines():
        m = re.match(r"\s*FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            stages.add(m.group(1))
    return stages


def check_profile(profile, config):
    services = config.get("services") or {}
    active = {name for name, svc in services.items()
              if not svc.get("profiles") or profile in svc.get("profiles")}
    where = f"[{profile}]"

    # Which services run.
    must = {"mysql", "chat-api", "chat-worker", "haproxy", "prometheus", "grafana",
            "chat-gateway-1", "chat-gateway-2", "chat-gateway-3"}
    if profile == "standalone":
        must |= {"redis"}
        must_not = {f"redis-node-{i}" for i in range(1, 7)} | {"redis-cluster-create"}
    else:
        must |= {f"redis-node-{i}" for i in range(1, 7)} | {"redis-cluster-create"}
        must_not = {"redis"}
    for name in sorted(must - active):
        err(f"{where} service {name} should run in this profile but does not")
    for name in sorted(must_not & active):
        err(f"{where} service {name} should not run in this profile")

    # Dependencies only on running services (Compose refuses the project otherwise).
    for name in sorted(active):
        deps = services[name].get("depends_on") or {}
        for dep in (deps if isinstance(deps, (list, dict)) else []):
            if dep not in active:
                err(f"{where} {name} depends_on {dep}, which does not run in this profile")

    chat = [n for n in active if n.startswith("chat-")]
    expected_mode = "standalone" if profile == "standalone" else "cluster"
    for name in sorted(chat):
        env = env_of(services[name])
        if env.get("REDIS_MODE") != expected_mode:
            err(f"{where} {name}: REDIS_MODE={env.get('REDIS_MODE')!r}, expected {expected_mode!r}")
        urls = [u for u in env.get("REDIS_URL", "").split(",") if u]
        if not urls:
            err(f"{where} {name}: REDIS_URL is empty")
        if expected_mode == "standalone" and len(urls) != 1:
            err(f"{where} {name}: standalone REDIS_URL must be one URL, got {urls}")
        for url in urls:
            m = re.match(r"rediss?://(?:[^@/]*@)?([^:/]+)(?::(\d+))?", url)
            if not m:
                err(f"{where} {name}: cannot parse REDIS_URL entry {url!r}")
            elif m.group(1) not in active:
                err(f"{where} {name}: REDIS_URL host {m.group(1)!r} is not a running service")

    # chat-api x2.
    api = services.get("chat-api", {})
    replicas = (api.get("deploy") or {}).get("replicas", 1)
    if replicas < 2:
        err(f"{where} chat-api should run 2 replicas (deploy.replicas), has {replicas}")
    db = env_of(api).get("DATABASE_URL", "")
    m = re.match(r"mysql://[^@]+@([^:/]+):(\d+)/\w+", db)
    if not m:
        err(f"{where} chat-api: DATABASE_URL {db!r} is not mysql://user:pass@host:port/db")
    elif m.group(1) not in active:
        err(f"{where} chat-api: DATABASE_URL host {m.group(1)} is not a running service")

    # Gateways: distinct node ids, grace period longer than the drain window.
    gateways = sorted(n for n in active if n.startswith("chat-gateway"))
    node_ids = [env_of(services[g]).get("CHAT_NODE_ID") for g in gateways]
    if len(gateways) < 3:
        err(f"{where} expected 3 gateways, found {gateways}")
    if len(set(node_ids)) != len(node_ids) or None in node_ids:
        err(f"{where} gateways need distinct CHAT_NODE_ID values, got {node_ids}")
    for g in gateways:
        svc = services[g]
        drain = float(env_of(svc).get("CHAT_DRAIN_SECS", "10"))
        grace = duration_secs(svc.get("stop_grace_period", "10s"))
        if grace <= drain:
            err(f"{where} {g}: stop_grace_period {grace:g}s must be longer than CHAT_DRAIN_SECS {drain:g}s")
        elif grace < drain + 5:
            err(f"{where} {g}: stop_grace_period {grace:g}s leaves under 5 s after the {drain:g}s drain")

    # Bind mounts and Dockerfiles.
    for name in sorted(active):
        svc = services[name]
        for vol in svc.get("volumes") or []:
            source = vol.get("source") if isinstance(vol, dict) else str(vol).split(":")[0]
            kind = vol.get("type") if isinstance(vol, dict) else ("bind" if source.startswith(("/", ".")) else "volume")
            if kind == "bind" and not Path(source).exists():
                err(f"{where} {name}: bind mount source {source} does not exist")
        build = svc.get("build")
        if build:
            dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
            if not dockerfile.exists():
                err(f"{where} {name}: Dockerfile {dockerfile} does not exist")
            elif build.get("target") and build["target"] not in dockerfile_stages(dockerfile):
                err(f"{where} {name}: Dockerfile {dockerfile} has no stage {build['target']!r}")

    return services, active


def service_ports(services):
    """Container ports each service listens on (chat services from CHAT_LISTEN)."""
    known = {"chat-api": 8080, "chat-worker": 8082}
    ports = {}
    for name, svc in services.items():
        if name in known:
            ports[name] = {listen_port(svc, known[name])}
        elif name.startswith("chat-gateway"):
            ports[name] = {listen_port(svc, 8081)}
    ports.update({"mysql": {3306}, "redis": {6379}, "haproxy": {8080, 8081, 8404},
                  "mysqld-exporter": {9104}, "redis-exporter": {9121}, "prometheus": {9090},
                  "grafana": {3000}})
    for i in range(1, 7):
        ports[f"redis-node-{i}"] = {6379}
    return ports


def aliases(services):
    out = {}
    for name, svc in services.items():
        nets = svc.get("networks") or {}
        if isinstance(nets, dict):
            for net in nets.values():
                for alias in (net or {}).get("aliases") or []:
                    out.setdefault(alias, set()).add(name)
    return out


def check_haproxy(services):
    cfg = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    ports = service_ports(services)
    alias = aliases(services)
    backends = {}
    current = None
    for raw in cfg.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] in ("backend", "frontend", "listen", "defaults", "global", "resolvers"):
            current = (words[0], words[1] if len(words) > 1 else "")
            backends.setdefault(current, [])
            continue
        backends.setdefault(current, []).append(words)
        if words[0] in ("server", "server-template"):
            addr = words[3] if words[0] == "server-template" else words[2]
            host, _, port = addr.rpartition(":")
            targets = {host} if host in services else alias.get(host, set())
            if not targets:
                err(f"haproxy.cfg: {current[1]} names {host!r}, not a compose service or alias")
                continue
            for t in targets:
                if port and int(port) not in ports.get(t, set()):
                    err(f"haproxy.cfg: {current[1]} sends to {host}:{port} but {t} listens on {sorted(ports.get(t, []))}")
    for (kind, name), lines in backends.items():
        if kind != "backend":
            continue
        text = "\n".join(" ".join(w) for w in lines)
        if "uri /readyz" not in text:
            err(f"haproxy.cfg: backend {name} has no health check on /readyz")
    gw = "\n".join(" ".join(w) for w in backends.get(("backend", "be_gateway"), []))
    api = "\n".join(" ".join(w) for w in backends.get(("backend", "be_api"), []))
    if "balance leastconn" not in gw:
        err("haproxy.cfg: be_gateway must use balance leastconn")
    if "balance roundrobin" not in api:
        err("haproxy.cfg: be_api must use balance roundrobin")
    if not re.search(r"timeout tunnel (\d+)(h|m)", cfg):
        err("haproxy.cfg: needs a long `timeout tunnel` (minutes or hours) for WebSockets")


def check_prometheus(services):
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    ports = service_ports(services)
    jobs = {job["job_name"]: job for job in prom.get("scrape_configs", [])}
    for wanted in ("chat-api", "chat-gateway", "chat-worker"):
        if wanted not in jobs:
            err(f"prometheus.yml: no scrape job {wanted!r}")
    for name, job in jobs.items():
        for sc in job.get("static_configs", []):
            for target in sc.get("targets", []):
                host, _, port = target.rpartition(":")
                if host == "localhost":
                    continue
                if host not in services:
                    err(f"prometheus.yml: job {name} scrapes {target}, {host} is not a compose service")
                elif int(port) not in ports.get(host, set()):
                    err(f"prometheus.yml: job {name} scrapes {target}, {host} listens on {sorted(ports.get(host, []))}")
        for sd in job.get("dns_sd_configs", []):
            for host in sd.get("names", []):
                if host not in services:
                    err(f"prometheus.yml: job {name} resolves {host}, not a compose service")
                elif sd.get("port") not in ports.get(host, set()):
                    err(f"prometheus.yml: job {name} uses {host}:{sd.get('port')}, {host} listens on {sorted(ports.get(host, []))}")


def check_grafana(rules_out):
    ds_dir = DEPLOY / "grafana" / "provisioning" / "datasources"
    uids = set()
    for f in ds_dir.glob("*.yml"):
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources", []):
            uids.add(ds.get("uid"))
    exprs = []
    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    if not dashboards:
        err("deploy/grafana/dashboards has no dashboard JSON")
    for f in dashboards:
        try:
            dash = json.loads(f.read_text())
        except ValueError as e:
            err(f"{f.name}: not JSON: {e}")
            continue
        if not dash.get("uid") or not dash.get("title"):
            err(f"{f.name}: dashboard needs uid and title")
        ids = set()
        for panel in dash.get("panels", []):
            if panel.get("id") in ids:
                err(f"{f.name}: duplicate panel id {panel.get('id')}")
            ids.add(panel.get("id"))
            if panel.get("type") == "row":
                continue
            for t in panel.get("targets", []):
                uid = (t.get("datasource") or panel.get("datasource") or {}).get("uid")
                if uid not in uids:
                    err(f"{f.name}: panel {panel.get('title')!r} uses datasource uid {uid!r}, provisioned: {sorted(uids)}")
                if t.get("expr"):
                    exprs.append((f.name, panel.get("title"), t["expr"]))
    if rules_out:
        # Grafana's interval variables become a fixed range so promtool can parse the PromQL.
        rules = []
        for i, (_, title, expr) in enumerate(exprs):
            expr = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
            rules.append({"record": f"dashboard:query_{i}", "expr": expr})
        Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return len(exprs)


def main(argv):
    rules_out = None
    pairs = []
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--dashboard-rules":
            rules_out = args.pop(0)
        else:
            profile, _, path = a.partition("=")
            pairs.append((profile, path))
    all_services = {}
    for profile, path in pairs:
        config = yaml.safe_load(Path(path).read_text())
        services, _ = check_profile(profile, config)
        all_services.update(services)
    if all_services:
        check_haproxy(all_services)
        check_prometheus(all_services)
    n = check_grafana(rules_out)
    if errors:
        for e in errors:
            print(f"    FAIL: {e}", file=sys.stderr)
        return 1
    print(f"    ok: profiles {', '.join(p for p, _ in pairs)}: services, dependencies, Redis settings, "
          f"drain timing, mounts, Dockerfile targets, HAProxy and Prometheus targets, "
          f"{n} dashboard queries")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
