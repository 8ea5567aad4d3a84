// A TypeScript agent on writ, from attestation to a finished task:
//   1. (as the operator, with WRIT_TOKEN) register what the demo needs and
//      mint one-time join tokens: nothing else uses the admin credential;
//   2. attest the planner and a sub-agent, each with its own key;
//   3. start a task for a human, call an MCP tool and an HTTP tool through
//      writ's gateway, delegate read-only work to the sub-agent;
//   4. finish: the task completes and every token issued under it dies.
// Exits 0 when the whole story succeeded.

import { createRequire } from "node:module";
import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js";
import { Client, TaskEnded, WritError } from "@writ/sdk";
import { mcpTransport } from "@writ/sdk/mcp";

const ADDR = (process.env.WRIT_ADDR ?? "http://127.0.0.1:8750").replace(/\/+$/, "");
const ADMIN_TOKEN = process.env.WRIT_TOKEN;
// `writ serve --dev` runs its gateway on the next port (8751 by default).
const GATEWAY = (process.env.WRIT_GATEWAY ?? nextPort(ADDR)).replace(/\/+$/, "");

const PLANNER = "demo-agent"; // registered by `writ serve --dev`
const HELPER = "ts-example-helper";
const MCP_TOOL = "ts-example-everything";
const HTTP_TOOL = "ts-example-health";

function nextPort(addr: string): string {
  const u = new URL(addr);
  u.port = String(Number(u.port || (u.protocol === "https:" ? 443 : 80)) + 1);
  return u.origin;
}

const step = (s: string): void => console.log(`==> ${s}`);

/** The operator's side: plain HTTP calls to writ's admin API. */
async function admin(method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${ADDR}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function ensure(path: string, body: { name: string }): Promise<void> {
  const res = await admin("POST", path, body);
  if (res.status !== 201 && res.status !== 409) throw new Error(`POST ${path}: ${res.status} ${await res.text()}`);
}

async function joinToken(agent: string): Promise<string> {
  const res = await admin("POST", `/v1/agents/${agent}/join-tokens`, { ttl: 300 });
  if (res.status !== 201) throw new Error(`join token for ${agent}: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { join_token: string }).join_token;
}

async function gatewayServes(tool: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const res = await fetch(`${GATEWAY}/.well-known/oauth-protected-resource/${tool}`).catch(() => undefined);
    if (res?.status === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the gateway at ${GATEWAY} does not serve ${tool} (set WRIT_GATEWAY?)`);
}

async function main(): Promise<void> {
  if (!ADMIN_TOKEN) throw new Error("set WRIT_ADDR and WRIT_TOKEN (the admin token `writ serve --dev` prints)");

  step("register the sub-agent and the tools (operator, WRIT_TOKEN)");
  const everything = createRequire(import.meta.url).resolve("@modelcontextprotocol/server-everything/dist/index.js");
  await ensure("/v1/agents", { name: HELPER, attestation: { kind: "join_token" } } as { name: string });
  await ensure("/v1/tools", {
    name: MCP_TOOL, audience: `urn:mcp:${MCP_TOOL}`, scopes: ["echo", "get-sum"], attributes: { protocol: "mcp" },
    upstream: { kind: "mcp-stdio", command: [process.execPath, everything, "stdio"] },
  } as { name: string });
  // The HTTP tool: writ's own health endpoint stands in for an API.
  await ensure("/v1/tools", {
    name: HTTP_TOOL, audience: `urn:example:${HTTP_TOOL}`, scopes: ["read"], upstream: { kind: "http", url: ADDR },
  } as { name: string });
  await gatewayServes(MCP_TOOL);
  await gatewayServes(HTTP_TOOL);

  step("attest the planner and the sub-agent, each with a key of its own (Ed25519, in memory)");
  const planner = new Client({ baseUrl: ADDR, agent: PLANNER, attestation: { joinToken: () => joinToken(PLANNER) } });
  const helper = new Client({ baseUrl: ADDR, agent: HELPER, attestation: { joinToken: () => joinToken(HELPER) } });
  console.log(`    planner instance ${(await planner.attest()).instanceId}, key ${(await planner.key())?.thumbprint}`);
  console.log(`    helper  instance ${(await helper.attest()).instanceId}, key ${(await helper.key())?.thumbprint}`);

  let healthFetch: ((url: string) => Promise<Response>) | undefined;
  const taskId = await planner.withTask(
    {
      intent: "check the service and say hello",
      capabilities: { [MCP_TOOL]: ["echo"], [HTTP_TOOL]: ["read"] },
      onBehalfOf: "user:alice",
    },
    async (task) => {
      step(`task ${task.id} started for user:alice`);

      step("call an MCP tool through the gateway (MCP TypeScript SDK client)");
      const mcp = new McpClient({ name: "writ-example-agent", version: "0.1.0" });
      await mcp.connect(await mcpTransport(task, `${GATEWAY}/${MCP_TOOL}`));
      const tools = (await mcp.listTools()).tools.map((t) => t.name);
      console.log(`    tools/list: ${tools.join(", ")}`);
      const echoed = await mcp.callTool({ name: "echo", arguments: { message: "hello from a TypeScript agent" } });
      const text = (echoed.content as { type: string; text?: string }[]).map((c) => c.text ?? "").join(" ");
      console.log(`    echo: ${text}`);
      if (!text.includes("hello from a TypeScript agent")) throw new Error("the MCP tool did not answer");
      await mcp.close();

      step("call an HTTP tool through the gateway (fetch with DPoP)");
      healthFetch = task.fetch(HTTP_TOOL, { scopes: ["read"] });
      const res = await healthFetch(`${GATEWAY}/${HTTP_TOOL}/healthz`);
      console.log(`    GET /${HTTP_TOOL}/healthz: ${res.status}`);
      if (res.status !== 200) throw new Error(`the HTTP tool answered ${res.status}`);

      step(`delegate read-only work to ${HELPER}`);
      const grant = await task.delegate({ actor: helper, scopes: { [HTTP_TOOL]: ["read"] } });
      console.log(`    child task ${grant.taskId}: ${grant.scope}`);
      await helper.withDelegation(grant, async (child) => {
        const r = await child.fetch(HTTP_TOOL, { scopes: ["read"] })(`${GATEWAY}/${HTTP_TOOL}/healthz`);
        console.log(`    the helper's GET /${HTTP_TOOL}/healthz: ${r.status}`);
        if (r.status !== 200) throw new Error(`the helper's call answered ${r.status}`);
      });
      return task.id;
    },
  );

  step(`task ${taskId} completed: its tokens are dead`);
  try {
    await healthFetch?.(`${GATEWAY}/${HTTP_TOOL}/healthz`);
    throw new Error("a token outlived its task");
  } catch (e) {
    if (!(e instanceof TaskEnded)) throw e;
    console.log(`    the next call: ${e.name} (${e.taskStatus})`);
  }
  planner.close();
  helper.close();
  console.log("the whole story succeeded");
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e instanceof WritError ? `${e.name}: ${e.message}` : e);
    process.exit(1);
  },
);
