#!/usr/bin/env python3
"""Adds up the end-of-test summaries of several k6 instances that ran one test in execution
segments (k6-operator runners, or plain k6 machines with --execution-segment).

usage: merge-summaries.py LOG [LOG ...]      (e.g. kubectl logs of each runner, saved to files)

Each LOG holds the text summary that loadtest/lib/summary.js prints ("== chat.js: ..." then one
line per metric and the thresholds). Counters are summed over the instances; the loss check by
totals (received = expected) is made on the sums, since the two users of a pair may run in
different segments; every instance's thresholds are listed, and the exit status is 1 when any
failed or the totals disagree.
"""
import re
import sys

COUNTER = re.compile(r"^\s+([a-z_]+(?:\{[^}]*\})?)\s+([0-9.]+) \(([0-9.]+)/s\)$")
VERDICT = re.compile(r"^\s+(PASS|FAIL) (.*)$")


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    totals = {}
    failed = []
    seen = 0
    for path in paths:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
        start = next((i for i, l in enumerate(lines) if l.startswith("== ")), None)
        if start is None:
            print(f"{path}: no k6 summary (a line starting with '== ')", file=sys.stderr)
            failed.append(f"{path}: no summary")
            continue
        seen += 1
        for line in lines[start:]:
            m = COUNTER.match(line)
            if m:
                totals[m.group(1)] = totals.get(m.group(1), 0.0) + float(m.group(2))
                continue
            v = VERDICT.match(line)
            if v and v.group(1) == "FAIL" and not v.group(2).startswith("loss (totals)"):
                failed.append(f"{path}: {v.group(2)}")
    print(f"{seen} instance summaries")
    for name in sorted(totals):
        print(f"  {name:<40} {totals[name]:g}")
    exp, rec = totals.get("msgs_expected"), totals.get("msgs_received")
    if exp is not None:
        ok = exp > 0 and exp == rec
        print(f"  {'PASS' if ok else 'FAIL'} loss (totals over instances): received {rec:g} of {exp:g} expected")
        if not ok:
            failed.append("loss (totals over instances)")
    for f in failed:
        print(f"  FAIL {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
