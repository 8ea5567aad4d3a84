"""The MCP TypeScript SDK client (npm `@modelcontextprotocol/sdk`) and the
MCP Python SDK client (`mcp` on PyPI) through writ's gateway, to a server
written with the MCP Python SDK (interop/mcp-conformance/python_server.py):
progress notifications arrive when they are sent (timed), sampling and
elicitation round-trip, resources, prompts and cancellation work.
"""

import json
import subprocess
import threading
import time

import anyio
import httpx2
import pytest
import requests
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from test_gateway import register_tool, wait_for_tool, wait_ready
from test_interop import join_and_attest, start_task
from test_mcp_conformance import ACCESS_TOKEN, CONF, EXCHANGE, NODE, start_python_server, tool_names


@pytest.fixture()
def through(writ):
    """The Python SDK server registered as tool `pysdk`, and a tool token
    for all its tools (its task kept alive by heartbeats)."""
    assert NODE.exists(), "run `npm ci` in interop/mcp-conformance first (scripts/test.sh does)"
    proc, url = start_python_server()
    wait_ready(writ)
    scopes = tool_names(url)
    register_tool(writ, {"name": "pysdk", "audience": "urn:mcp:pysdk", "scopes": scopes,
                         "attributes": {"protocol": "mcp"}, "upstream": {"kind": "mcp", "url": url}})
    wait_for_tool(writ, "pysdk")
    inst = join_and_attest(writ)
    r = start_task(writ, inst["access_token"], [{"tool": "pysdk", "scopes": scopes}])
    assert r.status_code == 201, r.text
    task = r.json()
    r = requests.post(writ.url("/oauth2/token"), data={
        "grant_type": EXCHANGE, "subject_token": task["access_token"],
        "subject_token_type": ACCESS_TOKEN, "audience": "pysdk", "scope": " ".join(scopes)})
    assert r.status_code == 200, r.text
    stop = threading.Event()

    def beat():
        while not stop.wait(5):
            requests.post(writ.url(f"/v1/tasks/{task['task_id']}/heartbeat"),
                          headers={"Authorization": f"Bearer {task['access_token']}"})

    threading.Thread(target=beat, daemon=True).start()
    yield writ.gw("/pysdk"), r.json()["access_token"]
    stop.set()
    proc.terminate()
    proc.wait(10)


def test_the_typescript_sdk_client_through_the_gateway(through):
    url, token = through
    p = subprocess.run([str(NODE), str(CONF / "sdk_client.mjs"), url, token, "through"],
                       capture_output=True, text=True, timeout=120, cwd=CONF)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1))
    failed = {k: v["detail"] for k, v in out.items() if not v["ok"]}
    assert not failed, failed
    assert len(out) == 7


def test_the_python_sdk_client_through_the_gateway(through):
    url, token = through

    async def sampling(context, params):
        return types.CreateMessageResult(role="assistant", model="interop-model",
                                         content=types.TextContent(type="text", text=f"sampled: {params.messages[0].content.text}"))

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"username": "bob", "email": "bob@example.com"})

    async def walk():
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with client, streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write, sampling_callback=sampling,
                                     elicitation_callback=elicitation) as s:
                await s.initialize()
                got = {}

                start = time.monotonic()
                arrivals = []

                async def progress(p, total, message):
                    arrivals.append((round(time.monotonic() - start, 2), p))

                r = await s.call_tool("slow_progress", {"steps": 3}, progress_callback=progress)
                got["progress"] = (arrivals, round(time.monotonic() - start, 2), r.content[0].text)

                r = await s.call_tool("test_sampling", {"prompt": "hi"})
                got["sampling"] = r.content[0].text
                r = await s.call_tool("test_elicitation", {"message": "who?"})
                got["elicitation"] = r.content[0].text

                got["resources"] = sorted(str(x.uri) for x in (await s.list_resources()).resources)
                got["read"] = (await s.read_resource("test://static-text")).contents[0].text
                try:
                    await s.read_resource("file:///writ-interop/host-file")
                    got["host_file"] = "read"
                except Exception as e:  # the SDK raises on a JSON-RPC error
                    got["host_file"] = str(e)
                got["prompts"] = sorted(p.name for p in (await s.list_prompts()).prompts)
                got["prompt"] = (await s.get_prompt("test_prompt_with_arguments",
                                                    {"arg1": "x", "arg2": "y"})).messages[0].content.text

                before = int((await s.call_tool("cancellations", {})).content[0].text)
                t0 = time.monotonic()
                with anyio.move_on_after(0.5):
                    await s.call_tool("wait_forever", {})
                got["cancel_took"] = round(time.monotonic() - t0, 2)
                after = before
                for _ in range(40):
                    after = int((await s.call_tool("cancellations", {})).content[0].text)
                    if after > before:
                        break
                    await anyio.sleep(0.1)
                got["cancelled_at_server"] = after - before
                await s.send_ping()
                return got

    got = anyio.run(walk)
    print(json.dumps(got, indent=1))
    arrivals, finished, text = got["progress"]
    assert text == "done after 3 steps"
    assert [p for _, p in arrivals] == [1, 2, 3], arrivals
    for i, (t, _) in enumerate(arrivals):
        assert i + 0.8 <= t <= i + 1.8, f"progress {i + 1} arrived at {t} s, not when sent: {arrivals}"
    assert got["sampling"] == "LLM response: sampled: hi"
    assert "bob@example.com" in got["elicitation"] and "accept" in got["elicitation"]
    assert got["resources"] == ["test://static-binary", "test://static-text", "test://watched-resource"]
    assert got["read"] == "This is the content of the static text resource."
    # The host file is listed directly (see the conformance test) but not
    # through the gateway, and reading it is refused by policy.
    assert "writ" in got["host_file"] and "no-host-files" in got["host_file"], got["host_file"]
    assert "test_prompt_with_arguments" in got["prompts"]
    assert got["prompt"] == "Prompt with arguments: arg1='x', arg2='y'"
    assert got["cancel_took"] < 2
    assert got["cancelled_at_server"] == 1, "the server heard of the cancellation"
