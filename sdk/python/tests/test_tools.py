"""Tools through writ's gateway: plain HTTP with the httpx, httpx2 and
requests auths, and MCP with the official MCP Python SDK's client against
servers built with its own server package (streamable HTTP, and stdio
spawned by the gateway)."""

import asyncio
import sys

import httpx
import httpx2
import pytest
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from conftest import HERE, Recorder
from writ_sdk import AsyncClient, Client, Denied, JoinToken, Quarantined, raise_for_writ
from writ_sdk.mcp import McpAuth, connect


def client_for(writ, agent="demo-agent"):
    return Client(writ.addr, JoinToken(lambda: writ.join_token(agent)), agent=agent)


def crm(writ, recorder):
    writ.register_tool({"name": "crm", "audience": "https://crm.example", "scopes": ["read", "write"],
                        "upstream": {"kind": "http", "url": recorder + "/api"}})
    writ.wait_for_tool("crm")


def test_http_tool_with_httpx_httpx2_and_requests(writ, recorder):
    crm(writ, recorder)
    with client_for(writ) as c:
        with c.task(intent="look customers up", capabilities={"crm": ["read"]}) as task:
            auth = task.httpx_auth("crm", scopes=["read"])
            with httpx2.Client(auth=auth) as h:
                assert h.get(writ.gw("/crm/customers/42")).status_code == 200
            with httpx.Client(auth=auth) as h:
                assert h.get(writ.gw("/crm/customers/43?x=1")).status_code == 200
            r = requests.get(writ.gw("/crm/customers/44"), auth=task.requests_auth("crm", scopes=["read"]))
            assert r.status_code == 200, r.text
            assert [s["path"] for s in Recorder.seen] == ["/api/customers/42", "/api/customers/43?x=1",
                                                          "/api/customers/44"]
            for seen in Recorder.seen:
                assert "authorization" not in seen["headers"] and "dpop" not in seen["headers"]
            # A write with a read token: the gateway's refusal, as a type.
            r = requests.post(writ.gw("/crm/customers"), json={}, auth=task.requests_auth("crm"))
            with pytest.raises(Denied) as e:
                raise_for_writ(r)
            assert e.value.status == 403 and e.value.policy_version
            assert raise_for_writ(requests.get(writ.gw("/crm/c/1"), auth=task.requests_auth("crm"))).ok


def test_a_401_gets_a_fresh_token_and_the_call_goes_through(writ, recorder):
    crm(writ, recorder)
    with client_for(writ) as c:
        with c.task(intent="x", capabilities={"crm": ["read"]}) as task:
            first = task.token_for("crm")
            # The tool token is revoked (by the agent itself, RFC 7009), the task lives on.
            r = requests.post(writ.url("/oauth2/revoke"), data={"token": first.access_token}, headers=writ.admin)
            assert r.status_code == 200
            r = requests.get(writ.gw("/crm/customers/1"), auth=task.requests_auth("crm"))
            assert r.status_code == 200, r.text
            assert task.token_for("crm").access_token != first.access_token

            async def via_httpx2():
                second = await task.aio.token_for("crm")
                requests.post(writ.url("/oauth2/revoke"), data={"token": second.access_token}, headers=writ.admin)
                async with httpx2.AsyncClient(auth=task.httpx_auth("crm")) as h:
                    return (await h.get(writ.gw("/crm/customers/2"))).status_code

            assert asyncio.run_coroutine_threadsafe(via_httpx2(), task.aio.loop).result() == 200


def mcp_tool(writ, upstream, name="tickets-mcp"):
    writ.register_tool({"name": name, "audience": f"urn:mcp:{name}", "scopes": ["lookup", "close"],
                        "attributes": {"protocol": "mcp"}, "upstream": upstream})
    writ.wait_for_tool(name)


