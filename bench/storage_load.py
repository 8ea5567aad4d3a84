#!/usr/bin/env python3
"""Task load for bench/storage.sh and bench/soak.sh (standard library only).

storage_load.py ADDR COUNT RATE_PER_MIN DURATION_S TTL

Starts tasks as demo-agent and completes each at once: COUNT tasks
(RATE 0: as fast as one connection goes), or with DURATION_S > 0 tasks
at RATE_PER_MIN for that long. Each task asks for a lifetime of TTL
seconds. The instance token comes from WRIT_INSTANCE_TOKEN and is renewed
(`writ attest` with a new join token) every 10 minutes. Prints how many
tasks it ran.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

addr, count, rate, duration, ttl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
writ = os.environ.get("WRIT_BIN", "target/release/writ")
token = os.environ["WRIT_INSTANCE_TOKEN"]
body = json.dumps({
    "intent": "storage bench",
    "capabilities": [{"tool": "tickets", "scopes": ["read"]}],
    "ttl": ttl,
}).encode()


def post(path, data, tok):
    req = urllib.request.Request(addr + path, data=data, method="POST")
    req.add_header("Authorization", "Bearer " + tok)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        sys.exit("%s %s: %s %s" % (path, e.code, e.reason, e.read().decode(errors="replace")))


def reattest():
    jt = subprocess.run([writ, "agent", "join-token", "demo-agent", "--field", "join_token"],
                        check=True, capture_output=True, text=True).stdout.strip().strip('"')
    out = subprocess.run([writ, "attest", "demo-agent", "--join-token", jt, "--field", "access_token"],
                         check=True, capture_output=True, text=True).stdout.strip().strip('"')
    return out


start = time.monotonic()
attested = start
done = 0
interval = 60.0 / rate if rate > 0 else 0.0
while True:
    now = time.monotonic()
    if duration > 0 and now - start >= duration:
        break
    if duration <= 0 and done >= count:
        break
    if now - attested > 600:
        token = reattest()
        attested = now
    t = post("/v1/tasks", body, token)
    post("/v1/tasks/%s/complete" % t["task_id"], None, token)
    done += 1
    if interval:
        lag = start + done * interval - time.monotonic()
        if lag > 0:
            time.sleep(lag)
print(done)
