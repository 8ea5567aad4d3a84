"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`,
server mode, on Node 22 from npm's `node` package) against two MCP servers
from the registries, directly and through writ's gateway, under the shipped
example policies: `@modelcontextprotocol/server-everything` on streamable
HTTP, and a server written with the MCP Python SDK
(interop/mcp-conformance/python_server.py) whose tools report progress and
ask for sampling and elicitation.

The suite's server mode takes only a URL, so a forwarding shim
(interop/mcp-conformance/shim.py) adds the tool token in front of the
gateway. Each scenario must end the same both ways (the same numbers of checks
passed, failed and warned); the per-scenario table
of both runs is printed either way (pytest -s, or on failure).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

from conftest import ROOT
from test_gateway import free_port, register_tool, wait_for_tool, wait_ready
from test_interop import join_and_attest, start_task

CONF = ROOT / "interop" / "mcp-conformance"
NODE = CONF / "node_modules" / "node" / "bin" / "node"
SUITE = CONF / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EVERYTHING = CONF / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
# One scenario's run may wait this long (a server request that never gets
# its answer waits for the client's own timeout).
RUN_TIMEOUT = int(os.environ.get("WRIT_CONFORMANCE_TIMEOUT", "240"))

# The MCP tools the suite calls. The task holds them on both servers,
# whether the server has them or not, so that what reaches the server is
# the suite's own request and the server's answer decides the scenario.
SUITE_TOOLS = ["test_simple_text", "test_image_content", "test_audio_content", "test_embedded_resource",
               "test_multiple_content_types", "test_tool_with_logging", "test_error_handling",
               "test_tool_with_progress", "test_sampling", "test_elicitation",
               "test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums",
               "json_schema_2020_12_tool", "test_reconnection"]

# Where the gateway deliberately differs from the server, and why. Nothing
# else may differ.
EXPECTED = {
    ("server-everything", "dns-rebinding-protection"):
        "server-everything does not check Host or Origin; the gateway refuses an Origin the tool "
        "does not list, so through it the scenario passes",
}

sys.path.insert(0, str(CONF))
from shim import Shim  # noqa: E402


def wait_port(port, proc, what):
    import socket
    for _ in range(200):
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} never listened on {port}")


def start_python_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(CONF / "python_server.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "the MCP Python SDK server")
    return proc, f"http://127.0.0.1:{port}/mcp"


def start_everything():
    port = free_port()
    proc = subprocess.Popen([str(NODE), str(EVERYTHING), "streamableHttp"],
                            env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "server-everything")
    return proc, f"http://127.0.0.1:{port}/mcp"


def tool_names(url):
    """The server's MCP tools, asked directly (every one becomes a scope)."""
    h = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "writ-interop", "version": "1"}}}
    r = requests.post(url, json=init, headers=h)
    sid = r.headers.get("mcp-session-id")
    if sid:
        h["mcp-session-id"] = sid
    h["mcp-protocol-version"] = "2025-06-18"
    requests.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
    r = requests.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=h)
    body = r.text
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        body = next(line[5:] for line in body.splitlines() if line.startswith("data:") and '"id":2' in line.replace(" ", ""))
    return [t["name"] for t in json.loads(body)["result"]["tools"]]


def through_gateway(writ, name, url):
    """Registers `url` as MCP tool `name` (every MCP tool a scope), and a
    shim in front of the gateway holding a tool token for all of them."""
    scopes = sorted(set(tool_names(url)) | set(SUITE_TOOLS))
    shim = Shim(writ.gw(f"/{name}"))
    register_tool(writ, {"name": name, "audience": f"urn:mcp:{name}", "scopes": scopes,
                         "attributes": {"protocol": "mcp"},
                         "upstream": {"kind": "mcp", "url": url, "origins": [shim.origin]}})
    wait_for_tool(writ, name)
    inst = join_and_attest(writ)
    r = start_task(writ, inst["access_token"], [{"tool": name, "scopes": scopes}])
    assert r.status_code == 201, r.text
    task = r.json()
    r = requests.post(writ.url("/oauth2/token"), data={
        "grant_type": EXCHANGE, "subject_token": task["access_token"],
        "subject_token_type": ACCESS_TOKEN, "audience": name, "scope": " ".join(scopes)})
    assert r.status_code == 200, r.text
    shim.token = r.json()["access_token"]
    # The task's lease lapses without heartbeats, and its tokens die with it.
    stop = threading.Event()

    def beat():
        while not stop.wait(5):
            requests.post(writ.url(f"/v1/tasks/{task['task_id']}/heartbeat"),
                          headers={"Authorization": f"Bearer {task['access_token']}"})

    threading.Thread(target=beat, daemon=True).start()
    shim.stop_heartbeat = stop.set
    return shim


