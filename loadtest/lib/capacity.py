#!/usr/bin/env python3
"""The capacity model's measurements, from loadtest/run.sh results folders (chat-load runs).

usage: capacity.py measure DIR                       what a run did and what each process used (JSON)
       capacity.py solve CONNECT_A CONNECT_B PAIRS_A PAIRS_B GROUPS GROUPS_WIDE FLOOR_BEFORE_US FLOOR_AFTER_US DATE
                                                     unit costs from the calibration runs, as the
                                                     TOML of docs/capacity-units.toml (stdout);
                                                     each of the six may name repeated runs of
                                                     its shape, DIR,DIR,...
       capacity.py compare PREDICTION.json DIR [--floor-us F --calibration-floor-us C]
                                                     predicted vs measured per process, % error
                                                     (and, for information, the error with the
                                                     predicted CPU scaled by F / C, the write
                                                     floors of the run and of the calibration);
                                                     exit 1 when a compared figure is off by > 25%

A run's counts: sessions (report.json sessions_authenticated), messages (msgs_acked), deliveries
(msgs_received from others + the sender's own echo of each acked message), publishes and Redis
deliveries to gateways (from the pair and group messages, told apart by how many each reached,
and the routing: see measure), final replays (one per
user when FINAL_SYNC is on), socket-seconds (the gateways' open fds above their first sample,
integrated over resources.csv), the seconds during which sessions arrive (the ramps) and messages
flow (the sending window). Each process's CPU is its last cumulative sample minus its first; its
RSS is the peak before the final replays (chat), whose burst is reported apart.
"""
import csv
import json
import math
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
    # Group and pair messages apart: a pair's reaches one other member, a group's G - 1.
    gsize = int(k.get("GROUP_SIZE", 0) or 0)
    group_msgs = max(received - acked, 0.0) / (gsize - 2) if gsize > 2 else 0.0
    pair_msgs = max(acked - group_msgs, 0.0)
    vus = float(rep.get("vus") or fig.get("vus") or 0)
    final = script in ("chat", "storm") and k.get("FINAL_SYNC", "1") != "0"
    end = float(k.get("RAMP_S", 30)) + float(k.get("HOLD_S", 120)) if script in ("chat", "storm") else None
    procs = {}
    for name in [c[:-6] for c in rows[0] if c.endswith("_cpu_s")]:
        used, span = cpu_used(rows, name)
        rss = series(rows, f"{name}_rss_mb")
        steady = [v for t, v in rss if end is None or t <= t0 + end]
        p = {"cpu_s": used, "span_s": span, "rss_peak_mib": max(steady) if steady else 0.0,
             "rss_burst_mib": max(v for _, v in rss) if rss else 0.0,
             "rss_first_mib": rss[0][1] if rss else 0.0}
        if end is not None:
            p["tail_cpu_s"], p["tail_span_s"] = cpu_used(rows, name, t_from=t0 + end)
        procs[name] = p
    if script in ("chat", "storm"):
        ramp, hold = float(k.get("RAMP_S", 30)), float(k.get("HOLD_S", 120))
        arrival_s, sending_s = ramp, hold - float(k.get("SETTLE_S", 5)) - float(k.get("DRAIN_S", 5))
    else:
        arrival_s = float(k.get("RAMP1_S", 60)) + float(k.get("RAMP2_S", 30))
        sending_s = 0.0
    return {
        "dir": d, "script": script, "vus": vus, "gateways": len(gws), "knobs": k,
        "counts": {"sessions": float(fig.get("sessions_authenticated") or fig.get("auth_ok") or 0),
                   "socket_seconds": socket_s, "messages": acked, "deliveries": received + acked,
                   # A pair's message is published on its two members' channels, each read by
                   # its member's gateway; a group's once on its chat's channel, read by every
                   # gateway holding a member (user k is on gateway k mod n, a group is
                   # consecutive users).
                   "publishes": 2 * pair_msgs + group_msgs,
                   "redis_deliveries": 2 * pair_msgs + group_msgs * min(gsize, len(gws)),
                   "bus_messages_counted": bus_messages(d),
                   "resumes": vus if final else 0.0, "arrival_s": arrival_s, "sending_s": sending_s},
        "processes": procs,
    }


