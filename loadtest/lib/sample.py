#!/usr/bin/env python3
"""Samples RSS, CPU time and open fds of named processes every 2 s into a CSV.

usage: sample.py OUT.csv name:pid [name:pid ...]
Columns: t (unix s), then per process <name>_rss_mb, <name>_cpu_s, <name>_fds. Stops when every
process is gone (or when killed).
"""
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def read(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                    break
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            fds = ""
        return f"{rss:.1f}", f"{cpu:.2f}", str(fds)
    except (OSError, IndexError, ValueError):
        return None


def main():
    out = sys.argv[1]
    procs = [p.split(":", 1) for p in sys.argv[2:] if ":" in p and p.split(":", 1)[1]]
    with open(out, "w") as f:
        f.write("t," + ",".join(f"{n}_rss_mb,{n}_cpu_s,{n}_fds" for n, _ in procs) + "\n")
        while True:
            row = [f"{time.time():.1f}"]
            alive = 0
            for _, pid in procs:
                v = read(pid)
                if v:
                    alive += 1
                row.extend(v or ("", "", ""))
            if alive == 0:
                return
            f.write(",".join(row) + "\n")
            f.flush()
            time.sleep(2)


if __name__ == "__main__":
    main()
