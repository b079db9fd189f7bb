#!/usr/bin/env python3
"""CPU seconds each process of a run used, and per authenticated session, from its results folder.

usage: cpu.py RESULTS_DIR [RESULTS_DIR ...]

Reads resources.csv (sample.py: cumulative CPU seconds per process every 2 s) and report.json
(sessions: figures.sessions_authenticated, else figures.auth_ok). The driver is `k6`, or the
chat-load processes (`load`, `load-w1`, ...) added up; `stack` is chat-api (every replica) and the gateways.
"""
import csv
import json
import os
import sys


def used(rows, name):
    vals = [float(r[f"{name}_cpu_s"]) for r in rows if r.get(f"{name}_cpu_s")]
    return (vals[-1] - vals[0]) if len(vals) > 1 else 0.0


def main(dirs):
    if not dirs:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"{'run':<48} {'sessions':>9} {'driver CPU-s':>12} {'ms/session':>10} {'stack CPU-s':>11} {'ms/session':>10}")
    for d in dirs:
        with open(os.path.join(d, "resources.csv")) as f:
            rows = list(csv.DictReader(f))
        with open(os.path.join(d, "report.json")) as f:
            fig = json.load(f).get("figures", {})
        sessions = fig.get("sessions_authenticated") or fig.get("auth_ok") or 0
        names = [c[:-6] for c in rows[0].keys() if c.endswith("_cpu_s")] if rows else []
        driver = sum(used(rows, n) for n in names if n == "k6" or n == "load" or n.startswith("load-w"))
        stack = sum(used(rows, n) for n in names if n.startswith("api") or n.startswith("gw"))
        per = lambda x: f"{1e3 * x / sessions:.3f}" if sessions else "-"
        print(f"{os.path.basename(os.path.normpath(d)):<48} {sessions:>9.0f} {driver:>12.2f} {per(driver):>10} "
              f"{stack:>11.2f} {per(stack):>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