def bus_messages(d):
    """What the gateways read from Redis, counted by them at the end of the run
    (chat_gateway_bus_messages_total in logs/gw*-metrics.txt; presence and notices included),
    or None when the run kept no such count."""
    logs = os.path.join(d, "logs")
    if not os.path.isdir(logs):
        return None
    total_, seen = 0.0, False
    for name in sorted(os.listdir(logs)):
        if not re.fullmatch(r"gw\d+-metrics\.txt", name):
            continue
        for line in open(os.path.join(logs, name)):
            if line.startswith("chat_gateway_bus_messages_total"):
                total_ += float(line.split()[-1])
                seen = True
    return total_ if seen else None


# Below this many sockets a gateway the idle cost is taken at this many (chat-capacity units.rs).
MIN_DENSITY = 100.0


def weighted_socket_s(d, n_ref, alpha):
    """The gateways' socket-seconds, each weighted by the idle cost's fall with its density:
    sum over gateways of the integral of s(t) * (max(s(t), MIN_DENSITY) / n_ref) ** -alpha, from
    each gateway's open fds above its first sample (as measure() counts socket-seconds)."""
    rows = rows_of(d)
    total_w = 0.0
    for c in rows[0]:
        if not re.fullmatch(r"gw\d+_fds", c):
            continue
        s = series(rows, c)
        base = s[0][1]
        w = lambda n: 0.0 if n <= 0 else n * (max(n, MIN_DENSITY) / n_ref) ** -alpha
        for (ta, a), (tb, b) in zip(s, s[1:]):
            total_w += (w(a - base) + w(b - base)) / 2 * (tb - ta)
    return total_w


def hold_rate(rows, name, t_from, t_to):
    used, span = cpu_used(rows, name, t_from, t_to)
    return used / span if span > 0 else 0.0


def gw_sum(m, key):
    return sum(p[key] for n, p in m["processes"].items() if re.fullmatch(r"gw\d+", n))


def gw_names(m):
    return [n for n in m["processes"] if re.fullmatch(r"gw\d+", n)]


def total(m, name, key="cpu_s"):
    if name == "gw":
        return gw_sum(m, key)
    return m["processes"].get(name, {}).get(key, 0.0)


def nnls(rows, ys):
    """Least squares with every coefficient >= 0: drop the most negative and solve again."""
    cols = list(range(len(rows[0])))
    while cols:
        a = [[r[c] for c in cols] for r in rows]
        n = len(cols)
        # Normal equations, Gaussian elimination.
        ata = [[sum(a[k][i] * a[k][j] for k in range(len(a))) for j in range(n)] for i in range(n)]
        aty = [sum(a[k][i] * ys[k] for k in range(len(a))) for i in range(n)]
        for i in range(n):
            piv = max(range(i, n), key=lambda r: abs(ata[r][i]))
            ata[i], ata[piv], aty[i], aty[piv] = ata[piv], ata[i], aty[piv], aty[i]
            for r in range(n):
                if r != i and ata[i][i]:
                    f = ata[r][i] / ata[i][i]
                    ata[r] = [x - f * y for x, y in zip(ata[r], ata[i])]
                    aty[r] -= f * aty[i]
        x = [aty[i] / ata[i][i] if ata[i][i] else 0.0 for i in range(n)]
        if min(x) >= 0:
            out = [0.0] * len(rows[0])
            for c, v in zip(cols, x):
                out[c] = v
            return out
        cols.pop(x.index(min(x)))
    return [0.0] * len(rows[0])


def last_hold(d, m):
    """The last hold of a connect run: (from, to) in resources.csv's clock, its edges left out."""
    rows = rows_of(d)
    k = m["knobs"]
    r1, h1, r2, h2 = (float(k.get(x, dflt)) for x, dflt in (("RAMP1_S", 60), ("HOLD1_S", 60), ("RAMP2_S", 30), ("HOLD2_S", 60)))
    t0 = float(rows[0]["t"])
    return rows, (t0 + r1 + h1 + r2 + 6, t0 + r1 + h1 + r2 + h2 - 2)


