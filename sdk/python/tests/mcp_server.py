"""An MCP server built with the official MCP Python SDK, for the gateway
tests: `python mcp_server.py PORT` (streamable HTTP) or `python mcp_server.py stdio`."""

import sys

import asyncio

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("tickets")


@server.tool()
def lookup(ticket: str) -> str:
    """Look a ticket up."""
    return f"ticket {ticket}: open"


@server.tool()
def close(ticket: str) -> str:
    """Close a ticket."""
    return f"ticket {ticket}: closed"


@server.tool()
async def triage(ticket: str, ctx: Context) -> str:
    """Triage a ticket, reporting progress as it goes."""
    for step in range(3):
        await ctx.report_progress(step + 1, 3, f"step {step + 1}")
        await asyncio.sleep(0.05)
    return f"ticket {ticket}: triaged"


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run(transport="stdio")
    else:
        server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
