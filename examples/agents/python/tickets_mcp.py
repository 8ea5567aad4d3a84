"""The example's MCP server (the official MCP Python SDK's own server), on
stdio: writ's gateway runs it, one process per MCP session."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("tickets")

TICKETS = {"T-7": "Login page times out for EU users", "T-8": "Typo on the pricing page"}


@server.tool()
def lookup(ticket: str) -> str:
    """A ticket's title."""
    return f"{ticket}: {TICKETS.get(ticket, 'no such ticket')}"


if __name__ == "__main__":
    server.run(transport="stdio")
