#!/usr/bin/env python3
"""The capacity model's measurements, from loadtest/run.sh results folders (chat-load runs).

usage: capacity.py measure DIR                       what a run did and what each process used (JSON)
       capacity.py solve CONNECT PAIRS GROUPS FLOOR_BEFORE_US FLOOR_AFTER_US DATE
                                                     unit costs from three calibration runs, as the
                                                     TOML of docs/capacity-units.toml (stdout)
       capacity.py compare PREDICTION.json DIR        predicted vs measured per process, % error;
                                                     exit 1 when a compared figure is off by > 25%

A run's counts: sessions (report.json sessions_authenticated), messages (msgs_acked), deliveries
(msgs_received from others + the sender's own echo of each acked message), final replays (one per
user when FINAL_SYNC is on), socket-seconds (the gateways' open fds above their first sample,
integrated over resources.csv). Each process's CPU is its last cumulative sample minus its first.
MariaDB is shared with other users of the machine: a run's folder may hold baseline.json
(capacity-check.sh samples the server's CPU rate before the run), which is subtracted.
"""
import csv
import json
import os
import re
import sys

LIMIT = 0.25


def rows_of(d):
    with open(os.path.join(d, "resources.csv")) as f:
        return list(csv.DictReader(f))


def series(rows, col):
    return [(float(r["t"]), float(r[col])) for r in rows if r.get(col) not in (None, "")]


def cpu_used(rows, name, t_from=None, t_to=None):
    s = [(t, v) for t, v in series(rows, f"{name}_cpu_s")
         if (t_from is None or t >= t_from) and (t_to is None or t <= t_to)]
    return (s[-1][1] - s[0][1], s[-1][0] - s[0][0]) if len(s) > 1 else (0.0, 0.0)


def peak(rows, col):
    s = series(rows, col)
    return max(v for _, v in s) if s else 0.0


def knobs(d):
    """NAME=VALUE pairs of the run's command line (command.txt)."""
    out = {}
    try:
        line = open(os.path.join(d, "command.txt")).read().splitlines()[1]
    except (OSError, IndexError):
        return out
    for m in re.finditer(r"\b([A-Z][A-Z0-9_]*)=(\S+)", line):
        out[m.group(1)] = m.group(2)
    return out


def measure(d):
    rows = rows_of(d)
    rep = json.load(open(os.path.join(d, "report.json")))
    fig = rep.get("figures", {})
    k = knobs(d)
    script = rep.get("script", "").split()[0].replace(".js", "")
    gws = sorted({c[:-6] for c in rows[0] if re.fullmatch(r"gw\d+_cpu_s", c)}, key=lambda x: int(x[2:]))
    t0 = float(rows[0]["t"])
    # Socket-seconds: each gateway's fds above its first sample, trapezoids over the samples.
    socket_s = 0.0
    for g in gws:
        s = series(rows, f"{g}_fds")
        base = s[0][1]
        for (ta, a), (tb, b) in zip(s, s[1:]):
            socket_s += (max(a - base, 0) + max(b - base, 0)) / 2 * (tb - ta)
    acked = float(fig.get("msgs_acked") or 0)
    received = float(fig.get("msgs_received") or 0)
    vus = float(rep.get("vus") or fig.get("vus") or 0)
    final = script in ("chat", "storm") and k.get("FINAL_SYNC", "1") != "0"
    end = float(k.get("RAMP_S", 30)) + float(k.get("HOLD_S", 120)) if script in ("chat", "storm") else None
    procs = {}
    baseline = {}
    try:
        baseline = json.load(open(os.path.join(d, "baseline.json")))
    except OSError:
        pass
    for name in [c[:-6] for c in rows[0] if c.endswith("_cpu_s")]:
        used, span = cpu_used(rows, name)
        if name in baseline:
            used = max(used - baseline[name] * span, 0.0)
        p = {"cpu_s": used, "span_s": span, "rss_peak_mib": peak(rows, f"{name}_rss_mb"),
             "rss_first_mib": series(rows, f"{name}_rss_mb")[0][1] if series(rows, f"{name}_rss_mb") else 0.0}
        if end is not None:
            tail, tail_span = cpu_used(rows, name, t_from=t0 + end)
            if name in baseline:
                tail = max(tail - baseline[name] * tail_span, 0.0)
            p["tail_cpu_s"], p["tail_span_s"] = tail, tail_span
        procs[name] = p
    return {
        "dir": d, "script": script, "vus": vus, "gateways": len(gws), "knobs": k,
        "counts": {"sessions": float(fig.get("sessions_authenticated") or fig.get("auth_ok") or 0),
                   "socket_seconds": socket_s, "messages": acked, "deliveries": received + acked,
                   "resumes": vus if final else 0.0},
        "processes": procs,
    }


