// MCP through writ's gateway with the MCP TypeScript SDK's client and
// StreamableHTTPClientTransport: RFC 9728 discovery from the gateway's 401,
// a tool token bound to the agent's key, a proof per request. Servers:
// @modelcontextprotocol/server-everything on stdio (run by the gateway) and
// one built with the MCP TypeScript SDK on streamable HTTP, answering with
// JSON and with an event stream.
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
const servers = [];

/** The MCP TS SDK server: answering POSTs with JSON, or (sse) with an event stream. */
async function mcpServer(sse) {
  const p = spawn(process.execPath, [join(HERE, "mcp_http_server.mjs"), "0"],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...(sse ? { MCP_SSE: "1" } : {}) } });
  servers.push(p);
  return new Promise((ok) => createInterface({ input: p.stdout }).once("line", ok));
}

before(async () => {
  writ = await Writ.start();
  await writ.registerTool({
    name: "everything", audience: "urn:mcp:everything", scopes: ["echo", "get-sum", "get-env", "trigger-long-running-operation"],
    attributes: { protocol: "mcp" }, upstream: { kind: "mcp-stdio", command: [process.execPath, EVERYTHING, "stdio"] },
  });
  for (const [name, sse] of [["crm-mcp", false], ["crm-mcp-sse", true]]) {
    await writ.registerTool({
      name, audience: `urn:mcp:${name}`, scopes: ["lookup", "wipe"],
      attributes: { protocol: "mcp" }, upstream: { kind: "mcp", url: await mcpServer(sse) },
    });
  }
});
after(async () => {
  for (const p of servers) p.kill();
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

for (const tool of ["crm-mcp", "crm-mcp-sse"]) test(`an MCP TS SDK server on streamable HTTP (${tool}: ${tool.endsWith("sse") ? "event-stream" : "JSON"} answers), with a DPoP-bound tool token; dead after the task`, async () => {
  const client = await demo();
  let mcp;
  await client.withTask({ intent: "look up a customer", capabilities: { [tool]: ["lookup", "wipe"] } }, async (task) => {
    const t = await task.tokenFor(tool, { scopes: ["lookup"] });
    assert.equal(t.tokenType, "DPoP");
    mcp = new McpClient({ name: "writ-sdk-test", version: "1.0.0" });
    await mcp.connect(await mcpTransport(task, writ.gw(`/${tool}`), { scopes: ["lookup"] }));
    assert.deepEqual((await mcp.listTools()).tools.map((t) => t.name), ["lookup"]);
    assert.match(text(await mcp.callTool({ name: "lookup", arguments: { customer: "c-7" } })), /customer c-7: active/);
    await assert.rejects(writCall(() => mcp.callTool({ name: "wipe", arguments: { customer: "c-7" } })), Denied);
  });
  // The task completed: the next call is refused, as TaskEnded.
  await assert.rejects(mcp.callTool({ name: "lookup", arguments: { customer: "c-8" } }), (e) => e instanceof TaskEnded || /TaskEnded|completed/.test(String(e)));
  await mcp.close().catch(() => undefined);
});

// The gateway relays a call's event stream event by event, so progress
// notifications sent before the result reach the client.
test("progress notifications of a long call stream back through the gateway", async () => {
  const client = await demo();
  await client.withTask({ intent: "a long job", capabilities: { everything: ["trigger-long-running-operation"] } }, async (task) => {
    const mcp = new McpClient({ name: "writ-sdk-test", version: "1.0.0" });
    await mcp.connect(await mcpTransport(task, writ.gw("/everything")));
    const progress = [];
    const r = await mcp.callTool({ name: "trigger-long-running-operation", arguments: { duration: 1, steps: 3 } }, undefined,
      { onprogress: (p) => progress.push(p.progress), timeout: 20_000 });
    assert.match(text(r), /complete|Completed/i);
    assert.deepEqual(progress, [1, 2, 3], "each step's progress arrived before the result");
    await mcp.close();
  });
});
