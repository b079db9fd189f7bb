#!/usr/bin/env python3
"""Turns a run's raw k6 JSON output into timeseries.csv and a self-contained plot.html.

usage: plot.py RESULTS_DIR
Reads RESULTS_DIR/raw/metrics.json[.gz] (k6 --out json), RESULTS_DIR/resources.csv (sample.py)
and RESULTS_DIR/report.json (handleSummary). Plots, over time: VUs and connected sockets
(auth_ok minus closes), delivery p50/p99, handshake+auth p50/p99, messages/s, and the memory
and CPU of each process. Inline SVG only: no scripts, no CDN.
"""
import csv
import gzip
import html
import json
import math
import os
import sys
from collections import defaultdict
from datetime import datetime

COUNTERS = ("ws_auth_ok", "ws_closed", "msgs_acked", "msgs_received", "ws_errors", "ws_closed_unexpected",
            "ws_close_races")
TRENDS = ("chat_delivery_ms", "auth_ms", "session_auth_ms")
WANTED = set(COUNTERS) | set(TRENDS) | {"vus"}

_sec_cache = {}


def epoch(ts):
    """k6 time strings ("2026-11-24T09:25:01.123456789+00:00" or "...Z") -> unix seconds."""
    sec, rest = ts[:19], ts[19:]
    frac, tz = "", rest
    if rest.startswith("."):
        j = 1
        while j < len(rest) and rest[j].isdigit():
            j += 1
        frac, tz = rest[1:j], rest[j:]
    key = sec + tz
    base = _sec_cache.get(key)
    if base is None:
        base = datetime.fromisoformat(sec + ("+00:00" if tz in ("Z", "") else tz)).timestamp()
        _sec_cache[key] = base
    return base + (float("0." + frac) if frac else 0.0)


