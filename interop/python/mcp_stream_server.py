"""An MCP server built with the official Python SDK whose tools stream:
progress, sampling, elicitation, roots, a notification on the GET stream,
and a stream that closes for the client to resume with Last-Event-ID.

    python mcp_stream_server.py stdio
    python mcp_stream_server.py http PORT            # resumable (event store)
    python mcp_stream_server.py http PORT --strict   # DNS-rebinding protection: Host 127.0.0.1:PORT only
"""

import asyncio
import itertools
import sys

from pydantic import BaseModel

from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings

server = MCPServer("streams")
_background = set()


@server.tool()
async def countdown(ctx: Context) -> str:
    """Reports progress at 1 s, 2 s and 3 s, then answers."""
    for step in (1, 2, 3):
        await asyncio.sleep(1)
        await ctx.report_progress(step, 3, f"step {step}")
    return "liftoff"


@server.tool()
async def ask_model(question: str, ctx: Context) -> str:
    """Asks the client's model (sampling) and returns its answer."""
    result = await ctx.session.create_message(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=question))],
        max_tokens=20, related_request_id=ctx.request_id)
    return f"the model said: {result.content.text}"


class Choice(BaseModel):
    colour: str


@server.tool()
async def ask_person(ctx: Context) -> str:
    """Asks the client's user (elicitation) for a colour."""
    result = await ctx.elicit("Which colour?", Choice)
    if result.action == "accept":
        return f"the person chose {result.data.colour}"
    return f"the person answered {result.action}"


@server.tool()
async def roots(ctx: Context) -> str:
    """Lists the client's roots."""
    listed = await ctx.session.list_roots()
    return " ".join(str(r.uri) for r in listed.roots)


@server.tool()
async def announce(ctx: Context) -> str:
    """Answers, then, unrelated to any request, says the tool list changed."""
    session = ctx.session

    async def later():
        await asyncio.sleep(0.5)
        await session.send_tool_list_changed()

    task = asyncio.get_running_loop().create_task(later())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return "announced"


@server.tool()
async def interrupted(ctx: Context) -> str:
    """Reports progress, closes its stream (the client resumes with
    Last-Event-ID), reports again and answers."""
    await ctx.report_progress(1, 2, "before the break")
    await ctx.close_sse_stream()
    await asyncio.sleep(0.5)
    await ctx.report_progress(2, 2, "after the break")
    return "resumed"


@server.tool()
async def flood(count: int, size: int, ctx: Context) -> str:
    """Reports progress `count` times, each with a message of `size` bytes,
    as fast as it can, then answers."""
    for step in range(count):
        await ctx.report_progress(step, count, "x" * size)
    return "flooded"


class Events(EventStore):
    """Every event, in memory, for replay after Last-Event-ID."""

    def __init__(self):
        self.events = []
        self.ids = itertools.count(1)

    async def store_event(self, stream_id, message):
        event_id = str(next(self.ids))
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        found = [i for i, (eid, _, _) in enumerate(self.events) if eid == last_event_id]
        if not found:
            return None
        stream = self.events[found[0]][1]
        for eid, sid, message in self.events[found[0] + 1:]:
            if sid == stream and message is not None:
                await send_callback(EventMessage(message, eid))
        return stream


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run()
    else:
        port = int(sys.argv[2])
        security = None
        if "--strict" in sys.argv:
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=[f"127.0.0.1:{port}"],
                allowed_origins=[f"http://127.0.0.1:{port}"])
        server.run(transport="streamable-http", host="127.0.0.1", port=port,
                   event_store=Events(), retry_interval=100, transport_security=security)
