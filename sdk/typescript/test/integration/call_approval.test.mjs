// A tools/call a person must approve: the gateway holds it (JSON-RPC
// -32001 with approval_id), the SDK throws PendingApproval; once approved,
// the same call passes, exactly once.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js";
import { Client, PendingApproval } from "../../dist/index.js";
import { mcpTransport, writCall } from "../../dist/mcp.js";
import { HERE, Writ } from "./harness.mjs";

const POLICIES = `
@id("tasks") permit (principal, action == Action::"StartTask", resource);
@id("exchange") permit (principal, action == Action::"ExchangeToken", resource);
@id("lookups") permit (principal, action == Action::"CallTool", resource)
when { context.request has mcp_tool && context.request.mcp_tool == "lookup" };
@id("wipes-need-a-person")
@approval("required")
permit (principal, action == Action::"CallTool", resource)
when { context.request has mcp_tool && context.request.mcp_tool == "wipe" };
`;

let writ;
let server;
before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "writ-policies-"));
  writeFileSync(join(dir, "calls.cedar"), POLICIES);
  writ = await Writ.start(["--policy-dir", dir]);
  server = spawn(process.execPath, [join(HERE, "mcp_http_server.mjs"), "0"], { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise((ok) => createInterface({ input: server.stdout }).once("line", ok));
  await writ.registerTool({
    name: "crm-mcp", audience: "urn:mcp:crm", scopes: ["lookup", "wipe"],
    attributes: { protocol: "mcp" }, upstream: { kind: "mcp", url },
  });
});
after(async () => {
  server.kill();
  await writ.stop();
});

test("an MCP call held for approval throws PendingApproval, then passes once approved", async () => {
  const client = new Client({ baseUrl: writ.addr, agent: "demo-agent", attestation: { joinToken: await writ.joinToken() } });
  await client.withTask({ intent: "close an account", capabilities: { "crm-mcp": ["lookup", "wipe"] } }, async (task) => {
    const mcp = new McpClient({ name: "writ-sdk-test", version: "1.0.0" });
    await mcp.connect(await mcpTransport(task, writ.gw("/crm-mcp")));
    const call = () => writCall(() => mcp.callTool({ name: "wipe", arguments: { customer: "c-1" } }));
    let held;
    await assert.rejects(call(), (e) => {
      held = e;
      return e instanceof PendingApproval && !!e.approvalId;
    });
    await writ.admin("POST", `/v1/approvals/${held.approvalId}/approve`, { reason: "checked" });
    const r = await call();
    assert.match(r.content.map((c) => c.text).join(" "), /customer c-1: wiped/);
    // Once only: the same call again is a new approval.
    await assert.rejects(call(), (e) => e instanceof PendingApproval && e.approvalId !== held.approvalId);
    await mcp.close();
  });
});
