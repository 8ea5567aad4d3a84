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
TOOLS = ["countdown", "ask_model", "ask_person", "roots", "announce", "interrupted", "flood"]


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


RAW = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}


def messages_of(r):
    """The JSON-RPC messages of an answer, JSON or an event stream."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in r.text.splitlines()
                if line.startswith("data:") and line[5:].strip()]
    body = r.json()
    return body if isinstance(body, list) else [body]


def raw_session(http, url, token):
    h = {**RAW, "Authorization": f"Bearer {token}"}
    r = http.post(url, json=INIT, headers=h)
    assert r.status_code == 200, r.text
    h["Mcp-Session-Id"] = r.headers["mcp-session-id"]
    http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
    return h


def register_streams(writ, name, kind):
    if kind == "http":
        proc, port = start_http_server()
        upstream = {"kind": "mcp", "url": f"http://127.0.0.1:{port}/mcp"}
    else:
        proc = None
        upstream = {"kind": "mcp-stdio", "command": [sys.executable, str(SERVER), "stdio"]}
    register_tool(writ, {"name": name, "audience": f"urn:mcp:{name}", "scopes": TOOLS,
                         "attributes": {"protocol": "mcp"}, "upstream": upstream})
    wait_ready(writ)
    wait_for_tool(writ, name)
    return proc


def test_two_requests_with_the_same_id_on_one_stdio_session_each_get_their_own_answer(writ):
    """A slow call and a tools/list with the same JSON-RPC id, on two POSTs
    of one session: neither gets the other's answer (the gateway gives each
    request an id of its own upstream)."""
    register_streams(writ, "sameid", "stdio")
    _, token = task_and_tool_token(writ, [{"tool": "sameid", "scopes": TOOLS}], "sameid", "countdown")
    url = writ.gw("/sameid")
    with httpx2.Client(timeout=20) as http:
        h = raw_session(http, url, token)
        got = {}

        def call():
            r = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                     "params": {"name": "countdown", "arguments": {}}}, headers=h)
            got["call"] = (r.status_code, messages_of(r))

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
        r = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=h)
        listed = messages_of(r)
        caller.join(20)
    assert [m["id"] for m in listed] == [1], listed
    assert [t["name"] for t in listed[0]["result"]["tools"]] == ["countdown"], "filtered to the token's scope"
    status, called = got["call"]
    assert status == 200, called
    assert [m["id"] for m in called if "method" not in m] == [1], called
    assert "liftoff" in json.dumps(called[-1]["result"]), called


@pytest.mark.parametrize("kind", ["http", "stdio"])
def test_a_tools_list_cannot_dodge_the_filter_with_an_id_the_server_rewrites(writ, kind):
    """`1.0`, `1e0` or 2^53+1 may come back from a server as another id: such
    ids are refused as invalid requests, and no tool outside the token's
    scopes is ever listed."""
    proc = register_streams(writ, "dodge", kind)
    try:
        _, token = task_and_tool_token(writ, [{"tool": "dodge", "scopes": TOOLS}], "dodge", "countdown")
        url = writ.gw("/dodge")
        with httpx2.Client(timeout=20) as http:
            h = raw_session(http, url, token)
            for raw in ["1.0", "1e0", "9007199254740993", "-9007199254740993", "null"]:
                body = '{"jsonrpc":"2.0","id":%s,"method":"tools/list"}' % raw
                r = http.post(url, content=body.encode(), headers=h)
                assert r.status_code in (200, 400), r.text
                for m in messages_of(r):
                    assert m.get("error", {}).get("code") == -32600, (raw, m)
            batch = '[{"jsonrpc":"2.0","id":1e0,"method":"tools/list"},{"jsonrpc":"2.0","id":"ok","method":"tools/list"}]'
            r = http.post(url, content=batch.encode(), headers=h)
            answers = messages_of(r)
            assert sorted(json.dumps(m.get("id")) for m in answers) == ['"ok"', "null"], answers
            for m in answers:
                if "result" in m:
                    assert [t["name"] for t in m["result"]["tools"]] == ["countdown"], m
                else:
                    assert m["error"]["code"] == -32600, m
    finally:
        if proc:
            proc.terminate()
            proc.wait(10)


@pytest.mark.parametrize("kind", ["http", "stdio"])
def test_an_open_stream_ends_when_its_agent_is_quarantined(writ, kind):
    """What the gateway refuses stays refused: quarantining the agent ends
    the GET stream its token opened."""
    proc = register_streams(writ, "quarantined", kind)
    try:
        _, token = task_and_tool_token(writ, [{"tool": "quarantined", "scopes": TOOLS}], "quarantined",
                                       "countdown")
        url = writ.gw("/quarantined")
        with httpx2.Client(timeout=30) as http:
            h = raw_session(http, url, token)
            with http.stream("GET", url, headers=h) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")

                def quarantine():
                    time.sleep(0.5)
                    requests.post(writ.url("/v1/agents/demo-agent/quarantine"),
                                  headers=writ.admin).raise_for_status()

                threading.Thread(target=quarantine, daemon=True).start()
                start = time.monotonic()
                for _ in r.iter_lines():
                    pass
                ended = time.monotonic() - start
            assert ended < 8, ended
    finally:
        if proc:
            proc.terminate()
            proc.wait(10)


def test_a_get_with_last_event_id_needs_its_own_session(writ):
    """Resumption replays a session's events: without a session the task
    owns, a GET with Last-Event-ID is refused before the server sees it."""
    proc = register_streams(writ, "resume", "http")
    try:
        _, token = task_and_tool_token(writ, [{"tool": "resume", "scopes": TOOLS}], "resume", "countdown")
        h = {**RAW, "Authorization": f"Bearer {token}", "Last-Event-ID": "1"}
        r = requests.get(writ.gw("/resume"), headers=h, timeout=10)
        assert r.status_code == 400, r.text
        assert "Mcp-Session-Id" in r.text
        r = requests.get(writ.gw("/resume"), headers={**h, "Mcp-Session-Id": "not-ours"}, timeout=10)
        assert r.status_code == 404, r.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_client_that_stops_reading_a_stream_does_not_stall_its_stdio_session(writ):
    """A POST whose client stops reading while the server floods it: the
    session's other requests are answered at once, and that POST's stream
    ends with an error for its call instead of holding the session up."""
    register_streams(writ, "flooded", "stdio")
    _, token = task_and_tool_token(writ, [{"tool": "flooded", "scopes": TOOLS}], "flooded", "flood")
    url = writ.gw("/flooded")
    with httpx2.Client(timeout=30) as http:
        h = raw_session(http, url, token)
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "flood", "arguments": {"count": 400, "size": 100_000}, "_meta": {"progressToken": "f"}}}
        with http.stream("POST", url, json=call, headers=h) as flooded:
            assert flooded.status_code == 200
            assert flooded.headers["content-type"].startswith("text/event-stream")
            time.sleep(4)
            start = time.monotonic()
            r = http.post(url, json={"jsonrpc": "2.0", "id": "p", "method": "ping"}, headers=h)
            elapsed = time.monotonic() - start
            assert r.status_code == 200, r.text
            assert [m["id"] for m in messages_of(r)] == ["p"]
            assert elapsed < 5, elapsed
            last = None
            for line in flooded.iter_lines():
                if line.startswith("data:") and line[5:].strip():
                    last = json.loads(line[5:])
        assert last["id"] == 1 and last["error"]["code"] == -32603, str(last)[:300]
        assert "did not read" in last["error"]["message"]