def idle_share(m, name, u):
    """What a run's idle sockets cost `name` (CPU-s): density-weighted for the gateways; for
    Redis, its socket-seconds at the marginal cost and its own idle rate over the run."""
    if name == "gw":
        return u["gw.socket"] * weighted_socket_s(m["dir"], u["gw.density_ref"], u["gw.density_exp"])
    return u.get(f"{name}.socket", 0.0) * m["counts"]["socket_seconds"] \
        + u.get(f"{name}.idle", 0.0) * m["processes"].get(name, {}).get("span_s", 0.0)


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def solve(connect_a, connect_b, pairs_a, pairs_b, groups, groups_wide):
    """Unit costs from the calibration runs, each shape a list of repeated runs (the repeats are
    averaged or solved together: a run's CPU moves by 15-30% from one run to the next of the
    same shape). `groups_wide` is the group shape over more gateways: it changes the Redis
    deliveries a message and is used for chat-api's and Redis's units only (the others are
    per process, and its gateways are not the others' count)."""
    cas, cbs = [measure(d) for d in connect_a], [measure(d) for d in connect_b]
    chats = [measure(d) for d in pairs_a + pairs_b + groups]
    wide = [measure(d) for d in groups_wide]
    conns = cas + cbs
    ngw = len(gw_names(cbs[0]))
    u = {}
    holds_a = [(m, *last_hold(m["dir"], m)) for m in cas]
    holds_b = [(m, *last_hold(m["dir"], m)) for m in cbs]
    # The gateways' CPU rate a socket in the last holds of one shape's runs, averaged.
    gw_idle = lambda holds: mean(sum(hold_rate(rows, n, *hold) for n in gw_names(m)) / m["vus"]
                                 for m, rows, hold in holds)
    # Idle: the gateways' last hold's rate over its sockets (pings and presence refresh).
    u["gw.socket"] = gw_idle(holds_b)
    # Redis's idle cost a socket also falls as it holds more, but as a fixed rate shared, not as
    # a power: the refresh costs the same per user however the users are batched (a pipeline of
    # up to 1,000 each), and what does not grow with them is the process's own event loop and
    # timers, which an idle redis-server spends with no client at all. The last holds' rates
    # against their sockets give the slope (a socket) and the intercept (the process).
    u["redis.idle"], u["redis.socket"] = nnls(
        [(1.0, m["vus"]) for m, _, _ in holds_a + holds_b],
        [hold_rate(rows, "redis", *hold) for _, rows, hold in holds_a + holds_b])
    # A gateway's idle cost a socket falls as it holds more (the pings share wake-ups): the
    # connect runs' last holds, at a tenth of the sockets and at all of them, give the exponent
    # of cost ~ sockets^-exponent.
    idle_a = gw_idle(holds_a)
    n_a, n_b = cas[0]["vus"] / ngw, cbs[0]["vus"] / ngw
    exp = math.log(idle_a / u["gw.socket"]) / math.log(n_b / n_a) if idle_a > 0 and u["gw.socket"] > 0 and n_b > n_a else 0.0
    u["gw.density_exp"], u["gw.density_ref"] = min(max(exp, 0.0), 0.9), n_b
    # Sessions: the connect runs, the same ramps, two sizes: per session and per second of
    # arrivals (for the gateways, the tier's total; per process below).
    for name in ("gw", "api", "mariadb", "redis"):
        eq = [(m["counts"]["sessions"], m["counts"]["arrival_s"]) for m in conns]
        ys = [total(m, name) - idle_share(m, name, u) for m in conns]
        u[f"{name}.session"], u[f"{name}.arrivals"] = nnls(eq, ys)
    # Final replays: each chat run's CPU after its sending window, less its idle share.
    for name in ("api", "mariadb"):
        u[f"{name}.resume"] = mean(max(total(m, name, "tail_cpu_s"), 0.0) / max(m["counts"]["resumes"], 1.0)
                                   for m in chats)
    # Messages: the chat runs (two rates of pairs, one of groups, each repeated), least squares
    # over the runs. What each process pays for besides the message and the second of sending:
    # the gateways and MariaDB, each delivery to a socket; chat-api, each publish; Redis, each
    # publish and each delivery to a gateway. Pairs publish twice a message to two gateways,
    # groups once to two or, over four gateways, to four: the three tell Redis's apart.
    def left(m, name):
        k = m["counts"]
        return total(m, name) - u[f"{name}.session"] * k["sessions"] - u[f"{name}.arrivals"] * k["arrival_s"] \
            - idle_share(m, name, u) - u.get(f"{name}.resume", 0.0) * k["resumes"]
    for name in ("gw", "mariadb"):
        eq = [(m["counts"]["messages"], m["counts"]["deliveries"], m["counts"]["sending_s"]) for m in chats]
        u[f"{name}.message"], u[f"{name}.delivery"], u[f"{name}.sending"] = nnls(eq, [left(m, name) for m in chats])
    runs = chats + wide
    eq = [(m["counts"]["messages"], m["counts"]["publishes"], m["counts"]["sending_s"]) for m in runs]
    u["api.message"], u["api.publish"], u["api.sending"] = nnls(eq, [left(m, "api") for m in runs])
    eq = [(m["counts"]["messages"], m["counts"]["publishes"], m["counts"]["redis_deliveries"], m["counts"]["sending_s"])
          for m in runs]
    u["redis.message"], u["redis.publish"], u["redis.rdelivery"], u["redis.sending"] = \
        nnls(eq, [left(m, "redis") for m in runs])
    for key in list(u):
        if key not in ("gw.density_exp", "gw.density_ref"):
            u[key] *= 1e6
    u["gw.arrivals"] /= ngw
    u["gw.sending"] /= ngw
    # Memory: a gateway's RSS against its sockets (the two connect runs: slope and intercept),
    # and what each message a second through it adds (the chat runs, before the final replays);
    # chat-api's RSS with no messages, and what each message a second adds.
    per_gw = lambda ms: (ms[0]["vus"] / ngw, mean(gw_sum(m, "rss_peak_mib") for m in ms) / ngw)
    (na, ra), (nb, rb) = per_gw(cas), per_gw(cbs)
    slope = (rb - ra) / (nb - na)
    intercept = ra - slope * na
    xs, ys = [], []
    for m in chats:
        n, r = per_gw([m])
        xs.append(m["counts"]["messages"] / m["counts"]["sending_s"] / ngw)
        ys.append(r - intercept - slope * n)
    gw_rate = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    # chat-api's peak RSS follows the connections the gateways opened to it (about 45 KB each),
    # which follow the requests in flight at the run's busiest moment: rate x time in the
    # process, and its bursts. The base is the connect runs' mean (no messages, a few
    # connections); the rate's share comes through the chat runs with no intercept.
    api_base = mean(m["processes"]["api"]["rss_peak_mib"] for m in conns)
    xs, ys = [], []
    for m in chats:
        xs.append(m["counts"]["messages"] / m["counts"]["sending_s"])
        ys.append(m["processes"]["api"]["rss_peak_mib"] - api_base)
    api_rate = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    facts = {
        "gw_base_rss": intercept,
        "idle_bytes": slope * 1048576,
        "gw_rate_bytes": max(gw_rate, 0.0) * 1048576,
        "api_base_rss": api_base,
        "api_rate_bytes": max(api_rate, 0.0) * 1048576,
    }
    return u, facts


