#!/usr/bin/env python3
# Gateway RSS per idle authenticated socket: opens N sockets of one user (multi-device) against a
# running gateway and compares the gateway's VmRSS before and after.
# Usage: scripts/measure-rss.py API_URL WS_URL N GATEWAY_PID   (needs: pip install websockets)
import asyncio, json, os, sys, urllib.request, websockets, random
API, WS, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
def post(path, body):
    req = urllib.request.Request(API + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req) as r: return json.loads(r.read())
def rss(pid): 
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
async def main():
    pid = int(sys.argv[4])
    u = post("/v1/auth/register", {"username": "rss%d" % random.randint(0, 10**9), "password": "password1"})
    base = rss(pid)
    socks = []
    for i in range(N):
        ws = await websockets.connect(WS + "?token=" + u["token"], max_queue=None)
        await ws.recv()
        socks.append(ws)
    await asyncio.sleep(2)
    after = rss(pid)
    print(f"gateway RSS: {base} KiB before, {after} KiB with {N} idle sockets -> {(after-base)*1024/N:.0f} bytes per socket")
asyncio.run(main())
