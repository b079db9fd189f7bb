#!/usr/bin/env python3
"""Counts a service log's lines by level and message (JSON lines from chat-ops, or plain text).

usage: logsummary.py FILE.log   -> "count level message [first fields]" lines, most frequent first
"""
import collections
import json
import sys


def main():
    counts = collections.Counter()
    example = {}
    total = 0
    with open(sys.argv[1], errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            total += 1
            try:
                rec = json.loads(line)
                level = str(rec.get("level", "?")).lower()
                fields = rec.get("fields", rec)
                msg = str(fields.get("message", rec.get("msg", "")))[:160]
            except (ValueError, AttributeError):
                level, msg = "text", line[:160]
            key = (level, msg)
            counts[key] += 1
            example.setdefault(key, line[:400])
    print(f"{total} lines in {sys.argv[1].rsplit('/', 1)[-1]}")
    for (level, msg), n in counts.most_common(40):
        print(f"{n:8d} {level:5s} {msg}")
        print(f"         e.g. {example[(level, msg)]}")


if __name__ == "__main__":
    main()
