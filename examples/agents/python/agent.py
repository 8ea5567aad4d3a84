"""An agent on writ, end to end: attest, start a task, call an MCP tool and
an HTTP tool through writ's gateway, delegate to a sub-agent, finish.

    export WRIT_ADDR=http://127.0.0.1:8750 WRIT_TOKEN=writ_admin_...   # from `writ serve --dev`
    pip install ./sdk/python -r examples/agents/python/requirements.txt
    python examples/agents/python/agent.py

WRIT_TOKEN (the admin credential) is used only in `setup()`, to register
what the demo needs and mint its join tokens: the agents themselves hold no
standing secret. WRIT_GATEWAY is the gateway (default: WRIT_ADDR's host on
port 8751, where `writ serve --dev` runs it). Exits 0 when the whole story
succeeded.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import pathlib
import secrets
import sys
import threading
import time
from urllib.parse import urlsplit

import httpx2

from writ_sdk import Client, Denied, JoinToken
from writ_sdk.mcp import connect

HERE = pathlib.Path(__file__).resolve().parent
WRIT_ADDR = os.environ.get("WRIT_ADDR", "http://127.0.0.1:8750").rstrip("/")
_addr = urlsplit(WRIT_ADDR)
GATEWAY = os.environ.get("WRIT_GATEWAY", f"{_addr.scheme}://{_addr.hostname}:8751").rstrip("/")


def step(text: str) -> None:
    print(f"-- {text}", flush=True)


# --- the operator's side: what the demo needs registered -----------------------


class Notes(http.server.BaseHTTPRequestHandler):
    """The HTTP tool's upstream: notes about tickets. It sees the gateway's
    injected secret, never the agent's token."""

    def do_GET(self) -> None:
        ticket = self.path.rsplit("/", 1)[-1]
        ok = self.headers.get("X-Api-Key") == Notes.secret and "authorization" not in {k.lower() for k in self.headers}
        body = json.dumps({"ticket": ticket, "note": "reproduced on staging", "secret_injected": ok}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass

    secret = secrets.token_urlsafe(16)


def setup() -> dict[str, str]:
    admin = httpx2.Client(base_url=WRIT_ADDR, headers={"Authorization": f"Bearer {os.environ['WRIT_TOKEN']}"},
                          timeout=30)

    def post(path: str, body: dict, ok: tuple[int, ...] = (200, 201)) -> dict:
        r = admin.post(path, json=body) if not path.endswith("/secret") else admin.put(path, json=body)
        if r.status_code not in ok:
            raise SystemExit(f"setup: {path}: {r.status_code} {r.text}")
        return r.json() if r.content else {}

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Notes)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    run = secrets.token_hex(3)
    names = {"planner": "example-planner", "helper": "example-helper",
             "notes": f"notes-{run}", "tickets": f"tickets-{run}"}
    for agent in (names["planner"], names["helper"]):
        post("/v1/agents", {"name": agent, "attestation": {"kind": "join_token"}}, ok=(201, 409))
    post("/v1/tools", {"name": names["notes"], "audience": f"https://{names['notes']}.example", "scopes": ["read"],
                       "upstream": {"kind": "http", "url": f"http://127.0.0.1:{upstream.server_address[1]}"}})
    post(f"/v1/tools/{names['notes']}/secret", {"header": "X-Api-Key", "value": Notes.secret})
    post("/v1/tools", {"name": names["tickets"], "audience": f"urn:mcp:{names['tickets']}", "scopes": ["lookup"],
                       "attributes": {"protocol": "mcp"},
                       "upstream": {"kind": "mcp-stdio", "command": [sys.executable, str(HERE / "tickets_mcp.py")]}})
    for agent in ("planner", "helper"):
        names[f"{agent}_join"] = post(f"/v1/agents/{names[agent]}/join-tokens", {"ttl": 300})["join_token"]
    # The gateway picks new tools up within a second or so.
    for _ in range(100):
        if admin.get(f"{GATEWAY}/.well-known/oauth-protected-resource/{names['tickets']}").status_code == 200:
            break
        time.sleep(0.1)
    admin.close()
    return names


# --- the agent's side: what an agent's code looks like --------------------------


async def ask_mcp(task, url: str, ticket: str) -> str:
    # The MCP SDK's client through the gateway; the tool is found from the
    # gateway's 401 (RFC 9728) and its token is bound to this instance's key.
    async with connect(task, url) as session:
        result = await session.call_tool("lookup", {"ticket": ticket})
        return " ".join(getattr(c, "text", "") for c in result.content)


def main() -> int:
    names = setup()
    notes, tickets = names["notes"], names["tickets"]

    step("attest the planner and its helper (a key each, in memory, never sent)")
    planner = Client(WRIT_ADDR, JoinToken(names["planner_join"]), agent=names["planner"])
    helper = Client(WRIT_ADDR, JoinToken(names["helper_join"]), agent=names["helper"])
    planner.attest()
    helper.attest()

    step("start a task for user:alice: look tickets up (MCP) and read notes (HTTP)")
    with planner.task(intent="triage ticket T-7", capabilities={tickets: ["lookup"], notes: ["read"]},
                      on_behalf_of="user:alice") as task:
        print(f"   task {task.task_id}")

        step("call the MCP tool through the gateway")
        answer = asyncio.run(ask_mcp(task, f"{GATEWAY}/{tickets}", "T-7"))
        print(f"   {answer}")
        assert "Login page" in answer

        step("call the HTTP tool through the gateway (Authorization: DPoP, a fresh proof per request)")
        with httpx2.Client(auth=task.httpx_auth(notes, scopes=["read"]), timeout=30) as http:
            note = http.get(f"{GATEWAY}/{notes}/tickets/T-7").raise_for_status().json()
        print(f"   {note}")
        assert note["secret_injected"], "the gateway injected the upstream secret"

        step("policy refuses what the task was not given")
        try:
            task.delegate(actor=helper, scopes=[f"{tickets}:lookup", f"{notes}:read"])
        except Denied as e:
            print(f"   refused: {e}")
        else:
            raise SystemExit("a delegation beyond read-only work was not refused")

        step("delegate read-only work on the notes to the helper (its own key proves it takes part)")
        delegation = task.delegate(actor=helper, scopes=[f"{notes}:read"])
        with helper.adopt(delegation) as sub:
            with httpx2.Client(auth=sub.httpx_auth(notes), timeout=30) as http:
                r = http.get(f"{GATEWAY}/{notes}/tickets/T-8")
                r.raise_for_status()
            print(f"   the helper read {r.json()['ticket']} under task {sub.task_id}")

    step(f"task finished: {task.ended.status}, {task.ended.revoked_tokens} tokens revoked")
    planner.close()
    helper.close()
    print("ok: the whole story succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