def hold_rate(rows, name, t_from, t_to):
    used, span = cpu_used(rows, name, t_from, t_to)
    return used / span if span > 0 else 0.0


def gw_sum(m, key):
    return sum(p[key] for n, p in m["processes"].items() if re.fullmatch(r"gw\d+", n))


def solve(connect_dir, pairs_dir, groups_dir, floor_us, date):
    c, p, g = measure(connect_dir), measure(pairs_dir), measure(groups_dir)
    cr = rows_of(connect_dir)
    ck = c["knobs"]
    r1, h1, r2, h2 = (float(ck.get(x, dflt)) for x, dflt in (("RAMP1_S", 60), ("HOLD1_S", 60), ("RAMP2_S", 30), ("HOLD2_S", 60)))
    t0 = float(cr[0]["t"])
    hold = (t0 + r1 + h1 + r2 + 6, t0 + r1 + h1 + r2 + h2 - 2)
    gws = [n for n in c["processes"] if re.fullmatch(r"gw\d+", n)]
    sockets = c["vus"]
    idle = {}
    for name in ["gw", "api", "mariadb", "redis"]:
        names = gws if name == "gw" else [name]
        rate = sum(hold_rate(cr, n, *hold) for n in names)
        idle[name] = rate
    cc = c["counts"]

    def total(m, name):
        if name == "gw":
            return gw_sum(m, "cpu_s")
        return m["processes"].get(name, {}).get("cpu_s", 0.0)

    def tail(m, name):
        if name == "gw":
            return gw_sum(m, "tail_cpu_s")
        return m["processes"].get(name, {}).get("tail_cpu_s", 0.0)

    units = {}
    # Per socket-second (idle, the hold's rate over its sockets) and per session (the rest).
    for name in ["gw", "redis"]:
        units[f"{name}.socket"] = idle[name] / sockets
    for name in ["gw", "api", "mariadb", "redis"]:
        per_socket_s = units.get(f"{name}.socket", 0.0)
        units[f"{name}.session"] = max(total(c, name) - per_socket_s * cc["socket_seconds"], 0.0) / cc["sessions"] * 1e6
        units[f"{name}.socket"] = per_socket_s * 1e6
    # Final replays: the tail after the sending window (its idle share taken out), per replay.
    for name in ["api", "mariadb"]:
        vals = []
        for m in (p, g):
            span = m["processes"][name].get("tail_span_s", 0.0)
            base = idle[name] * span
            vals.append(max(tail(m, name) - base, 0.0) / max(m["counts"]["resumes"], 1.0) * 1e6)
        units[f"{name}.resume"] = sum(vals) / len(vals)
    # Per message and per delivery: what is left of each chat run, two runs, two unknowns.
    for name in ["gw", "api", "mariadb", "redis"]:
        res = []
        for m in (p, g):
            k = m["counts"]
            left = total(m, name) - units[f"{name}.session"] / 1e6 * k["sessions"] \
                - units.get(f"{name}.socket", 0.0) / 1e6 * k["socket_seconds"] \
                - units.get(f"{name}.resume", 0.0) / 1e6 * k["resumes"]
            res.append((k["messages"], k["deliveries"], left))
        (m1, d1, y1), (m2, d2, y2) = res
        det = m1 * d2 - m2 * d1
        per_msg = (y1 * d2 - y2 * d1) / det
        per_del = (m1 * y2 - m2 * y1) / det
        if per_del < 0:  # nothing per delivery: all of it per message
            per_msg, per_del = (y1 + y2) / (m1 + m2), 0.0
        if per_msg < 0:
            per_msg, per_del = 0.0, (y1 + y2) / (d1 + d2)
        units[f"{name}.message"] = per_msg * 1e6
        units[f"{name}.delivery"] = per_del * 1e6
    ngw = len(gws)
    base_rss = sum(c["processes"][n]["rss_first_mib"] for n in gws) / ngw
    idle_bytes = (gw_sum(c, "rss_peak_mib") / ngw - base_rss) * 1048576 / (c["vus"] / ngw)
    chat_bytes = (gw_sum(p, "rss_peak_mib") / ngw - base_rss) * 1048576 / (p["vus"] / ngw)
    api_rss = max(m["processes"]["api"]["rss_peak_mib"] for m in (p, g))
    return units, {"gw_base_rss": base_rss, "idle_bytes": idle_bytes, "chat_bytes": chat_bytes, "api_rss": api_rss,
                   "dirs": [connect_dir, pairs_dir, groups_dir], "floor_us": floor_us, "date": date}


