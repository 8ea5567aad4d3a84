"""MCP through the gateway behaves as direct: the MCP Python SDK client talks
through writ's gateway to a server built with the same SDK
(`mcp_stream_server.py`), on streamable HTTP and spawned on stdio by the
gateway. Progress arrives when it is sent, server requests (sampling,
elicitation, roots) round-trip, a notification comes on the GET stream, a
broken stream resumes with Last-Event-ID, and a server protecting itself
against DNS rebinding accepts what the gateway forwards."""

import asyncio
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
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from test_gateway import (complete, free_port, register_tool, task_and_tool_token, text_of, wait_for_tool,
                          wait_ready)

SERVER = pathlib.Path(__file__).with_name("mcp_stream_server.py")
TOOLS = ["countdown", "ask_model", "ask_person", "roots", "announce", "interrupted"]


def start_http_server(*extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), "http", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, port


@pytest.fixture(params=["http", "stdio"])
def streams_tool(request, writ):
    """The stream server behind the gateway as tool `streams`, and a token
    for every one of its tools."""
    proc = None
    if request.param == "http":
        proc, port = start_http_server()
        upstream = {"kind": "mcp", "url": f"http://127.0.0.1:{port}/mcp"}
    else:
        upstream = {"kind": "mcp-stdio", "command": [sys.executable, str(SERVER), "stdio"]}
    register_tool(writ, {"name": "streams", "audience": "urn:mcp:streams", "scopes": TOOLS,
                         "attributes": {"protocol": "mcp"}, "upstream": upstream})
    wait_ready(writ)
    wait_for_tool(writ, "streams")
    task, token = task_and_tool_token(writ, [{"tool": "streams", "scopes": TOOLS}], "streams", " ".join(TOOLS))
    yield writ.gw("/streams"), token, task
    if proc:
        proc.terminate()
        proc.wait(10)


async def with_session(url, token, body, **callbacks):
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write, **callbacks) as session:
                await session.initialize()
                return await body(session)


def test_progress_arrives_when_it_is_sent(streams_tool):
    url, token, _task = streams_tool

    async def story(session):
        arrivals = []
        start = time.monotonic()

        async def progress(value, total, message):
            arrivals.append((value, time.monotonic() - start))

        result = await session.call_tool("countdown", {}, progress_callback=progress)
        return text_of(result), arrivals

    text, arrivals = asyncio.run(with_session(url, token, story))
    assert text == "liftoff"
    assert [v for v, _ in arrivals] == [1, 2, 3]
    # Sent at 1 s, 2 s and 3 s: each arrives then, not all at the end.
    for expected, (_, at) in zip((1.0, 2.0, 3.0), arrivals):
        assert expected - 0.1 < at < expected + 0.7, arrivals


def test_sampling_elicitation_and_roots_round_trip(streams_tool):
    url, token, _task = streams_tool
    asked = {}

    async def sampling(context, params):
        asked["sampling"] = params.messages[0].content.text
        return types.CreateMessageResult(role="assistant", model="stub",
                                         content=types.TextContent(type="text", text="forty-two"))

    async def elicitation(context, params):
        asked["elicitation"] = params.message
        return types.ElicitResult(action="accept", content={"colour": "teal"})

    async def list_roots(context):
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    async def story(session):
        model = await session.call_tool("ask_model", {"question": "the answer?"})
        person = await session.call_tool("ask_person", {})
        roots = await session.call_tool("roots", {})
        return text_of(model), text_of(person), text_of(roots)

    model, person, roots = asyncio.run(with_session(
        url, token, story, sampling_callback=sampling, elicitation_callback=elicitation,
        list_roots_callback=list_roots))
    assert model == "the model said: forty-two"
    assert person == "the person chose teal"
    assert roots == "file:///work/project"
    assert asked == {"sampling": "the answer?", "elicitation": "Which colour?"}


def test_a_notification_unrelated_to_any_request_comes_on_the_get_stream(streams_tool):
    url, token, _task = streams_tool

    async def run():
        changed = asyncio.Event()

        async def on_message(message):
            if "ToolListChanged" in type(message).__name__ or "tools/list_changed" in repr(message):
                changed.set()

        async def body(session):
            assert text_of(await session.call_tool("announce", {})) == "announced"
            await asyncio.wait_for(changed.wait(), 10)
            return True

        return await with_session(url, token, body, message_handler=on_message)

    assert asyncio.run(run())


def test_a_streamed_batch_ends_with_its_refusals_in_order(streams_tool):
    """A batch's allowed call streams its progress; the calls the gateway
    refused are answered at the end of the same stream, in batch order."""
    url, token, _task = streams_tool
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
         "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    with httpx2.Client(timeout=30) as http:
        r = http.post(url, json=init, headers=h)
        assert r.status_code == 200, r.text
        h["Mcp-Session-Id"] = r.headers["mcp-session-id"]
        http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
        batch = [
            {"jsonrpc": "2.0", "id": "refused-1", "method": "tools/call", "params": {"name": "wipe", "arguments": {}}},
            {"jsonrpc": "2.0", "id": "allowed", "method": "tools/call",
             "params": {"name": "countdown", "arguments": {}, "_meta": {"progressToken": "t1"}}},
            {"jsonrpc": "2.0", "id": "refused-2", "method": "tools/call", "params": {"name": "drop", "arguments": {}}},
        ]
        start = time.monotonic()
        messages = []
        with http.stream("POST", url, json=batch, headers=h) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data:") and line[5:].strip():
                    messages.append((json.loads(line[5:]), time.monotonic() - start))
    kinds = [m.get("method") or m.get("id") for m, _ in messages]
    assert kinds == ["notifications/progress"] * 3 + ["allowed", "refused-1", "refused-2"], kinds
    assert messages[0][1] < 1.8, "the first progress came before the call ended"
    for m, _ in messages[-2:]:
        assert m["error"]["code"] == -32001


