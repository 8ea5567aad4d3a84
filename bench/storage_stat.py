#!/usr/bin/env python3
"""Bytes on disk per table (its indexes included) and rows, of a writ
SQLite database, read through SQLite's dbstat table (opened read-only,
so a running broker is not disturbed): storage_stat.py DB -> JSON."""

import json
import sqlite3
import sys

c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
owner = dict(c.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
out = {}
for name, size in c.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
    t = owner.get(name, name)
    out.setdefault(t, {"bytes": 0, "rows": 0})["bytes"] += size
for t in ("grants", "tasks", "audit", "revocations", "instances", "audit_checkpoints"):
    if t in out:
        out[t]["rows"] = c.execute("SELECT COUNT(*) FROM %s" % t).fetchone()[0]
page_size = c.execute("PRAGMA page_size").fetchone()[0]
pages = c.execute("PRAGMA page_count").fetchone()[0]
free = c.execute("PRAGMA freelist_count").fetchone()[0]
out["_file"] = {"bytes": pages * page_size, "used": (pages - free) * page_size}
print(json.dumps(out))