def toml_unit(section, name, value, unit, what, command, date, floor):
    q = lambda s: json.dumps(s, ensure_ascii=False)
    return (f"[{section}.{name}]\nvalue = {value:.6g}\nunit = {q(unit)}\nwhat = {q(what)}\n"
            f"command = {q(command)}\ndate = {q(date)}\nfloor = {q(floor)}\n")


def cmd_solve(argv):
    connect_dir, pairs_dir, groups_dir, floor_before, floor_after, date = argv
    floor_us = (float(floor_before) + float(floor_after)) / 2
    u, facts = solve(connect_dir, pairs_dir, groups_dir, floor_us, date)
    cmds = {}
    for d in facts["dirs"]:
        line = open(os.path.join(d, "command.txt")).read().splitlines()[1].replace(".js ", " ", 1)
        cmds[d] = f"DRIVER=chat-load {line} [loadtest/results/{os.path.basename(os.path.normpath(d))}]"
    cc, cp, cg = (cmds[d] for d in facts["dirs"])
    both = f"{cp} and {cg}, solved together (loadtest/lib/capacity.py solve)"
    floor = f"write {float(floor_before):.2f} µs before the runs, {float(floor_after):.2f} µs after (chat-write-floor --sockets 999)"
    nofloor = "none: memory does not depend on the VM's speed"
    out = ["# Unit costs of the capacity model (docs/capacity.md). Written by scripts/capacity-calibrate.sh",
           f"# {int(float(measure(connect_dir)['vus']))} from three chat-load runs and the socket-write floor before and after them; edit by hand",
           "# only to record a figure measured by the command named beside it. CPU in µs of one core of this",
           "# machine; chat-capacity reads this file at build time (or --units FILE).",
           "",
           "[machine]",
           f'description = "2 vCPUs (AMD EPYC VM), loopback, MariaDB and Redis on the same host; shared with other builds"',
           f"floor_write_us = {float(floor_us):.3g}",
           'floor_command = "\\"$(scripts/lib/target-dir.sh)/release/chat-write-floor\\" --sockets 999"',
           ""]
    g = [
        ("session_us", u["gw.session"], "µs CPU per session", "gateway: upgrade, auth, subscribe, presence, close (both gateways)", cc, floor),
        ("socket_us_per_s", u["gw.socket"], "µs CPU per socket-second", "gateway: an idle authenticated socket (pings, presence refresh), the last hold's rate", cc, floor),
        ("send_us", u["gw.message"], "µs CPU per message sent", "gateway: a send frame read, forwarded to chat-api, acked", both, floor),
        ("delivery_us", u["gw.delivery"], "µs CPU per delivery", "gateway: one Redis message read and one event written to a socket", both, floor),
    ]
    out += [toml_unit("gateway", *x[:4], x[4], date, x[5]) for x in g]
    out.append(toml_unit("gateway", "redis_share", 0.15, "share of delivery_us",
                         "the per-Redis-message part of a delivery (parse 3%, decode and dispatch ~12% of the gateways' samples): what per-chat channels share among a gateway's members",
                         "perf record -a -e cpu-clock -F 999 --call-graph dwarf,16384 during scripts/bench-fanout.sh 999 200 (docs/performance.md, Fan-out)",
                         "2026-12-03", "write 5.61 µs (same run)"))
    out.append(toml_unit("gateway", "base_rss_mib", facts["gw_base_rss"], "MiB", "gateway RSS before the first socket", cc, date, nofloor))
    out.append(toml_unit("gateway", "socket_idle_bytes", facts["idle_bytes"], "bytes per socket", "gateway RSS per idle authenticated socket at the peak", cc, date, nofloor))
    out.append(toml_unit("gateway", "socket_chat_bytes", facts["chat_bytes"], "bytes per socket", "gateway RSS per socket that sends and receives (peak of the pairs run)", cp, date, nofloor))
    a = [
        ("session_us", u["api.session"], "µs CPU per session", "chat-api: presence notices (online, offline) and their audiences", cc),
        ("message_us", u["api.message"], "µs CPU per message", "chat-api: HTTP, validation, the batch transaction, the ack", both),
        ("publish_us", u["api.delivery"], "µs CPU per publish", "chat-api: one member channel's PUBLISH (and the push-recipient lookup)", both),
        ("resume_us", u["api.resume"], "µs CPU per replay", "chat-api: a socket's final replay from its cursor (the tail after the sending window)", both),
    ]
    out += [toml_unit("api", *x, date, floor) for x in a]
    out.append(toml_unit("api", "rss_mib", facts["api_rss"], "MiB", "chat-api peak RSS in the chat runs", both, date, nofloor))
    out.append(toml_unit("mysql", "message_us", u["mariadb.message"] + u["mariadb.delivery"] * 2, "µs CPU per message",
                         "MariaDB: a message in the send batch (a pair's; per-delivery share folded in at two members)", both, date,
                         floor + "; MariaDB is shared: its CPU rate before the run subtracted"))
    out.append(toml_unit("mysql", "session_us", u["mariadb.session"], "µs CPU per session", "MariaDB: the presence last_seen batches of a session", cc, date, floor))
    out.append(toml_unit("mysql", "resume_us", u["mariadb.resume"], "µs CPU per replay", "MariaDB: the sync queries of a final replay", both, date, floor))
    out.append(toml_unit("mysql", "rows_per_message", 3, "rows", "the message INSERT, the chat's counter UPDATE, the sender's read watermark UPDATE",
                         "crates/chat-store/src/mysql/send_batch/ (design fact)", date, "none: a count"))
    r = [
        ("message_us", u["redis.message"], "µs CPU per message", "Redis: a message's commands besides its publishes (rate limit)", both),
        ("publish_us", u["redis.delivery"], "µs CPU per publish", "Redis: one PUBLISH to a subscribed channel and its delivery", both),
        ("session_us", u["redis.session"], "µs CPU per session", "Redis: SUBSCRIBE/UNSUBSCRIBE, presence scripts", cc),
        ("socket_us_per_s", u["redis.socket"], "µs CPU per socket-second", "Redis: presence refresh of an idle socket", cc),
    ]
    out += [toml_unit("redis", *x, date, floor + "; a private redis-server for the runs") for x in r]
    out.append(toml_unit("wire", "frame_overhead_bytes", 306, "bytes",
                         "a new_message JSON frame beyond its text: ids of a large deployment, UUID client id, cursor, 4-byte WebSocket header",
                         "cargo test -p chat-capacity the_frame_overhead_matches_the_wire_encoding", date, "none: a size"))
    out.append(toml_unit("wire", "packet_overhead_bytes", 74, "bytes", "IPv4 20 + TCP 32 (timestamps) + TLS 1.3 record 22 per frame",
                         "protocol headers (design fact)", date, "none: a size"))
    out.append(toml_unit("wire", "ping_interval_s", 20, "s", "the gateway's ping to an idle socket",
                         "crates/chat-gateway/src/config.rs CHAT_PING_INTERVAL_SECS default", date, "none: a setting"))
    print("\n".join(out))


