// A small MCP server on streamable HTTP, built with the MCP TypeScript SDK,
// for the gateway tests: `node mcp_http_server.mjs PORT` prints its URL.
import http from "node:http";
import { randomUUID } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

const sessions = new Map();

function server() {
  const s = new McpServer({ name: "crm", version: "1.0.0" });
  s.registerTool("lookup", { description: "Look a customer up.", inputSchema: { customer: z.string() } },
    async ({ customer }) => ({ content: [{ type: "text", text: `customer ${customer}: active` }] }));
  s.registerTool("wipe", { description: "Delete a customer for good.", inputSchema: { customer: z.string() } },
    async ({ customer }) => ({ content: [{ type: "text", text: `customer ${customer}: wiped` }] }));
  return s;
}

const httpServer = http.createServer(async (req, res) => {
  const sid = req.headers["mcp-session-id"];
  let transport = typeof sid === "string" ? sessions.get(sid) : undefined;
  if (!transport) {
    if (sid) {
      res.writeHead(404).end();
      return;
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: process.env.MCP_SSE ? false : true,
      onsessioninitialized: (id) => sessions.set(id, transport),
    });
    await server().connect(transport);
  }
  await transport.handleRequest(req, res);
});
httpServer.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  console.log(`http://127.0.0.1:${httpServer.address().port}/mcp`);
});
