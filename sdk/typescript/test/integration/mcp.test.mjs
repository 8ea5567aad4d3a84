// MCP through writ's gateway with the MCP TypeScript SDK's client and
// StreamableHTTPClientTransport: RFC 9728 discovery from the gateway's 401,
// a tool token bound to the agent's key, a proof per request. Servers:
// @modelcontextprotocol/server-everything on stdio (run by the gateway) and
// one built with the MCP TypeScript SDK on streamable HTTP.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js";
import { Client, Denied, TaskEnded } from "../../dist/index.js";
import { discover, mcpTransport, writCall } from "../../dist/mcp.js";
import { EVERYTHING, HERE, Writ } from "./harness.mjs";

let writ;
let httpServer;
let httpUrl;

before(async () => {
  writ = await Writ.start();
  httpServer = spawn(process.execPath, [join(HERE, "mcp_http_server.mjs"), "0"], { stdio: ["ignore", "pipe", "inherit"] });
  httpUrl = await new Promise((ok) => createInterface({ input: httpServer.stdout }).once("line", ok));
  await writ.registerTool({
    name: "everything", audience: "urn:mcp:everything", scopes: ["echo", "get-sum", "get-env"],
    attributes: { protocol: "mcp" }, upstream: { kind: "mcp-stdio", command: [process.execPath, EVERYTHING, "stdio"] },
  });
  await writ.registerTool({
    name: "crm-mcp", audience: "urn:mcp:crm", scopes: ["lookup", "wipe"],
    attributes: { protocol: "mcp" }, upstream: { kind: "mcp", url: httpUrl },
  });
});
after(async () => {
  httpServer.kill();
  await writ.stop();
});

async function demo() {
  return new Client({ baseUrl: writ.addr, agent: "demo-agent", attestation: { joinToken: await writ.joinToken() } });
}

const text = (r) => r.content.map((c) => c.text ?? "").join(" ");

test("RFC 9728: the gateway's 401 names its metadata, which names writ", async () => {
  const m = await discover(writ.gw("/everything"));
  assert.deepEqual(m.authorizationServers, [writ.addr]);
  assert.equal(m.tool, "everything");
  assert.equal(m.resource, writ.gw("/everything"));
});

test("server-everything (stdio) through the gateway: listTools filtered, callTool, refusals as Denied", async () => {
  const client = await demo();
  await client.withTask({ intent: "echo things", capabilities: { everything: ["echo", "get-sum", "get-env"] } }, async (task) => {
    const mcp = new McpClient({ name: "writ-sdk-test", version: "1.0.0" });
    await mcp.connect(await mcpTransport(task, writ.gw("/everything"), { scopes: ["echo", "get-env"] }));
    const listed = await mcp.listTools();
    assert.deepEqual(listed.tools.map((t) => t.name).sort(), ["echo"]);
    const r = await mcp.callTool({ name: "echo", arguments: { message: "hello through writ" } });
    assert.match(text(r), /hello through writ/);
    // get-env is in the token, but policy forbids it; get-sum is not in the token.
    await assert.rejects(writCall(() => mcp.callTool({ name: "get-env", arguments: {} })),
      (e) => e instanceof Denied && e.determiningPolicies.includes("no-environment-dumps") && !!e.policyVersion);
    await assert.rejects(writCall(() => mcp.callTool({ name: "get-sum", arguments: { a: 1, b: 2 } })), Denied);
    await mcp.close();
  });
});

test("an MCP TS SDK server on streamable HTTP, with a DPoP-bound tool token; dead after the task", async () => {
  const client = await demo();
  let mcp;
  await client.withTask({ intent: "look up a customer", capabilities: { "crm-mcp": ["lookup", "wipe"] } }, async (task) => {
    const t = await task.tokenFor("crm-mcp", { scopes: ["lookup"] });
    assert.equal(t.tokenType, "DPoP");
    mcp = new McpClient({ name: "writ-sdk-test", version: "1.0.0" });
    await mcp.connect(await mcpTransport(task, writ.gw("/crm-mcp"), { scopes: ["lookup"] }));
    assert.deepEqual((await mcp.listTools()).tools.map((t) => t.name), ["lookup"]);
    assert.match(text(await mcp.callTool({ name: "lookup", arguments: { customer: "c-7" } })), /customer c-7: active/);
    await assert.rejects(writCall(() => mcp.callTool({ name: "wipe", arguments: { customer: "c-7" } })), Denied);
  });
  // The task completed: the next call is refused, as TaskEnded.
  await assert.rejects(mcp.callTool({ name: "lookup", arguments: { customer: "c-8" } }), (e) => e instanceof TaskEnded || /TaskEnded|completed/.test(String(e)));
  await mcp.close().catch(() => undefined);
});