def text_of(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


def test_mcp_through_the_gateway_with_the_sdks_own_client_and_discovery(writ, mcp_http_server):
    mcp_tool(writ, {"kind": "mcp", "url": mcp_http_server})
    url = writ.gw("/tickets-mcp")

    async def main():
        async with AsyncClient(writ.addr, JoinToken(writ.join_token()), agent="demo-agent") as c:
            async with c.task(intent="triage", capabilities={"tickets-mcp": ["lookup", "close"]}) as task:
                # The MCP SDK's own client, with writ's auth: no tool name given,
                # found from the RFC 9728 metadata: at its well-known URL, or
                # named in the gateway's 401.
                for auth in (task.mcp_auth(), McpAuth(task.aio if hasattr(task, "aio") else task,
                                                      well_known_first=False)):
                    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
                        async with streamable_http_client(url, http_client=http) as (read, write, *_):
                            async with ClientSession(read, write) as session:
                                await session.initialize()
                                assert auth.tool == "tickets-mcp"
                                result = await session.call_tool("lookup", {"ticket": "T-1"})
                                assert "ticket T-1: open" in text_of(result)
                # The helper: refusals come back as types.
                async with connect(task, url, tool="tickets-mcp", scopes=["lookup"]) as session:
                    names = sorted(t.name for t in (await session.list_tools()).tools)
                    assert names == ["lookup"], "tools/list shows what the token may call"
                    with pytest.raises(Denied) as e:
                        await session.call_tool("lookup", {"ticket": "-----BEGIN PRIVATE KEY----- x"})
                    assert "no-private-keys-in-arguments" in e.value.determining_policies
                    assert e.value.policy_version
                    ok = await session.call_tool("lookup", {"ticket": "T-2"})
                    assert "T-2" in text_of(ok)

    asyncio.run(main())


def test_mcp_stdio_server_and_quarantine_mid_session(writ):
    mcp_tool(writ, {"kind": "mcp-stdio", "command": [sys.executable, str(HERE / "mcp_server.py"), "stdio"]})
    url = writ.gw("/tickets-mcp")

    async def main():
        async with AsyncClient(writ.addr, JoinToken(writ.join_token()), agent="demo-agent") as c:
            async with c.task(intent="triage", capabilities={"tickets-mcp": ["lookup"]}) as task:
                async with connect(task, url) as session:
                    r = await session.call_tool("lookup", {"ticket": "T-3"})
                    assert "T-3" in text_of(r)
                    await asyncio.to_thread(writ.post, "/v1/agents/demo-agent/quarantine", {})
                    with pytest.raises(Quarantined):
                        await asyncio.wait_for(session.call_tool("lookup", {"ticket": "T-4"}), 20)
                with pytest.raises(Quarantined):
                    await task.token_for("tickets-mcp")

    asyncio.run(main())


CALL_APPROVAL_POLICY = """
@id("tasks") permit (principal, action == Action::"StartTask", resource);
@id("exchange") permit (principal, action == Action::"ExchangeToken", resource);
@id("lookups")
permit (principal, action == Action::"CallTool", resource)
when { context.request has mcp_tool && context.request.mcp_tool == "lookup" };
@id("closing-needs-a-person")
@approval("required")
permit (principal, action == Action::"CallTool", resource)
when { context.request has mcp_tool && context.request.mcp_tool == "close" };
"""


def test_an_mcp_call_held_for_approval_then_approved(make_writ, tmp_path, mcp_http_server):
    (tmp_path / "calls.cedar").write_text(CALL_APPROVAL_POLICY)
    writ = make_writ("--policy-dir", str(tmp_path))
    mcp_tool(writ, {"kind": "mcp", "url": mcp_http_server})
    from writ_sdk import PendingApproval

    async def main():
        async with AsyncClient(writ.addr, JoinToken(writ.join_token()), agent="demo-agent") as c:
            async with c.task(intent="close T-5", capabilities={"tickets-mcp": ["lookup", "close"]}) as task:
                async with connect(task, writ.gw("/tickets-mcp")) as session:
                    with pytest.raises(PendingApproval) as held:
                        await session.call_tool("close", {"ticket": "T-5"})
                    approval = held.value.approval_id
                    assert approval
                    await asyncio.to_thread(writ.post, f"/v1/approvals/{approval}/approve", {"reason": "ok"})
                    # The gateway learns of the decision from the broker (at once, or
                    # at its next bundle refresh): ask again until it lets the call through.
                    for _ in range(50):
                        try:
                            done = await session.call_tool("close", {"ticket": "T-5"})
                            break
                        except PendingApproval:
                            await asyncio.sleep(0.1)
                    assert "ticket T-5: closed" in text_of(done)
                    # Once only: the next close is a new approval.
                    with pytest.raises(PendingApproval):
                        await session.call_tool("close", {"ticket": "T-5"})

    asyncio.run(main())


def test_mcp_progress_notifications_of_a_long_call(writ, mcp_http_server):
    """Progress of a call streamed back on its event stream, through the
    gateway, which relays the call's event stream event by event."""
    writ.register_tool({"name": "tickets-mcp", "audience": "urn:mcp:tickets-mcp", "scopes": ["triage"],
                        "attributes": {"protocol": "mcp"}, "upstream": {"kind": "mcp", "url": mcp_http_server}})
    writ.wait_for_tool("tickets-mcp")

    async def main():
        progress = []

        async def on_progress(p, total, message):
            progress.append((p, total, message))

        async with AsyncClient(writ.addr, JoinToken(writ.join_token()), agent="demo-agent") as c:
            async with c.task(intent="triage", capabilities={"tickets-mcp": ["triage"]}) as task:
                async with connect(task, writ.gw("/tickets-mcp")) as session:
                    r = await session.call_tool("triage", {"ticket": "T-9"}, progress_callback=on_progress)
                    assert "T-9: triaged" in text_of(r)
        return progress

    progress = asyncio.run(main())
    assert [p for p, _, _ in progress] == [1, 2, 3], progress
