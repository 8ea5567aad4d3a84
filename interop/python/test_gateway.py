"""The gateway with other people's clients and servers.

MCP: the official MCP Python SDK client (`mcp`) talks through writ's gateway
to `@modelcontextprotocol/server-everything` (npm, spawned on stdio by the
gateway) and to a server built with the SDK's `MCPServer` on streamable
HTTP. Plain HTTP: `requests` calls through the gateway to a stdlib
`http.server` that records what it received.
"""

import asyncio
import http.server
import json
import pathlib
import socket
import subprocess
import sys
import threading
import time

import httpx2
import pytest
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from conftest import ROOT, Writ
from test_dpop import Key
from test_interop import join_and_attest, start_task

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
EVERYTHING = ROOT / "interop" / "node" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
CANARY = "canary-9f2c1e7d-upstream-secret"


def register_tool(writ, body):
    r = requests.post(writ.url("/v1/tools"), json=body, headers=writ.admin)
    assert r.status_code == 201, r.text
    return r.json()


def task_and_tool_token(writ, caps, tool, scope, obo=None):
    inst = join_and_attest(writ)
    r = start_task(writ, inst["access_token"], caps, obo=obo)
    assert r.status_code == 201, r.text
    task = r.json()
    r = requests.post(writ.url("/oauth2/token"), data={
        "grant_type": EXCHANGE, "subject_token": task["access_token"],
        "subject_token_type": ACCESS_TOKEN, "audience": tool, "scope": scope,
    })
    assert r.status_code == 200, r.text
    return task, r.json()["access_token"]


def complete(writ, task):
    r = requests.post(writ.url(f"/v1/tasks/{task['task_id']}/complete"),
                      headers={"Authorization": f"Bearer {task['access_token']}"})
    assert r.status_code == 200, r.text


def wait_ready(writ):
    for _ in range(100):
        if requests.get(writ.gw("/healthz")).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("gateway never became ready")


def wait_for_tool(writ, name):
    """The gateway refreshes its bundle every second."""
    for _ in range(60):
        if requests.get(writ.gw(f"/.well-known/oauth-protected-resource/{name}")).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"gateway never saw tool {name}")