def toml_unit(section, name, value, unit, what, command, date, floor):
    q = lambda s: json.dumps(s, ensure_ascii=False)
    return (f"[{section}.{name}]\nvalue = {value:.6g}\nunit = {q(unit)}\nwhat = {q(what)}\n"
            f"command = {q(command)}\ndate = {q(date)}\nfloor = {q(floor)}\n")


def cmd_solve(argv):
    connect_a, connect_b, pairs_a, pairs_b, groups, groups_wide = (a.split(",") for a in argv[:6])
    floor_before, floor_after, date = argv[6:]
    u, facts = solve(connect_a, connect_b, pairs_a, pairs_b, groups, groups_wide)

    def command(dirs):
        """The command of a shape's runs (the same command each) and their folders."""
        line = open(os.path.join(dirs[0], "command.txt")).read().splitlines()[1].replace(".js ", " ", 1)
        folders = ", ".join(f"loadtest/results/{os.path.basename(os.path.normpath(d))}" for d in dirs)
        times = "" if len(dirs) == 1 else f", {len(dirs)} runs"
        gws = measure(dirs[0])["gateways"]
        return f"{'' if gws == 2 else f'GATEWAYS={gws} '}DRIVER=chat-load {line} [{folders}{times}]"
    cmds = [command(runs) for runs in (connect_a, connect_b, pairs_a, pairs_b, groups, groups_wide)]
    conn = f"{cmds[0]} and {cmds[1]}, solved together (loadtest/lib/capacity.py solve)"
    chat = f"{cmds[2]}, {cmds[3]} and {cmds[4]}, solved together (loadtest/lib/capacity.py solve)"
    chat_wide = f"{cmds[2]}, {cmds[3]}, {cmds[4]} and {cmds[5]}, solved together (loadtest/lib/capacity.py solve)"
    floor = f"write {float(floor_before):.2f} µs before the runs, {float(floor_after):.2f} µs after (chat-write-floor --sockets 999)"
    nofloor = "none: memory does not depend on the VM's speed"
    nofloor_density = "none: a count of the run"
    size = int(measure(connect_a[0])["vus"])
    out = ["# Unit costs of the capacity model (docs/capacity.md). Written by scripts/capacity-calibrate.sh",
           f"# {size} from {sum(map(len, (connect_a, connect_b, pairs_a, pairs_b, groups, groups_wide)))} chat-load runs and the socket-write floor before and after them; edit by hand",
           "# only to record a figure measured by the command named beside it. CPU in µs of one core of this",
           "# machine; chat-capacity reads this file at build time (or --units FILE).",
           "",
           "[machine]",
           'description = "2 vCPUs (AMD EPYC VM), loopback, private MariaDB and Redis on the same host; shared with other builds"',
           f"floor_write_us = {(float(floor_before) + float(floor_after)) / 2:.3g}",
           'floor_command = "\\"$(scripts/lib/target-dir.sh)/release/chat-write-floor\\" --sockets 999"',
           ""]
    arrivals = "CPU per second of one process while sessions arrive, whatever their rate (batches that amortize)"
    sending = "CPU per second of one process while messages flow, whatever their rate (batches, wake-ups)"
    spec = [
        ("gateway", "session_us", u["gw.session"], "µs CPU per session", "gateway: upgrade, auth, subscribe, presence, close", conn, floor),
        ("gateway", "arrivals_us_per_s", u["gw.arrivals"], "µs CPU per second", "gateway: " + arrivals, conn, floor),
        ("gateway", "sending_us_per_s", u["gw.sending"], "µs CPU per second", "gateway: " + sending, chat, floor),
        ("gateway", "socket_us_per_s", u["gw.socket"], "µs CPU per socket-second", "gateway: an idle authenticated socket (pings, presence refresh), the last hold's rate", cmds[1], floor),
        ("gateway", "socket_density_ref", u["gw.density_ref"], "sockets a gateway", "gateway: the sockets each gateway held when socket_us_per_s was measured", cmds[1], nofloor_density),
        ("gateway", "socket_density_exponent", u["gw.density_exp"], "exponent", "gateway: idle CPU a socket ~ (sockets a gateway)^-exponent, from the two connect runs' last holds (a tenth of the sockets, and all)", conn, floor),
        ("gateway", "send_us", u["gw.message"], "µs CPU per message sent", "gateway: a send frame read, forwarded to chat-api, acked", chat, floor),
        ("gateway", "delivery_us", u["gw.delivery"], "µs CPU per delivery", "gateway: one Redis message read and one event written to a socket", chat, floor),
        ("gateway", "redis_share", 0.15, "share of delivery_us",
         "the per-Redis-message part of a delivery (parse 3%, decode and dispatch ~12% of the gateways' samples): what per-chat channels share among a gateway's members",
         "perf record -a -e cpu-clock -F 999 --call-graph dwarf,16384 during scripts/bench-fanout.sh 999 200 (docs/performance.md, Fan-out)",
         "write 5.61 µs (same run, 2026-12-03)"),
        ("gateway", "base_rss_mib", facts["gw_base_rss"], "MiB", "gateway RSS with no socket: the intercept of its peak RSS against its sockets", conn, nofloor),
        ("gateway", "socket_idle_bytes", facts["idle_bytes"], "bytes per socket", "gateway RSS per idle authenticated socket: the slope of its peak RSS against its sockets", conn, nofloor),
        ("gateway", "msg_rate_bytes", facts["gw_rate_bytes"], "bytes per message/s", "gateway RSS per message a second sent through it (requests and frames in flight; the peak before the final replays)", chat, nofloor),
        ("api", "session_us", u["api.session"], "µs CPU per session", "chat-api: presence notices (online, offline) and their audiences", conn, floor),
        ("api", "arrivals_us_per_s", u["api.arrivals"], "µs CPU per second", "chat-api: " + arrivals, conn, floor),
        ("api", "sending_us_per_s", u["api.sending"], "µs CPU per second", "chat-api: " + sending, chat_wide, floor),
        ("api", "message_us", u["api.message"], "µs CPU per message", "chat-api: HTTP, validation, the batch transaction, the ack", chat_wide, floor),
        ("api", "publish_us", u["api.publish"], "µs CPU per publish", "chat-api: one publish (a member channel's or a group chat's), with its recent-event log append", chat_wide, floor),
        ("api", "resume_us", u["api.resume"], "µs CPU per replay", "chat-api: a socket's final replay from its cursor (the CPU after the sending window)", chat, floor),
        ("api", "base_rss_mib", facts["api_base_rss"], "MiB", "chat-api peak RSS with sockets connected, no messages", conn, nofloor),
        ("api", "msg_rate_bytes", facts["api_rate_bytes"], "bytes per message/s", "chat-api RSS per message a second through it (requests in flight, busy pool connections; the peak before the final replays)", chat, nofloor),
        ("mysql", "message_us", u["mariadb.message"] + u["mariadb.delivery"] * 2, "µs CPU per message",
         "MariaDB: a message in the send batch (a pair's; the per-delivery share folded in at two members)", chat, floor),
        ("mysql", "session_us", u["mariadb.session"], "µs CPU per session", "MariaDB: the presence last_seen batches of a session", conn, floor),
        ("mysql", "arrivals_us_per_s", u["mariadb.arrivals"], "µs CPU per second", "MariaDB: " + arrivals, conn, floor),
        ("mysql", "sending_us_per_s", u["mariadb.sending"], "µs CPU per second", "MariaDB: " + sending, chat, floor),
        ("mysql", "resume_us", u["mariadb.resume"], "µs CPU per replay", "MariaDB: the sync queries of a final replay", chat, floor),
        ("mysql", "rows_per_message", 3, "rows", "the message INSERT, the chat's counter UPDATE, the sender's read watermark UPDATE",
         "crates/chat-store/src/mysql/send_batch/ (design fact)", "none: a count"),
        ("redis", "message_us", u["redis.message"], "µs CPU per message", "Redis: a message's commands besides its publishes (rate limit)", chat_wide, floor),
        ("redis", "publish_us", u["redis.publish"], "µs CPU per publish", "Redis: one publish script (the recent-event log append and the PUBLISH), whoever is subscribed", chat_wide, floor),
        ("redis", "delivery_us", u["redis.rdelivery"], "µs CPU per Redis delivery", "Redis: a published event written to one subscribed gateway", chat_wide, floor),
        ("redis", "session_us", u["redis.session"], "µs CPU per session", "Redis: SUBSCRIBE/UNSUBSCRIBE, presence scripts", conn, floor),
        ("redis", "arrivals_us_per_s", u["redis.arrivals"], "µs CPU per second", "Redis: " + arrivals, conn, floor),
        ("redis", "sending_us_per_s", u["redis.sending"], "µs CPU per second", "Redis: " + sending, chat_wide, floor),
        ("redis", "socket_us_per_s", u["redis.socket"], "µs CPU per socket-second",
         "Redis: presence refresh of an idle socket, the marginal cost: the slope of the two connect runs' last holds' CPU rate against their sockets", conn, floor),
        ("redis", "idle_us_per_s", u["redis.idle"], "µs CPU per second",
         "Redis: CPU per second of one process whatever it holds (event loop, timers), the intercept of the two connect runs' "
         "last holds' CPU rate against their sockets; an idle socket costs socket_us_per_s + idle_us_per_s / (sockets on the process). "
         "A shared fixed rate rather than a power of the sockets a gateway: the refresh costs the same per user however batched, "
         "and the 100,000-socket check's holds (0.20-0.22 µs a socket-second) follow this form (0.21-0.22) where a power through the same two holds gives 0.12-0.14",
         conn, floor),
        ("wire", "frame_overhead_bytes", 341, "bytes",
         "a new_message JSON frame beyond its text: ids of a large deployment, UUID client id, cursor, 4-byte WebSocket header",
         "cargo test -p chat-capacity the_frame_overhead_matches_the_wire_encoding", "none: a size"),
        ("wire", "packet_overhead_bytes", 74, "bytes", "IPv4 20 + TCP 32 (timestamps) + TLS 1.3 record 22 per frame",
         "protocol headers (design fact)", "none: a size"),
        ("wire", "ping_interval_s", 20, "s", "the gateway's ping to an idle socket",
         "crates/chat-gateway/src/config.rs CHAT_PING_INTERVAL_SECS default", "none: a setting"),
    ]
    order = {"gateway": 0, "api": 1, "mysql": 2, "redis": 3, "wire": 4}
    for sec, name, value, unit, what, command, fl in sorted(spec, key=lambda x: order[x[0]]):
        # The profile behind redis_share is docs/performance.md's, not this calibration's.
        when = "2026-12-03" if name == "redis_share" else date
        out.append(toml_unit(sec, name, value, unit, what, command, when, fl))
    print("\n".join(out))


