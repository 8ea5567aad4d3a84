// The MCP TypeScript SDK client (@modelcontextprotocol/sdk) walks the MCP
// Python SDK server's features at a URL, with an optional bearer token:
//   node sdk_client.mjs URL [TOKEN [through]]
// ("through": the URL is writ's gateway under the example policies, which
// keep the server's file:// resource from the agent.)
// It prints one JSON object: {check: {ok, detail}}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

const [url, token, via] = process.argv.slice(2);
const through = via === "through";
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client(
  { name: "writ-interop-ts", version: "1.0.0" },
  { capabilities: { sampling: {}, elicitation: {} } },
);
client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
  role: "assistant",
  model: "interop-model",
  content: { type: "text", text: `sampled: ${req.params.messages[0].content.text}` },
}));
client.setRequestHandler(ElicitRequestSchema, async () => ({
  action: "accept",
  content: { username: "alice", email: "alice@example.com" },
}));

const out = {};
async function check(name, f) {
  try {
    const detail = await f();
    out[name] = { ok: true, detail };
  } catch (e) {
    out[name] = { ok: false, detail: String(e && e.message ? e.message : e) };
  }
}
const text = (r) => r.content.map((c) => c.text ?? "").join(" ");

await client.connect(transport);

await check("tools", async () => (await client.listTools()).tools.map((t) => t.name).sort());

await check("progress when sent", async () => {
  const start = Date.now();
  const at = [];
  const r = await client.callTool({ name: "slow_progress", arguments: { steps: 3 } }, undefined, {
    onprogress: (p) => at.push([(Date.now() - start) / 1000, p.progress]),
    timeout: 30000,
  });
  const done = (Date.now() - start) / 1000;
  if (at.length !== 3) throw new Error(`${at.length} progress notifications: ${JSON.stringify(at)}`);
  // Each arrives near its second, not all together at the end.
  at.forEach(([t], i) => {
    if (t < i + 0.8 || t > i + 1.8) throw new Error(`notification ${i + 1} at ${t} s: ${JSON.stringify(at)}`);
  });
  return { arrivals: at, result_at: done, text: text(r) };
});

await check("sampling", async () => {
  const r = await client.callTool({ name: "test_sampling", arguments: { prompt: "hello" } }, undefined, { timeout: 15000 });
  if (!text(r).includes("sampled: hello")) throw new Error(text(r));
  return text(r);
});

await check("elicitation", async () => {
  const r = await client.callTool({ name: "test_elicitation", arguments: { message: "who?" } }, undefined, { timeout: 15000 });
  if (!text(r).includes("alice@example.com")) throw new Error(text(r));
  return text(r);
});

await check("resources", async () => {
  const listed = (await client.listResources()).resources.map((r) => r.uri).sort();
  const read = await client.readResource({ uri: "test://static-text" });
  const tpl = await client.readResource({ uri: "test://template/7/data" });
  if (!read.contents[0].text.includes("static text")) throw new Error(JSON.stringify(read));
  if (!tpl.contents[0].text.includes("Data for ID: 7")) throw new Error(JSON.stringify(tpl));
  const hostFile = "file:///writ-interop/host-file";
  if (listed.includes(hostFile) === through) throw new Error(`listed: ${listed}`);
  if (through) {
    let refused = null;
    try {
      await client.readResource({ uri: hostFile });
    } catch (e) {
      refused = String(e.message);
    }
    if (!refused || !refused.includes("writ")) throw new Error(`reading ${hostFile}: ${refused}`);
  }
  return listed;
});

await check("prompts", async () => {
  const listed = (await client.listPrompts()).prompts.map((p) => p.name).sort();
  const got = await client.getPrompt({ name: "test_prompt_with_arguments", arguments: { arg1: "a", arg2: "b" } });
  const t = got.messages[0].content.text;
  if (t !== "Prompt with arguments: arg1='a', arg2='b'") throw new Error(t);
  return listed;
});

await check("cancellation", async () => {
  const before = Number(text(await client.callTool({ name: "cancellations", arguments: {} })));
  const ctl = new AbortController();
  const start = Date.now();
  setTimeout(() => ctl.abort("enough"), 500);
  let cancelled = false;
  try {
    await client.callTool({ name: "wait_forever", arguments: {} }, undefined, { signal: ctl.signal, timeout: 20000 });
  } catch {
    cancelled = true;
  }
  const took = (Date.now() - start) / 1000;
  if (!cancelled || took > 3) throw new Error(`call ended after ${took} s, cancelled=${cancelled}`);
  // The server hears of it (notifications/cancelled) and stops the call.
  for (let i = 0; i < 40; i++) {
    const after = Number(text(await client.callTool({ name: "cancellations", arguments: {} })));
    if (after === before + 1) return { took };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the server never saw the cancellation");
});

await client.close();
console.log(JSON.stringify(out));
