"""A small MCP server on streamable HTTP, built with the official Python SDK,
for the gateway tests: `python mcp_http_server.py PORT`."""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("crm")


@server.tool()
def lookup(customer: str) -> str:
    """Look a customer up."""
    return f"customer {customer}: active"


@server.tool()
def wipe(customer: str) -> str:
    """Delete a customer for good."""
    return f"customer {customer}: wiped"


if __name__ == "__main__":
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
