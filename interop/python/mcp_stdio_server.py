"""A small MCP server on stdio, built with the official Python SDK, as an
MCP client config starts a local one: `python mcp_stdio_server.py`. It
needs a key in its environment (NOTES_API_KEY), as such servers do, and
says whether it got one (never the key)."""

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("notes")


@server.tool()
def lookup(note: str) -> str:
    """Look a note up."""
    return f"note {note}: found"


@server.tool()
def key_seen() -> str:
    """Whether the server was started with its key, and its length."""
    key = os.environ.get("NOTES_API_KEY")
    return f"key: set ({len(key)} chars)" if key else "key: unset"


if __name__ == "__main__":
    server.run(transport="stdio")