def audit_calls(writ):
    r = requests.get(writ.url("/v1/audit?limit=1000"), headers=writ.admin)
    assert r.status_code == 200, r.text
    events = [json.loads(rec["event"]) if isinstance(rec["event"], str) else rec["event"]
              for rec in r.json()["records"]]
    return [e for e in events if e["kind"] == "tool_call"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- plain HTTP: injection and stripping --------------------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    seen = []

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        Recorder.seen.append({"method": self.command, "path": self.path,
                              "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        out = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *args):
        pass


@pytest.fixture()
def recorder():
    Recorder.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture()
def debug_writ():
    w = Writ(log="debug")
    yield w
    w.stop()


def test_g1_g2_g3_http_upstream_gets_the_secret_and_never_the_agents_token(debug_writ, recorder):
    writ = debug_writ
    register_tool(writ, {"name": "crm", "audience": "https://crm.example", "scopes": ["read", "write"],
                         "upstream": {"kind": "http", "url": recorder + "/api"}})
    r = requests.put(writ.url("/v1/tools/crm/secret"), json={"header": "X-Api-Key", "value": CANARY},
                     headers=writ.admin)
    assert r.status_code == 200, r.text
    assert CANARY not in r.text
    wait_ready(writ)
    wait_for_tool(writ, "crm")
    task, token = task_and_tool_token(writ, [{"tool": "crm", "scopes": ["read"]}], "crm", "read")

    r = requests.get(writ.gw("/crm/customers/42?fields=name"), headers={
        "Authorization": f"Bearer {token}", "X-Api-Key": "the-agents-own-guess",
        "X-Forwarded-For": "6.6.6.6", "X-Writ-Agent": "someone-else", "Cookie": "a=b",
    })
    assert r.status_code == 200, r.text
    got = Recorder.seen[-1]
    assert got["path"] == "/api/customers/42?fields=name"
    h = got["headers"]
    assert h["x-api-key"] == CANARY, "the upstream gets the stored secret, not the agent's header"
    assert "authorization" not in h and "dpop" not in h
    assert token not in json.dumps(got)
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-writ-agent"] == "demo-agent" and h["x-writ-task"] == task["task_id"]

    # A write with a read-only token: refused by policy, nothing reaches the upstream.
    n = len(Recorder.seen)
    r = requests.post(writ.gw("/crm/customers"), json={"name": "x"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["policy_version"]
    assert len(Recorder.seen) == n

    # No credential, garbage, or another tool's token: 401 with the RFC 9728 pointer.
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {task['access_token']}"}):
        r = requests.get(writ.gw("/crm/customers/42"), headers=headers)
        assert r.status_code == 401, r.text
        assert "resource_metadata=" in r.headers["www-authenticate"]
    assert len(Recorder.seen) == n
    meta = requests.get(writ.gw("/.well-known/oauth-protected-resource/crm")).json()
    assert meta["authorization_servers"] == [writ.addr]
    assert meta["resource"] == writ.gw("/crm")

    # Completing the task cuts the token off at the gateway: the broker
    # acknowledges the completion once every live gateway holds it, so the
    # very next call is refused.
    complete(writ, task)
    r = requests.get(writ.gw("/crm/customers/42"), headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "revoked" in r.text
    assert len(Recorder.seen) == n

    # The secret is nowhere: not in any API answer, the audit trail or the logs.
    for path in ("/v1/tools", "/v1/tools/crm", "/v1/audit?limit=1000"):
        assert CANARY not in requests.get(writ.url(path), headers=writ.admin).text
    time.sleep(0.5)
    assert CANARY not in writ.stdout_and_logs()
    # An admin cannot read secrets through the gateway's endpoint.
    assert requests.get(writ.url("/v1/gateway/secrets"), headers=writ.admin).status_code == 401

    # Every decision reached the audit trail, with agent, task and policy version.
    deadline = time.time() + 3
    while time.time() < deadline and len(audit_calls(writ)) < 2:
        time.sleep(0.1)
    calls = audit_calls(writ)
    outcomes = sorted(c["outcome"] for c in calls)
    assert outcomes == ["deny", "success"], calls
    for c in calls:
        assert c["agent"] == "demo-agent" and c["task"] == task["task_id"]
        assert c["policy_version"] and c["actor"] == "gateway:embedded"


# --- MCP ---------------------------------------------------------------------


class Dpop(httpx2.Auth):
    """DPoP for every request the MCP client makes: a fresh proof (PyJWT)."""

    def __init__(self, token, key):
        self.token, self.key = token, key

    def auth_flow(self, request):
        url = str(request.url).split("?")[0]
        request.headers["Authorization"] = f"DPoP {self.token}"
        request.headers["DPoP"] = self.key.proof(request.method, url, self.token)
        yield request


async def mcp_session(url, token=None, auth=None):
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = httpx2.AsyncClient(headers=headers, auth=auth, timeout=30)
    return client, streamable_http_client(url, http_client=client)


async def run_mcp(url, body, token=None, auth=None):
    client, transport = await mcp_session(url, token, auth)
    async with client:
        async with transport as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await body(session)


def tool_names(listed):
    return sorted(t.name for t in listed.tools)


def text_of(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


def test_g6_mcp_stdio_server_everything_through_the_gateway(writ):
    assert EVERYTHING.exists(), "run `npm ci` in interop/node first (scripts/test.sh does)"
    register_tool(writ, {"name": "everything", "audience": "urn:mcp:everything",
                         "scopes": ["echo", "get-sum", "get-env"], "attributes": {"protocol": "mcp"},
                         "upstream": {"kind": "mcp-stdio", "command": ["node", str(EVERYTHING), "stdio"]}})
    wait_ready(writ)
    wait_for_tool(writ, "everything")
    task, token = task_and_tool_token(
        writ, [{"tool": "everything", "scopes": ["echo", "get-sum", "get-env"]}], "everything", "echo get-env")
    url = writ.gw("/everything")

    async def story(session):
        listed = await session.list_tools()
        # get-sum is not in the token; get-env is, but policy forbids it.
        assert tool_names(listed) == ["echo"]
        echoed = await session.call_tool("echo", {"message": "hello through writ"})
        assert not echoed.is_error and "hello through writ" in text_of(echoed)
        refused = []
        for name, args in (("get-sum", {"a": 1, "b": 2}), ("get-env", {})):
            try:
                r = await session.call_tool(name, args)
                refused.append(r.is_error)
            except Exception as e:  # the SDK raises on a JSON-RPC error
                refused.append("writ" in str(e))
        assert refused == [True, True]
        return True

    assert asyncio.run(run_mcp(url, story, token=token))

    # A batch cannot smuggle a forbidden call next to an allowed one.
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
         "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    r = requests.post(url, json=init, headers=h)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    h["Mcp-Session-Id"] = sid
    requests.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
    batch = [
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "ok"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get-env", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
         "params": {"name": "echo", "arguments": {"message": "-----BEGIN PRIVATE KEY----- x"}}},
    ]
    r = requests.post(url, json=batch, headers=h)
    assert r.status_code == 200, r.text
    answers = {a["id"]: a for a in r.json()}
    assert "result" in answers[2]
    assert answers[3]["error"]["code"] == -32001
    assert answers[4]["error"]["code"] == -32001, "arguments are decided too"
    assert "no-private-keys-in-arguments" in answers[4]["error"]["data"]["determining_policies"]

    # Another task's token cannot ride this session.
    _, other = task_and_tool_token(writ, [{"tool": "everything", "scopes": ["echo"]}], "everything", "echo")
    r = requests.post(url, json=batch[0], headers={**h, "Authorization": f"Bearer {other}"})
    assert r.status_code == 404

    # complete: the very next call is refused.
    complete(writ, task)
    r = requests.post(url, json=batch[0], headers=h)
    assert r.status_code == 401, r.text


@pytest.fixture()
def mcp_http_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).with_name("mcp_http_server.py")), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


def test_mcp_http_server_with_a_dpop_bound_token(writ, mcp_http_server):
    register_tool(writ, {"name": "crm-mcp", "audience": "urn:mcp:crm", "scopes": ["lookup", "wipe"],
                         "attributes": {"protocol": "mcp"},
                         "upstream": {"kind": "mcp", "url": mcp_http_server}})
    wait_ready(writ)
    wait_for_tool(writ, "crm-mcp")
    # A DPoP-bound instance, task and tool token (proofs by PyJWT).
    key = Key()
    r = requests.post(writ.url("/v1/agents/demo-agent/join-tokens"), json={"ttl": 60}, headers=writ.admin)
    jt = r.json()["join_token"]
    r = requests.post(writ.url("/v1/attest"), json={"agent": "demo-agent", "join_token": jt},
                      headers={"DPoP": key.proof("POST", writ.url("/v1/attest"))})
    assert r.status_code == 201, r.text
    inst = r.json()["access_token"]
    r = requests.post(writ.url("/v1/tasks"), json={"intent": "look up a customer", "capabilities": [
        {"tool": "crm-mcp", "scopes": ["lookup", "wipe"]}]},
        headers={"Authorization": f"DPoP {inst}", "DPoP": key.proof("POST", writ.url("/v1/tasks"), inst)})
    assert r.status_code == 201, r.text
    task = r.json()["access_token"]
    r = requests.post(writ.url("/oauth2/token"), data={
        "grant_type": EXCHANGE, "subject_token": task, "subject_token_type": ACCESS_TOKEN,
        "audience": "crm-mcp", "scope": "lookup"}, headers={"DPoP": key.proof("POST", writ.url("/oauth2/token"))})
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "DPoP"
    token = r.json()["access_token"]
    url = writ.gw("/crm-mcp")

    async def story(session):
        assert tool_names(await session.list_tools()) == ["lookup"]
        r = await session.call_tool("lookup", {"customer": "c-7"})
        assert "customer c-7: active" in text_of(r)
        try:
            r = await session.call_tool("wipe", {"customer": "c-7"})
            assert r.is_error
        except Exception as e:
            assert "writ" in str(e)
        return True

    assert asyncio.run(run_mcp(url, story, auth=Dpop(token, key)))

    # Raw JSON-RPC with generous whitespace: the gateway re-serializes the
    # body, and the upstream still gets a well-formed request.
    def raw(body, sid=None):
        h = {"Authorization": f"DPoP {token}", "DPoP": key.proof("POST", url, token),
             "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if sid:
            h["Mcp-Session-Id"] = sid
        return requests.post(url, data=json.dumps(body, indent=4), headers=h)

    r = raw({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    raw({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    r = raw({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "lookup", "arguments": {"customer": "c-9"}}}, sid)
    assert r.status_code == 200, r.text
    assert "customer c-9: active" in r.text
    r = raw({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
             "params": {"name": "wipe", "arguments": {"customer": "c-9"}}}, sid)
    assert r.status_code == 200 and '"code":-32001' in r.text.replace(" ", ""), r.text

    # A session id the gateway did not see opened by this task is refused.
    r = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                      headers={"Authorization": f"DPoP {token}", "Mcp-Session-Id": "guessed-session",
                               "DPoP": key.proof("POST", url, token),
                               "Accept": "application/json, text/event-stream"})
    assert r.status_code == 404, r.text

    # Without its proof, the bound token is refused.
    r = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                      headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