def cmd_compare(argv):
    pred_path, d = argv[:2]
    opts = dict(zip(argv[2::2], argv[3::2]))
    pred = json.load(open(pred_path))
    m = measure(d)
    print(f"run: {d}")
    # CPU time is the calibration VM's: scale it by this run's floor over the calibration's.
    scale = 1.0
    if "--floor-us" in opts and "--calibration-floor-us" in opts:
        scale = float(opts["--floor-us"]) / float(opts["--calibration-floor-us"])
        print(f"for information, the error with CPU scaled by the write floor: "
              f"{float(opts['--floor-us']):.2f} µs in this run / "
              f"{float(opts['--calibration-floor-us']):.2f} µs in the calibration = {scale:.3f} "
              f"(the verdict is on the unscaled error)")
    pc, mc = pred["counts"], m["counts"]
    print(f"{'count':<16} {'predicted':>12} {'measured':>12} {'error':>8}")
    for k in ("sessions", "socket_seconds", "messages", "deliveries", "resumes", "arrival_s", "sending_s"):
        e = (pc[k] - mc[k]) / mc[k] * 100 if mc[k] else 0.0
        print(f"{k:<16} {pc[k]:>12.0f} {mc[k]:>12.0f} {e:>+7.1f}%")
    print()
    print(f"{'process':<10} {'CPU-s pred':>10} {'meas':>8} {'error':>8} {'scaled':>8}   {'RSS MiB pred':>12} {'meas':>8} {'error':>8}   (RSS: the peak before the final replays)")
    bad = []
    for p in pred["processes"]:
        name = p["process"]
        got = m["processes"].get(name)
        if not got:
            print(f"{name:<10} {p['cpu_s']:>10.2f} {'-':>8} (not sampled)")
            continue
        ce = (p["cpu_s"] - got["cpu_s"]) / got["cpu_s"] * 100 if got["cpu_s"] else float("inf")
        scaled = (p["cpu_s"] * scale - got["cpu_s"]) / got["cpu_s"] * 100 if got["cpu_s"] else float("inf")
        line = f"{name:<10} {p['cpu_s']:>10.2f} {got['cpu_s']:>8.2f} {ce:>+7.1f}%"
        line += f" {scaled:>+7.1f}%" if scale != 1.0 else f" {'':>8}"
        # A process that used under a CPU-second is below the sampler's resolution for a verdict.
        if got["cpu_s"] >= 1.0 and abs(ce) > LIMIT * 100:
            bad.append(f"{name} CPU")
        if p.get("rss_mib") is not None:
            re_ = (p["rss_mib"] - got["rss_peak_mib"]) / got["rss_peak_mib"] * 100
            line += f"   {p['rss_mib']:>12.1f} {got['rss_peak_mib']:>8.1f} {re_:>+7.1f}%"
            if abs(re_) > LIMIT * 100:
                bad.append(f"{name} RSS")
        if p.get("rss_mib") is not None and got["rss_burst_mib"] > got["rss_peak_mib"] * 1.05:
            line += f"   (final replays: {got['rss_burst_mib']:.1f})"
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
    if len(argv) == 10 and argv[0] == "solve":
        cmd_solve(argv[1:])
        return 0
    if len(argv) in (3, 7) and argv[0] == "compare":
        return cmd_compare(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