def cmd_compare(argv):
    pred_path, d = argv
    pred = json.load(open(pred_path))
    m = measure(d)
    print(f"run: {d}")
    pc, mc = pred["counts"], m["counts"]
    print(f"{'count':<16} {'predicted':>12} {'measured':>12} {'error':>8}")
    for k in ("sessions", "socket_seconds", "messages", "deliveries", "resumes"):
        e = (pc[k] - mc[k]) / mc[k] * 100 if mc[k] else 0.0
        print(f"{k:<16} {pc[k]:>12.0f} {mc[k]:>12.0f} {e:>+7.1f}%")
    print()
    print(f"{'process':<10} {'CPU-s pred':>10} {'meas':>8} {'error':>8}   {'RSS MiB pred':>12} {'meas':>8} {'error':>8}")
    bad = []
    for p in pred["processes"]:
        name = p["process"]
        got = m["processes"].get(name)
        if not got:
            print(f"{name:<10} {p['cpu_s']:>10.2f} {'-':>8} (not sampled)")
            continue
        ce = (p["cpu_s"] - got["cpu_s"]) / got["cpu_s"] * 100 if got["cpu_s"] else float("inf")
        line = f"{name:<10} {p['cpu_s']:>10.2f} {got['cpu_s']:>8.2f} {ce:>+7.1f}%"
        # A process that used under a CPU-second is below the sampler's resolution for a verdict.
        if got["cpu_s"] >= 1.0 and abs(ce) > LIMIT * 100:
            bad.append(f"{name} CPU")
        if p.get("rss_mib") is not None:
            re_ = (p["rss_mib"] - got["rss_peak_mib"]) / got["rss_peak_mib"] * 100
            line += f"   {p['rss_mib']:>12.1f} {got['rss_peak_mib']:>8.1f} {re_:>+7.1f}%"
            if abs(re_) > LIMIT * 100:
                bad.append(f"{name} RSS")
        print(line)
    print()
    if bad:
        print(f"capacity-check: off by more than {LIMIT:.0%}: {', '.join(bad)}")
        return 1
    print(f"capacity-check: every compared figure within {LIMIT:.0%}")
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "measure":
        print(json.dumps(measure(argv[1]), indent=2))
        return 0
    if len(argv) == 7 and argv[0] == "solve":
        cmd_solve(argv[1:])
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        return cmd_compare(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