def run_suite(url, out):
    """Every server scenario, pending ones included; {scenario: (checks
    passed, failed, warned, why)}."""
    started = time.monotonic()
    p = subprocess.run([str(NODE), str(SUITE), "server", "--url", url, "--suite", "all", "-o", str(out)],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT * 10)
    results = {}
    for d in sorted(out.iterdir()):
        name = d.name[len("server-"):].rsplit("-", 6)[0] if d.name.startswith("server-") else d.name
        f = d / "checks.json"
        checks = json.loads(f.read_text()) if f.exists() else []
        ok = sum(1 for c in checks if c.get("status") == "SUCCESS")
        bad = [c for c in checks if c.get("status") == "FAILURE"]
        warned = [c for c in checks if c.get("status") == "WARNING"]
        results[name] = (ok, len(bad), len(warned),
                         "; ".join(str(c.get("errorMessage"))[:90] for c in bad + warned))
    assert results, f"the suite ran nothing:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return results, time.monotonic() - started


def table(server, direct, through):
    lines = [f"\n{server}: scenario | direct | through writ's gateway | same",
             "-" * 96]
    for s in sorted(set(direct) | set(through)):
        d, t = direct.get(s), through.get(s)
        fmt = lambda r: "missing" if r is None else f"{r[0]} ok, {r[1]} failed, {r[2]} warned"
        same = d is not None and t is not None and d[:3] == t[:3]
        lines.append(f"{s:30} | {fmt(d):25} | {fmt(t):25} | {'yes' if same else 'NO'}")
        if not same and t is not None and t[3]:
            lines.append(f"{'':30}   through: {t[3]}")
        if not same and d is not None and d[3]:
            lines.append(f"{'':30}   direct:  {d[3]}")
    return "\n".join(lines)


@pytest.fixture()
def servers():
    assert NODE.exists() and SUITE.exists(), \
        "run `npm ci` in interop/mcp-conformance first (scripts/test.sh does)"
    procs = []
    py, py_url = start_python_server()
    procs.append(py)
    ev, ev_url = start_everything()
    procs.append(ev)
    yield {"python-sdk": py_url, "server-everything": ev_url}
    for p in procs:
        p.terminate()
        p.wait(10)


def test_the_conformance_suite_ends_the_same_directly_and_through_the_gateway(writ, servers):
    wait_ready(writ)
    report, differ = [], []
    for name, url in servers.items():
        shim = through_gateway(writ, name, url)
        with tempfile.TemporaryDirectory() as tmp:
            direct, dt = run_suite(url, pathlib.Path(tmp) / "direct")
            through, tt = run_suite(shim.url, pathlib.Path(tmp) / "through")
        shim.stop_heartbeat()
        shim.stop()
        report.append(table(name, direct, through))
        report.append(f"{name}: direct {sum(r[0] for r in direct.values())} checks passed in {dt:.1f} s, "
                      f"through the gateway {sum(r[0] for r in through.values())} in {tt:.1f} s")
        for s in sorted(set(direct) | set(through)):
            d, t = direct.get(s, (None,) * 4), through.get(s, (None,) * 4)
            if (name, s) in EXPECTED:
                report.append(f"{name}/{s}: differs as expected: {EXPECTED[(name, s)]}")
                assert t[1] == 0, f"{name}/{s} through the gateway: {t}"
            elif d[:3] != t[:3]:
                differ.append(f"{name}/{s}")
    text = "\n".join(report)
    print(text)
    pathlib.Path(os.environ.get("WRIT_CONFORMANCE_REPORT", "/dev/null")).write_text(text)
    assert not differ, f"scenarios that end differently through the gateway: {differ}\n{text}"
