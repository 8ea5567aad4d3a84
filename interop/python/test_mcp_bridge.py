"""`writ mcp bridge TOOL` under the MCP Python SDK's stdio client (`mcp` on
PyPI), unchanged: the client spawns the bridge as its "server", and the
bridge attests as a registered agent, holds a task, signs DPoP and forwards
every message to writ's gateway, which calls a server written with the MCP
Python SDK (interop/mcp-conformance/python_server.py) over streamable HTTP.
The client's config holds no key of the tool's.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import anyio
import requests
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from conftest import ADMIN, BIN
from test_gateway import audit_calls, register_tool, wait_for_tool, wait_ready
from test_mcp_conformance import start_python_server, tool_names


def join_token(writ, agent="demo-agent"):
    r = requests.post(writ.url(f"/v1/agents/{agent}/join-tokens"), json={"ttl": 120}, headers=writ.admin)
    assert r.status_code == 201, r.text
    return r.json()["join_token"]


def tasks(writ):
    r = requests.get(writ.url("/v1/tasks"), headers=writ.admin)
    assert r.status_code == 200, r.text
    return r.json()


def bridge_env(writ, jt):
    # What a user puts in an MCP client's config: where writ is, the agent,
    # a one-time join token. No key of the tool's.
    return {"PATH": os.environ.get("PATH", ""), "WRIT_ADDR": writ.addr, "WRIT_GATEWAY": writ.gateway,
            "WRIT_AGENT": "demo-agent", "WRIT_JOIN_TOKEN": jt}


def setup_tool(writ):
    proc, url = start_python_server()
    wait_ready(writ)
    scopes = tool_names(url)
    register_tool(writ, {"name": "pysdk", "audience": "urn:mcp:pysdk", "scopes": scopes,
                         "attributes": {"protocol": "mcp"}, "upstream": {"kind": "mcp", "url": url}})
    wait_for_tool(writ, "pysdk")
    return proc


def test_a_stock_stdio_client_calls_its_tool_through_the_bridge_and_the_gateway(writ):
    server = setup_tool(writ)
    jt = join_token(writ)
    errlog = tempfile.TemporaryFile("w+")
    params = StdioServerParameters(command=BIN, args=["mcp", "bridge", "pysdk"], env=bridge_env(writ, jt))

    async def sampling(context, params):
        return types.CreateMessageResult(role="assistant", model="bridge-model",
                                         content=types.TextContent(type="text", text=f"sampled: {params.messages[0].content.text}"))

    async def walk():
        got = {}
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, sampling_callback=sampling) as s:
                init = await s.initialize()
                got["server"] = init.server_info.name
                got["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
                r = await s.call_tool("test_simple_text", {})
                got["simple"] = r.content[0].text
                arrivals = []

                async def progress(p, total, message):
                    arrivals.append(p)

                # An SSE answer with progress on the way.
                r = await s.call_tool("slow_progress", {"steps": 2}, progress_callback=progress)
                got["progress"] = (arrivals, r.content[0].text)
                # A server-initiated request (sampling) on the POST's stream,
                # answered by the client through the bridge.
                r = await s.call_tool("test_sampling", {"prompt": "hi"})
                got["sampling"] = r.content[0].text
                # The server closes the POST's stream mid-call: the bridge
                # resumes it (GET with Last-Event-ID) and the answer arrives.
                with anyio.fail_after(20):
                    r = await s.call_tool("test_reconnection", {})
                got["reconnection"] = r.content[0].text
                got["read"] = (await s.read_resource("test://static-text")).contents[0].text
                # Policy still decides at the gateway: a host file is refused.
                try:
                    await s.read_resource("file:///writ-interop/host-file")
                    got["host_file"] = "read"
                except Exception as e:
                    got["host_file"] = str(e)
                live = [t for t in tasks(writ) if t["status"] == "active"]
                got["live_tasks"] = [(t["agent"], [c["tool"] for c in t["capabilities"]]) for t in live]
                await s.send_ping()
        return got

    try:
        got = anyio.run(walk)
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(got, indent=1))
    assert got["simple"] == "This is a simple text response for testing."
    assert "test_sampling" in got["tools"] and "slow_progress" in got["tools"]
    assert got["progress"] == ([1, 2], "done after 2 steps")
    assert got["sampling"] == "LLM response: sampled: hi"
    assert got["reconnection"] == "Reconnection test completed"
    assert got["read"] == "This is the content of the static text resource."
    assert "no-host-files" in got["host_file"], got["host_file"]
    assert got["live_tasks"] == [("demo-agent", ["pysdk"])], "the bridge held one task for the tool"
    # The task ended when the client closed the bridge's stdin.
    deadline = time.monotonic() + 10
    while any(t["status"] == "active" for t in tasks(writ)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [t["status"] for t in tasks(writ)] == ["completed"]
    # The gateway decided (and the broker audited) the calls as the agent's.
    task_id = tasks(writ)[0]["task_id"]
    deadline = time.monotonic() + 10
    while not audit_calls(writ) and time.monotonic() < deadline:
        time.sleep(0.1)
    calls = audit_calls(writ)
    assert calls, "tool_call records for the bridge's calls"
    assert all(c["agent"] == "demo-agent" and c["task"] == task_id for c in calls), calls
    # The bridge printed no secret: not the join token, not a token of writ's.
    errlog.seek(0)
    log = errlog.read()
    assert jt not in log
    assert "eyJ" not in log, log
    assert "forwarding stdio to" in log and "completed" in log, log


def run_bridge(writ, jt, *extra, env_extra=None):
    env = {**bridge_env(writ, jt), **(env_extra or {})}
    return subprocess.run([BIN, "mcp", "bridge", *extra], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


def test_the_bridge_refuses_to_start_when_the_tool_or_broker_is_unreachable_or_the_agent_not_allowed(writ):
    wait_ready(writ)
    jt = join_token(writ)
    # A tool the gateway does not serve: refused before the join token is spent.
    p = run_bridge(writ, jt, "no-such-tool")
    assert p.returncode != 0
    assert "serves no tool" in p.stderr, p.stderr
    assert p.stdout == ""
    # No gateway there.
    p = run_bridge(writ, jt, "tickets", env_extra={"WRIT_GATEWAY": "http://127.0.0.1:9"})
    assert p.returncode != 0 and "cannot reach the gateway" in p.stderr, p.stderr
    # No broker there (the gateway is up): nothing attested.
    server = setup_tool(writ)
    try:
        p = run_bridge(writ, jt, "pysdk", env_extra={"WRIT_ADDR": "http://127.0.0.1:9"})
        assert p.returncode != 0 and "cannot reach writ" in p.stderr, p.stderr
        # A credential that attests nothing.
        p = run_bridge(writ, "wjt_not-a-real-token", "pysdk")
        assert p.returncode == 3 and "attestation refused" in p.stderr, p.stderr
        assert "wjt_not-a-real-token" not in p.stderr
        # Attested, but policy refuses the task (the agent is quarantined).
        r = requests.post(writ.url("/v1/agents/demo-agent/quarantine"), headers=writ.admin)
        assert r.status_code == 200, r.text
        p = run_bridge(writ, jt, "pysdk")
        assert p.returncode == 3 and "not allowed" in p.stderr, p.stderr
        assert jt not in p.stderr
    finally:
        server.terminate()
        server.wait(10)
    assert not [t for t in tasks(writ) if t["status"] == "active"]


def test_the_bridge_ends_its_task_on_a_signal(writ):
    server = setup_tool(writ)
    jt = join_token(writ)
    proc = subprocess.Popen([BIN, "mcp", "bridge", "pysdk"], env=bridge_env(writ, jt),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "forwarding stdio to" in line, line
        assert [t["status"] for t in tasks(writ)] == ["active"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert [t["status"] for t in tasks(writ)] == ["completed"]
    finally:
        if proc.poll() is None:
            proc.kill()
        server.terminate()
        server.wait(10)


def test_a_dpop_key_file_open_to_other_users_is_refused(writ):
    wait_ready(writ)
    jt = join_token(writ)
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "k.pem")
        subprocess.run([BIN, "dpop", "keygen", "--out", key], check=True, capture_output=True)
        os.chmod(key, 0o644)
        p = run_bridge(writ, jt, "tickets", "--dpop-key", key)
        assert p.returncode != 0 and "chmod 600" in p.stderr, p.stderr


def test_the_plan_applied_to_a_dev_server_leaves_a_stock_client_calling_its_tool_without_the_key(writ):
    """`writ discover --plan --ask-servers` on a client config holding keys,
    one in the headers of an HTTP server and one in the env of a stdio
    server: run the plan (each tool registered with the MCP tools its server
    lists, each key moved into writ by writ itself), then the stock stdio
    client runs the rewritten config, which holds no key, through `writ mcp
    bridge` and the gateway, which starts the stdio server with its key."""
    proc, url = start_python_server()
    wait_ready(writ)
    key = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc9x"  # a fake Stripe key, in two pieces
    notes_key = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"  # a fake GitHub token
    bindir = os.path.dirname(os.path.abspath(BIN))
    path = bindir + os.pathsep + os.environ.get("PATH", "")
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "mcp.json")
        with open(cfg, "w") as f:
            json.dump({"mcpServers": {
                "PySDK": {"url": url, "headers": {"Authorization": f"Bearer {key}"}},
                "notes": {"command": sys.executable,
                          "args": [os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_stdio_server.py")],
                          "env": {"NOTES_API_KEY": notes_key}}}}, f)
        env = {"PATH": path, "WRIT_ADDR": writ.addr, "WRIT_GATEWAY": writ.gateway, "HOME": d}
        found = subprocess.run([BIN, "discover", d, "--format", "json"], env=env,
                               capture_output=True, text=True, timeout=60)
        assert found.returncode == 0, found.stderr
        assert key not in found.stdout
        rules = [(x["rule"], x["mcp_server"], x["key"]) for x in json.loads(found.stdout)]
        assert ("stripe-secret-key", "PySDK", "Authorization") in rules, rules
        p = subprocess.run([BIN, "discover", d, "--plan", "--ask-servers", "--agent", "demo-agent"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        script = p.stdout
        assert key not in script + p.stderr and notes_key not in script + p.stderr
        # The server was asked for its tools: no placeholder is left to edit.
        assert "REPLACE-WITH-TOOL-NAMES" not in script, script
        assert f"--scope '{','.join(tool_names(url))}'" in script, script
        assert "--scope 'lookup,key_seen'" in script, script
        assert "gap:" not in script, script
        ran = subprocess.run(["sh", "-c", script], env={**env, "WRIT_TOKEN": ADMIN},
                             capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert key not in ran.stdout + ran.stderr and notes_key not in ran.stdout + ran.stderr
        wait_for_tool(writ, "pysdk")
        wait_for_tool(writ, "notes")
        with open(cfg + ".writ") as f:
            text = f.read()
        assert key not in text and notes_key not in text
        servers = json.loads(text)["mcpServers"]
        assert servers["PySDK"]["command"] == servers["notes"]["command"] == "writ"

        async def call_one(entry, tool):
            # How the bridge attests is the user's to add (here a one-time join token).
            params = StdioServerParameters(command=entry["command"], args=entry["args"],
                                           env={**entry["env"], "PATH": path, "WRIT_JOIN_TOKEN": join_token(writ)})
            async with stdio_client(params, errlog=tempfile.TemporaryFile("w+")) as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    return (await s.call_tool(tool, {})).content[0].text

        async def call():
            return (await call_one(servers["PySDK"], "test_simple_text"),
                    await call_one(servers["notes"], "key_seen"))

        # The gateway learns the sealed key within a second or two
        # (--require-secret: until then it refuses to forward).
        deadline = time.monotonic() + 10
        while True:
            try:
                got = anyio.run(call)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    proc.terminate()
    proc.wait(10)
    # The stdio server got its key from writ, in the variable it reads.
    assert got == ("This is a simple text response for testing.", f"key: set ({len(notes_key)} chars)"), got


def test_heartbeats_keep_the_task_past_its_lease_and_the_bridge_stops_when_the_task_ends():
    """With a 6 s lease the bridge heartbeats every 2 s and renews its tool
    token (never past the task's end): calls still work after the lease
    would have lapsed; at the task's hard end the bridge stops by itself,
    exit code 1."""
    from conftest import Writ
    writ = Writ(extra=("--lease-ttl", "6"))
    server = None
    try:
        server = setup_tool(writ)
        params = StdioServerParameters(command=BIN, args=["mcp", "bridge", "pysdk", "--ttl", "60"],
                                       env=bridge_env(writ, join_token(writ)))

        async def walk():
            async with stdio_client(params, errlog=tempfile.TemporaryFile("w+")) as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    first = (await s.call_tool("test_simple_text", {})).content[0].text
                    await anyio.sleep(9)
                    later = (await s.call_tool("test_simple_text", {})).content[0].text
                    return first, later

        first, later = anyio.run(walk)
        assert first == later == "This is a simple text response for testing."

        proc = subprocess.Popen([BIN, "mcp", "bridge", "pysdk", "--ttl", "4"], env=bridge_env(writ, join_token(writ)),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            code = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
        err = proc.stderr.read()
        assert code == 1, err
        assert "stopped: task" in err, err
        assert "eyJ" not in err
    finally:
        if server:
            server.terminate()
            server.wait(10)
        writ.stop()


def test_the_bridge_stops_when_the_tools_server_does_not_answer_initialize(writ):
    """The gateway serves the tool but its MCP server is down: the client's
    initialize gets an error answer, and the bridge stops (exit 1) and ends
    its task rather than sit there."""
    from test_gateway import free_port
    wait_ready(writ)
    url = f"http://127.0.0.1:{free_port()}/mcp"
    register_tool(writ, {"name": "down", "audience": "urn:mcp:down", "scopes": ["echo"],
                         "attributes": {"protocol": "mcp"}, "upstream": {"kind": "mcp", "url": url}})
    wait_for_tool(writ, "down")
    proc = subprocess.Popen([BIN, "mcp", "bridge", "down"], env=bridge_env(writ, join_token(writ)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        proc.stdin.write(json.dumps(init) + "\n")
        proc.stdin.flush()
        code = proc.wait(20)
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1, err
    assert "did not reach down" in err, err
    answer = json.loads(out.splitlines()[0])
    assert answer["id"] == 1 and "error" in answer, out
    assert [t["status"] for t in tasks(writ)] == ["completed"]