def load(path):
    counters = {m: defaultdict(float) for m in COUNTERS}
    trends = {m: defaultdict(list) for m in TRENDS}
    vus = defaultdict(float)
    by_tags = defaultdict(float)  # (metric, tags) -> count, for errors and unexpected closes
    t0 = None
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        for line in f:
            if '"type":"Point"' not in line:
                continue
            i = line.find('"metric":"')
            if i < 0:
                continue
            name = line[i + 10:line.find('"', i + 10)]
            if name not in WANTED:
                continue
            rec = json.loads(line)
            d = rec["data"]
            t = epoch(d["time"])
            if t0 is None or t < t0:
                t0 = t
            s = int(t)
            if name == "vus":
                vus[s] = max(vus[s], d["value"])
            elif name in counters:
                counters[name][s] += d["value"]
                if name in ("ws_errors", "ws_closed_unexpected", "ws_close_races"):
                    tags = d.get("tags") or {}
                    key = ",".join(f"{k}={tags[k]}" for k in ("kind", "code", "name") if k in tags)
                    by_tags[(name, key)] += d["value"]
            else:
                trends[name][s].append(d["value"])
    return t0, vus, counters, trends, by_tags


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def nice_step(span, n=5):
    if span <= 0:
        return 1
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def chart(title, series, ylabel, width=960, height=250):
    """series: [(label, color, [(x, y or None)])] -> an SVG string."""
    pts = [(x, y) for _, _, data in series for x, y in data if y is not None]
    if not pts:
        return f"<h3>{html.escape(title)}</h3><p>(no data)</p>"
    xmax = max(x for x, _ in pts) or 1
    ymax = max(y for _, y in pts)
    ystep = nice_step(ymax if ymax > 0 else 1)
    ymax = max(ystep, math.ceil(ymax / ystep) * ystep)
    xstep = nice_step(xmax, 8)
    L, R, T, B = 60, 150, 10, 30
    w, h = width - L - R, height - T - B

    def X(x):
        return L + w * x / xmax

    def Y(y):
        return T + h - h * y / ymax

    out = [f'<h3>{html.escape(title)}</h3>',
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">']
    y = 0.0
    while y <= ymax + 1e-9:
        out.append(f'<line x1="{L}" x2="{L + w}" y1="{Y(y):.1f}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 4}" y="{Y(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += ystep
    x = 0.0
    while x <= xmax + 1e-9:
        out.append(f'<line x1="{X(x):.1f}" x2="{X(x):.1f}" y1="{T}" y2="{T + h}" stroke="#eee"/>')
        out.append(f'<text x="{X(x):.1f}" y="{T + h + 14}" text-anchor="middle">{x:g}</text>')
        x += xstep
    out.append(f'<text x="{L + w / 2}" y="{height - 2}" text-anchor="middle">seconds since start</text>')
    out.append(f'<text x="12" y="{T + h / 2}" transform="rotate(-90 12 {T + h / 2})" text-anchor="middle">{html.escape(ylabel)}</text>')
    for i, (label, color, data) in enumerate(series):
        segs, cur = [], []
        for x, y in data:
            if y is None:
                if cur:
                    segs.append(cur)
                cur = []
            else:
                cur.append(f"{X(x):.1f},{Y(y):.1f}")
        if cur:
            segs.append(cur)
        for seg in segs:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="1.5" fill="{color}"/>')
            else:
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(seg)}"/>')
        ly = T + 14 + 16 * i
        out.append(f'<line x1="{L + w + 10}" x2="{L + w + 30}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{L + w + 34}" y="{ly}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    d = sys.argv[1]
    raw = os.path.join(d, "raw", "metrics.json")
    if not os.path.exists(raw):
        raw += ".gz"  # a kept run, compressed after k6 ended
    report = {}
    if os.path.exists(os.path.join(d, "report.json")):
        with open(os.path.join(d, "report.json")) as f:
            report = json.load(f)
    charts = []
    rows = []
    t0 = None
    by_tags = {}
    if os.path.exists(raw):
        t0, vus, counters, trends, by_tags = load(raw)
        with open(os.path.join(d, "errors.txt"), "w") as f:
            f.write("metric tags count\n")
            for (m, k), v in sorted(by_tags.items()):
                f.write(f"{m} {k or '-'} {v:g}\n")
    if t0 is not None:
        last = max([max(s.keys(), default=0) for s in [vus] + list(counters.values()) + list(trends.values())])
        first = int(t0)
        dur = last - first + 1
        bucket = max(1, math.ceil(dur / 300))
        connected = 0.0
        per = []
        for b0 in range(first, last + 1, bucket):
            secs = range(b0, min(b0 + bucket, last + 1))
            row = {"t": b0 - first}
            row["vus"] = max((vus.get(s, 0) for s in secs), default=0)
            for m in COUNTERS:
                row[m] = sum(counters[m].get(s, 0) for s in secs)
            connected += row["ws_auth_ok"] - row["ws_closed"]
            row["connected"] = connected
            for m in TRENDS:
                vals = sorted(v for s in secs for v in trends[m].get(s, ()))
                row[f"{m}_n"] = len(vals)
                row[f"{m}_p50"] = pct(vals, 0.5)
                row[f"{m}_p99"] = pct(vals, 0.99)
                row[f"{m}_max"] = vals[-1] if vals else None
            row["bucket_s"] = bucket
            per.append(row)
        rows = per
        ts = [r["t"] for r in rows]

        def ser(key, scale=1.0):
            return [(t, (r[key] / scale if r[key] is not None else None)) for t, r in zip(ts, rows)]

        charts.append(chart("VUs and authenticated sockets", [
            ("k6 VUs", "#999", ser("vus")),
            ("connected sockets", "#1f77b4", ser("connected")),
        ], "count"))
        if any(r["chat_delivery_ms_n"] for r in rows):
            charts.append(chart(f"Delivery latency chat_delivery_ms (per {bucket} s)", [
                ("p50", "#2ca02c", ser("chat_delivery_ms_p50")),
                ("p99", "#d62728", ser("chat_delivery_ms_p99")),
            ], "ms"))
        auth = "session_auth_ms" if any(r["session_auth_ms_n"] for r in rows) else "auth_ms"
        if any(r[f"{auth}_n"] for r in rows):
            charts.append(chart(f"{auth} (per {bucket} s)", [
                ("p50", "#2ca02c", ser(f"{auth}_p50")),
                ("p99", "#d62728", ser(f"{auth}_p99")),
            ], "ms"))
        if any(r["msgs_acked"] or r["msgs_received"] for r in rows):
            charts.append(chart("Messages per second", [
                ("acked/s", "#1f77b4", ser("msgs_acked", bucket)),
                ("received from others/s", "#ff7f0e", ser("msgs_received", bucket)),
                ("sessions authenticated/s", "#9467bd", ser("ws_auth_ok", bucket)),
            ], "per second"))
        if any(r["ws_errors"] or r["ws_closed_unexpected"] for r in rows):
            charts.append(chart("Errors", [
                ("ws_errors", "#d62728", ser("ws_errors")),
                ("closed unexpectedly", "#8c564b", ser("ws_closed_unexpected")),
            ], "count per bucket"))
        with open(os.path.join(d, "timeseries.csv"), "w", newline="") as f:
            cols = list(rows[0].keys())
            wr = csv.DictWriter(f, fieldnames=cols)
            wr.writeheader()
            for r in rows:
                wr.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()})

    res = os.path.join(d, "resources.csv")
    if os.path.exists(res):
        with open(res) as f:
            data = list(csv.DictReader(f))
        if len(data) > 1:
            start = t0 if t0 is not None else float(data[0]["t"])
            names = [c[:-7] for c in data[0].keys() if c.endswith("_rss_mb")]
            colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
            mem, cpu, fds = [], [], []
            for i, n in enumerate(names):
                c = colors[i % len(colors)]
                m_pts, c_pts, f_pts = [], [], []
                prev = None
                for r in data:
                    t = float(r["t"]) - start
                    m_pts.append((t, float(r[f"{n}_rss_mb"]) if r[f"{n}_rss_mb"] else None))
                    f_pts.append((t, float(r[f"{n}_fds"]) if r[f"{n}_fds"] else None))
                    if r[f"{n}_cpu_s"]:
                        cur = (float(r["t"]), float(r[f"{n}_cpu_s"]))
                        if prev:
                            dt = cur[0] - prev[0]
                            c_pts.append((t, 100 * (cur[1] - prev[1]) / dt if dt > 0 else None))
                        prev = cur
                    else:
                        c_pts.append((t, None))
                        prev = None
                m_pts = [(t, v) for t, v in m_pts if t >= 0]
                c_pts = [(t, v) for t, v in c_pts if t >= 0]
                f_pts = [(t, v) for t, v in f_pts if t >= 0]
                mem.append((n, c, m_pts))
                cpu.append((n, c, c_pts))
                if not n.startswith(("mariadb", "redis")):
                    fds.append((n, c, f_pts))
            charts.append(chart("Resident memory", mem, "MB"))
            charts.append(chart("CPU (100% = one core)", cpu, "%"))
            charts.append(chart("Open file descriptors", fds, "fds"))

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(os.path.basename(os.path.normpath(d)))}</title>",
        "<style>body{font-family:sans-serif;margin:20px;max-width:1000px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}"
        ".ok{color:#2a2}.bad{color:#c22}pre{font-size:11px;background:#f6f6f6;padding:6px}</style>",
        "</head><body>",
        f"<h2>{html.escape(os.path.basename(os.path.normpath(d)))}</h2>",
    ]
    if report:
        parts.append(f"<p>{html.escape(report.get('script', ''))}: {report.get('passed', 0)} passed, "
                     f"{report.get('failed', 0)} failed</p><table><tr><th>check</th><th>result</th></tr>")
        for t in report.get("thresholds", []):
            cls = "ok" if t["ok"] else "bad"
            parts.append(f"<tr><td>{html.escape(t['metric'])}: {html.escape(t['expr'])}</td>"
                         f"<td class='{cls}'>{'PASS' if t['ok'] else 'FAIL'}</td></tr>")
        for c in report.get("derived_checks", []):
            cls = "ok" if c["ok"] else "bad"
            parts.append(f"<tr><td>{html.escape(c['name'])}: {html.escape(c['detail'])}</td>"
                         f"<td class='{cls}'>{'PASS' if c['ok'] else 'FAIL'}</td></tr>")
        parts.append("</table>")
        parts.append("<pre>" + html.escape(json.dumps(report.get("figures", {}), indent=1)) + "</pre>")
    if by_tags:
        parts.append("<h3>Errors and unexpected closes by tag</h3><table><tr><th>metric</th><th>tags</th><th>count</th></tr>")
        for (m, k), v in sorted(by_tags.items()):
            parts.append(f"<tr><td>{html.escape(m)}</td><td>{html.escape(k or '-')}</td><td>{v:g}</td></tr>")
        parts.append("</table>")
    for name in ("machine.txt", "command.txt"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            with open(p) as f:
                parts.append(f"<h3>{name}</h3><pre>{html.escape(f.read())}</pre>")
    parts.extend(charts)
    parts.append("</body></html>")
    with open(os.path.join(d, "plot.html"), "w") as f:
        f.write("\n".join(parts))
    print(f"plot: {os.path.join(d, 'plot.html')}")


if __name__ == "__main__":
    main()
