"""The six targets of BENCHMARKS.md at a glance, read from the sections
`bench/run.sh` wrote: `python3 bench/summary.py DIR` prints a markdown
table, each figure beside its peer or bound from the same run."""

import re
import sys
from pathlib import Path

out = Path(sys.argv[1])


def rows(name):
    """The table rows of a section, as lists of cells."""
    p = out / f"{name}.md"
    if not p.exists():
        return []
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in p.read_text().splitlines() if line.startswith("|") and not line.startswith("|--")]


def num(cell):
    m = re.search(r"[-\d.]+", cell.replace(",", ""))
    return float(m.group()) if m else float("nan")


def us(cell):
    v = num(cell)
    return v * 1000 if "ms" in cell else v


def find(table, *prefix):
    for r in table:
        if all(i < len(r) and r[i].startswith(p) for i, p in enumerate(prefix)):
            return r
    return None


def met(ok):
    return "yes" if ok else "**no**"


lines = ["| target | writ | peer or bound, same run | met |", "|---|---|---|---|"]

iss = rows("issuance")
peer = find(iss, "oidc-provider 9: client credentials, Ed25519", "32")
bearer = find(iss, "writ: task token (decision", "32")
dpop = find(iss, "writ: task token, DPoP", "32")
if peer and bearer and dpop:
    p, b, d = num(peer[2]), num(bearer[2]), num(dpop[2])
    # The floor under the target: what 5x leaves per token, beside the
    # crypto a DPoP-bound token needs and writ's HTTP stack alone.
    sign = next((x for x in iss if x and x[0] == "Ed25519"), None)
    verify = next((x for x in iss if x and x[0] == "Ed25519, verifying one"), None)
    health = find(iss, "writ: GET /healthz", "32")
    floor = ""
    if sign and verify and health:
        floor = (f"; at 5x, {1e6 / (5 * p):.0f} µs per token, at 6x {1e6 / (6 * p):.0f}: one Ed25519 verification "
                 f"takes {num(verify[2]):.1f} µs here, one signature {num(sign[2]):.1f} µs, and writ's HTTP alone "
                 f"(GET /healthz) {num(health[2]):,.0f}/s")
    lines.append(
        f"| 1. task-token issuance, one core, durable audit: ≥ 5x the peer with DPoP, ≥ 6x with Bearer "
        f"| DPoP {d:,.0f}/s (**{d / p:.2f}x**), Bearer {b:,.0f}/s (**{b / p:.2f}x**) "
        f"| oidc-provider 9, stateless Ed25519 JWTs: {p:,.0f}/s{floor} | {met(d >= 5 * p and b >= 6 * p)} |")

pol = rows("policy")
r = find(pol, "1000")
if r:
    p50, p99 = us(r[1]), us(r[2])
    peer_r = [x for x in pol if x and x[0] == "1000"]
    peer_p99 = us(peer_r[1][2]) if len(peer_r) > 1 else float("nan")
    # The bound: Cedar's authorizer alone on the slice writ evaluates.
    bound = find(pol, "any")
    floor = ""
    if bound:
        floor = (f"; the bound, cedar-policy's authorizer alone on writ's slice of {bound[1]} policies: "
                 f"p50 {us(bound[2]):.1f} µs, p99 {us(bound[3]):.1f} µs")
    lines.append(
        f"| 2. policy decision at 1,000 policies: p99 < 20 µs, p50 < 10 µs | p99 {p99:.1f} µs, p50 {p50:.1f} µs "
        f"| cedar-policy on the whole set, JSON inputs: p99 {peer_p99:.0f} µs{floor} | {met(p99 < 20 and p50 < 10)} |")

gw = rows("gateway")
up1, emb1, st1 = find(gw, "upstream directly", "1"), find(gw, "embedded gateway", "1"), find(gw, "standalone gateway", "1")
up32, emb32 = find(gw, "upstream directly", "32"), find(gw, "embedded gateway", "32")
if up1 and emb1 and st1 and up32 and emb32:
    base = us(up1[4])
    e, s = us(emb1[4]) - base, us(st1[4]) - base
    ratio = num(up32[3]) / num(emb32[3])
    # The bound: writ on the core of wrk and the upstream, no wake-up across cores.
    one_core, meta, meta1 = (find(gw, "one core for all: embedded gateway", "1"),
                             find(gw, "gateway metadata", "1"), find(gw, "one core for all: gateway metadata", "1"))
    floor = ""
    if one_core and meta and meta1:
        floor = (f"; writ on their core: +{us(one_core[4]) - base:.0f} µs embedded; one round trip across cores "
                 f"(metadata): {us(meta[4]):.0f} µs against {us(meta1[4]):.0f} µs on one core")
    lines.append(
        f"| 3. gateway: < 150 µs added median at one connection; throughput within 1.5x of the upstream at 32 "
        f"| +{e:.0f} µs embedded, +{s:.0f} µs standalone; {num(emb32[3]):,.0f} req/s embedded "
        f"| the upstream directly: {base:.0f} µs median, {num(up32[3]):,.0f} req/s (**{ratio:.1f}x** the gateway's){floor} "
        f"| {met(e < 150 and s < 150 and ratio <= 1.5)} |")

fan = rows("fanout")
one = next((x for x in fan if x and x[0] == "1"), None)
hundred = next((x for x in fan if x and x[0] == "100"), None)
if one and hundred:
    p99 = us(hundred[3]) / 1000
    per = (num(hundred[6]) - num(one[6])) / 99 * 1000
    lines.append(
        f"| 4. a revocation reaches 100 gateways, p99 < 50 ms | p99 {p99:.1f} ms (max {us(hundred[4]) / 1000:.1f} ms, "
        f"{hundred[5]} not arrived) | broker CPU per revocation: {one[6]} with 1 gateway, {hundred[6]} with 100 "
        f"(about {per:.0f} µs per extra gateway) | {met(p99 < 50 and hundred[5] == '0')} |")

storage = out / "storage.md"
if storage.exists():
    m = re.search(r"<!-- summary: (.*?) -->", storage.read_text())
    lines.append(f"| 5. storage grows with live work, not history | {m.group(1) if m else 'see the storage section'} | | |")
else:
    lines.append("| 5. storage grows with live work, not history | not measured by this run | | **no** |")

rep = rows("replicas")
sq = find(rep, "SQLite")
pg = [x for x in rep if x and x[0] == "PostgreSQL"]
if sq and pg:
    per = ", ".join(f"{x[1]}: {num(x[2]):,.0f}/s" for x in pg)
    lines.append(
        f"| 6. issuance on PostgreSQL with 1, 2, 3 replicas (2 cores for everything) | {per} "
        f"| SQLite, one process: {num(sq[2]):,.0f}/s; per CPU-second: SQLite {sq[5]}, PostgreSQL {pg[-1][5]} "
        f"| measured |")

print("\n".join(lines))