def test_a_client_answer_cannot_carry_a_tool_call(streams_tool):
    """A message shaped as an answer to a server request but naming a
    method is decided as that method: a tool the token lacks stays refused."""
    url, token, _task = streams_tool
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
         "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    r = requests.post(url, json=init, headers=h)
    h["Mcp-Session-Id"] = r.headers["mcp-session-id"]
    r = requests.post(url, json={"jsonrpc": "2.0", "id": 7, "result": {}, "method": "tools/call",
                                 "params": {"name": "wipe", "arguments": {}}}, headers=h)
    assert r.status_code == 200, r.text
    assert '"code":-32001' in r.text.replace(" ", ""), r.text


def test_an_open_stream_ends_when_its_task_ends(writ, streams_tool):
    """What the gateway refuses stays refused: the GET stream a token
    opened does not outlive the task."""
    url, token, task = streams_tool
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
         "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    with httpx2.Client(timeout=30) as http:
        r = http.post(url, json=init, headers=h)
        h["Mcp-Session-Id"] = r.headers["mcp-session-id"]
        http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
        with http.stream("GET", url, headers=h) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            def finish():
                time.sleep(0.5)
                complete(writ, task)

            threading.Thread(target=finish, daemon=True).start()
            start = time.monotonic()
            for _ in r.iter_lines():
                pass
            ended = time.monotonic() - start
        assert ended < 8, ended


def test_a_broken_stream_resumes_with_last_event_id(writ):
    """The server closes a call's stream mid-way; the client comes back on
    the GET stream with Last-Event-ID and gets the rest through the gateway."""
    proc, port = start_http_server()
    try:
        register_tool(writ, {"name": "resumable", "audience": "urn:mcp:resumable", "scopes": TOOLS,
                             "attributes": {"protocol": "mcp"},
                             "upstream": {"kind": "mcp", "url": f"http://127.0.0.1:{port}/mcp"}})
        wait_ready(writ)
        wait_for_tool(writ, "resumable")
        _, token = task_and_tool_token(writ, [{"tool": "resumable", "scopes": TOOLS}], "resumable",
                                       "interrupted")
        url = writ.gw("/resumable")

        async def story(session):
            seen = []

            async def progress(value, total, message):
                seen.append(message)

            result = await session.call_tool("interrupted", {}, progress_callback=progress)
            return text_of(result), seen

        text, seen = asyncio.run(with_session(url, token, story))
        assert text == "resumed"
        assert seen == ["before the break", "after the break"]

        # Raw: an event id from the server is kept, and Last-Event-ID on a
        # GET replays what came after it.
        h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
             "Content-Type": "application/json"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
        with httpx2.Client(timeout=30) as http:
            r = http.post(url, json=init, headers=h)
            h["Mcp-Session-Id"] = r.headers["mcp-session-id"]
            h["Mcp-Protocol-Version"] = "2025-11-25"
            http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
            ids, got = [], []
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "interrupted", "arguments": {}, "_meta": {"progressToken": 5}}}
            with http.stream("POST", url, json=call, headers=h) as r:
                for line in r.iter_lines():
                    if line.startswith("id:"):
                        ids.append(line[3:].strip())
                    if line.startswith("data:") and line[5:].strip():
                        got.append(json.loads(line[5:]))
            # The server primes the stream with an event id, then closes it.
            assert ids, "event ids pass through"
            time.sleep(1)
            rest = []
            with http.stream("GET", url, headers={**h, "Last-Event-ID": ids[-1]}) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data:") and line[5:].strip():
                        rest.append(json.loads(line[5:]))
                        if rest[-1].get("id") == 2:
                            break
            messages = got + rest
            progress = [m["params"]["message"] for m in messages if m.get("method") == "notifications/progress"]
            assert progress[-1] == "after the break", messages
            assert "resumed" in json.dumps(messages[-1]["result"])
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_dns_rebinding_protected_upstream_accepts_the_gateways_requests(writ):
    proc, port = start_http_server("--strict")
    try:
        up = f"http://127.0.0.1:{port}/mcp"
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
        accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        # The protection is on: another Host is refused by the server itself.
        r = requests.post(up, json=init, headers={**accept, "Host": "rebound.example"})
        assert r.status_code in (400, 403, 421), r.status_code
        own_origin = f"http://127.0.0.1:{port}"
        register_tool(writ, {"name": "guarded", "audience": "urn:mcp:guarded", "scopes": TOOLS,
                             "attributes": {"protocol": "mcp"},
                             "upstream": {"kind": "mcp", "url": up,
                                          "origins": [own_origin, "https://app.example"]}})
        wait_ready(writ)
        wait_for_tool(writ, "guarded")
        _, token = task_and_tool_token(writ, [{"tool": "guarded", "scopes": TOOLS}], "guarded", "countdown")

        async def story(session):
            return text_of(await session.call_tool("countdown", {}))

        assert asyncio.run(with_session(writ.gw("/guarded"), token, story)) == "liftoff"

        # The Origin passes on as sent, so the server's own check still
        # holds: an origin the gateway lists but the server does not is
        # refused by the server.
        via = {**accept, "Authorization": f"Bearer {token}"}
        r = requests.post(writ.gw("/guarded"), json=init, headers={**via, "Origin": own_origin})
        assert r.status_code == 200, r.text
        r = requests.post(writ.gw("/guarded"), json=init, headers={**via, "Origin": "https://app.example"})
        assert r.status_code == 403, r.text
    finally:
        proc.terminate()
        proc.wait(10)
