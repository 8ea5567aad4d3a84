"""An MCP server written with the official MCP Python SDK (`mcp` on PyPI),
serving what the MCP conformance suite's server scenarios ask for: tools
that report progress, log, and ask the client for sampling and
elicitation; resources, a template, prompts and completion.

`python python_server.py PORT` serves streamable HTTP on 127.0.0.1:PORT/mcp.
"""

import asyncio
import base64
import json
import sys

from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventMessage, EventStore
from pydantic import BaseModel, Field

# A 1x1 red PNG and a minimal WAV, as the scenarios suggest.
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGA"
       "hKmMIQAAAABJRU5ErkJggg==")
WAV = base64.b64encode(b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
                       b"D\xac\x00\x00\x88X\x01\x00\x02\x00\x10\x00data\x00\x00\x00\x00").decode()

server = MCPServer("writ-conformance-python")


class Events(EventStore):
    """Every event kept in memory, so a client may resume a stream with
    Last-Event-ID (the suite's SSE polling scenario closes one mid-call)."""

    def __init__(self):
        self.events = []  # (event id, stream id, message)

    async def store_event(self, stream_id, message):
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        ids = [e[0] for e in self.events]
        if last_event_id not in ids:
            return None
        at = ids.index(last_event_id)
        stream = self.events[at][1]
        for event_id, stream_id, message in self.events[at + 1:]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


def text(t):
    return types.TextContent(type="text", text=t)


@server.tool(description="Returns simple text")
def test_simple_text() -> list:
    return [text("This is a simple text response for testing.")]


@server.tool(description="Returns an image")
def test_image_content() -> list:
    return [types.ImageContent(type="image", data=PNG, mime_type="image/png")]


@server.tool(description="Returns audio")
def test_audio_content() -> list:
    return [types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")]


@server.tool(description="Returns an embedded resource")
def test_embedded_resource() -> list:
    return [types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain",
        text="This is an embedded resource content."))]


@server.tool(description="Returns several content types")
def test_multiple_content_types() -> list:
    return [
        text("Multiple content types test:"),
        types.ImageContent(type="image", data=PNG, mime_type="image/png"),
        types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}))),
    ]


@server.tool(description="Logs while it runs")
async def test_tool_with_logging(ctx: Context) -> str:
    await ctx.info("Tool execution started")
    await asyncio.sleep(0.05)
    await ctx.info("Tool processing data")
    await asyncio.sleep(0.05)
    await ctx.info("Tool execution completed")
    return "Logging test completed"


@server.tool(description="Always fails")
def test_error_handling() -> str:
    raise RuntimeError("This tool intentionally returns an error for testing")


@server.tool(description="Reports progress")
async def test_tool_with_progress(ctx: Context) -> str:
    for p in (0, 50, 100):
        await ctx.report_progress(p, 100)
        if p < 100:
            await asyncio.sleep(0.05)
    return "Progress test completed"


@server.tool(description="Reports progress once a second, for timing tests")
async def slow_progress(ctx: Context, steps: int = 3) -> str:
    for i in range(1, steps + 1):
        await asyncio.sleep(1.0)
        await ctx.report_progress(i, steps, f"step {i}")
    return f"done after {steps} steps"


@server.tool(description="Asks the client to sample")
async def test_sampling(prompt: str, ctx: Context) -> str:
    r = await ctx.request_context.session.create_message(
        messages=[types.SamplingMessage(role="user", content=text(prompt))],
        max_tokens=100, related_request_id=ctx.request_id)
    content = r.content
    got = content.text if isinstance(content, types.TextContent) else str(content)
    return f"LLM response: {got}"


class UserInfo(BaseModel):
    username: str = Field(description="User's response")
    email: str = Field(description="User's email address")


@server.tool(description="Asks the user")
async def test_elicitation(message: str, ctx: Context) -> str:
    r = await ctx.elicit(message, UserInfo)
    data = r.data.model_dump() if getattr(r, "data", None) is not None else None
    return f"User response: action={r.action}, content={json.dumps(data)}"


class Defaults(BaseModel):
    name: str = "John Doe"
    age: int = 30
    score: float = 95.5
    status: str = Field(default="active", json_schema_extra={"enum": ["active", "inactive", "pending"]})
    verified: bool = True


@server.tool(description="Elicitation with defaults")
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    r = await ctx.elicit("Please review your information", Defaults)
    data = r.data.model_dump() if getattr(r, "data", None) is not None else None
    return f"Elicitation completed: action={r.action}, content={json.dumps(data)}"


@server.tool(description="Closes its SSE stream mid-call; the client resumes it")
async def test_reconnection(ctx: Context) -> str:
    await asyncio.sleep(0.05)
    await ctx.close_sse_stream()
    await asyncio.sleep(0.3)
    return "Reconnection test completed"


CANCELLED = []


@server.tool(description="Waits until cancelled (or 30 s)")
async def wait_forever(ctx: Context) -> str:
    try:
        await asyncio.sleep(30)
    except BaseException:
        CANCELLED.append(ctx.request_id)
        raise
    return "not cancelled"


@server.tool(description="How many calls were cancelled so far")
def cancellations() -> str:
    return str(len(CANCELLED))


@server.resource("test://static-text", name="static-text", description="A static text resource",
                 mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@server.resource("test://static-binary", name="static-binary", description="A static binary resource",
                 mime_type="image/png")
def static_binary() -> bytes:
    return base64.b64decode(PNG)


@server.resource("test://watched-resource", name="watched-resource", description="A resource to watch",
                 mime_type="text/plain")
def watched() -> str:
    return "Watched resource content"


# A file of the server's host: the example policies keep it from agents
# (no-host-files), so through the gateway it is neither listed nor read.
@server.resource("file:///writ-interop/host-file", name="host-file", description="A file of the host",
                 mime_type="text/plain")
def host_file() -> str:
    return "host secrets"


@server.resource("test://template/{id}/data", name="template", description="A resource template",
                 mime_type="application/json")
def template(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@server.prompt(description="A simple prompt")
def test_simple_prompt() -> str:
    return "This is a simple prompt for testing."


@server.prompt(description="A prompt with arguments")
def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@server.prompt(description="A prompt with an embedded resource")
def test_prompt_with_embedded_resource(resourceUri: str) -> list:
    return [
        types.PromptMessage(role="user", content=types.EmbeddedResource(
            type="resource", resource=types.TextResourceContents(
                uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."))),
        types.PromptMessage(role="user", content=text("Please process the embedded resource above.")),
    ]


@server.prompt(description="A prompt with an image")
def test_prompt_with_image() -> list:
    return [
        types.PromptMessage(role="user", content=types.ImageContent(type="image", data=PNG, mime_type="image/png")),
        types.PromptMessage(role="user", content=text("Please analyze the image above.")),
    ]


@server.completion()
async def complete(ref, argument, context):
    values = [v for v in ("paris", "park", "party") if v.startswith(argument.value or "")]
    return types.Completion(values=values, total=len(values), has_more=False)


# Log levels and subscriptions: the SDK's high-level server leaves them to
# the low-level one, so they are registered there.
SUBSCRIBED = set()


async def set_level(ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


async def subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    SUBSCRIBED.add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    SUBSCRIBED.discard(str(params.uri))
    return types.EmptyResult()


low = server._lowlevel_server
low.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)

if __name__ == "__main__":
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]),
               event_store=Events(), retry_interval=100)
