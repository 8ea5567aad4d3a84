// The task scope's own timing and caching, against a fake broker (a fetch
// function): heartbeats at a third of the lease and none after the end,
// one exchange for concurrent asks, no cached token used near its expiry.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Client, TaskEnded } from "../../dist/index.js";

function fakeBroker({ leaseMs = 900, toolTtl = 300 } = {}) {
  const calls = [];
  let n = 0;
  const json = (status, body) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  const task = () => ({
    task_id: "task_1", access_token: `task-token-${++n}`, token_type: "DPoP", expires_in: 600,
    lease_expires_at: Date.now() + leaseMs, scope: "tickets:read",
  });
  const fetch = async (url, init) => {
    const path = new URL(url).pathname;
    calls.push({ path, at: Date.now() });
    if (path === "/v1/attest") return json(201, { instance_id: "ins_1", access_token: "inst", token_type: "DPoP", expires_in: 900 });
    if (path === "/v1/tasks") return json(201, task());
    if (path.endsWith("/heartbeat")) return json(200, task());
    if (path.endsWith("/complete")) return json(200, { task_id: "task_1", status: "completed", revoked_tokens: 1 });
    if (path === "/oauth2/token") {
      await new Promise((r) => setTimeout(r, 20));
      return json(200, { access_token: `tool-${++n}`, token_type: "DPoP", scope: "read", expires_in: toolTtl, issued_token_type: "x" });
    }
    return json(404, { title: "Not Found" });
  };
  const count = (p) => calls.filter((c) => c.path.endsWith(p)).length;
  return { fetch, calls, count };
}

const client = (fetch) => new Client({ baseUrl: "http://writ.test", agent: "a", attestation: { joinToken: "wjt_x" }, fetch });

test("heartbeats run at a third of the lease, and stop when the task ends", async () => {
  const b = fakeBroker({ leaseMs: 900 });
  await client(b.fetch).withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async () => {
    await new Promise((r) => setTimeout(r, 1000));
  });
  const beats = b.count("/heartbeat");
  assert.ok(beats >= 2 && beats <= 5, `${beats} heartbeats in 1 s with a 0.9 s lease`);
  assert.equal(b.count("/complete"), 1);
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(b.count("/heartbeat"), beats, "none after the end");
});

test("concurrent asks for the same tool token share one exchange; a token near expiry is not reused", async () => {
  const b = fakeBroker();
  await client(b.fetch).withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async (task) => {
    const [x, y, z] = await Promise.all([1, 2, 3].map(() => task.tokenFor("tickets", { scopes: ["read"] })));
    assert.equal(x.accessToken, y.accessToken);
    assert.equal(y.accessToken, z.accessToken);
    assert.equal(b.count("/oauth2/token"), 1);
  });
  const short = fakeBroker({ toolTtl: 20 }); // under the 30 s margin
  await client(short.fetch).withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async (task) => {
    await task.tokenFor("tickets", { scopes: ["read"] });
    await task.tokenFor("tickets", { scopes: ["read"] });
    assert.equal(short.count("/oauth2/token"), 2);
  });
});

test("after the scope, the task is over: its calls throw TaskEnded without asking the broker", async () => {
  const b = fakeBroker();
  let kept;
  await client(b.fetch).withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async (task) => {
    kept = task;
  });
  const before = b.calls.length;
  await assert.rejects(kept.tokenFor("tickets"), TaskEnded);
  await assert.rejects(kept.heartbeat(), TaskEnded);
  assert.equal(b.calls.length, before);
});
