// Tasks as scopes against a real `writ serve --dev`: attestation by join
// token, completion on return, on an exception and on cancellation, the
// exchange cache, delegation with the sub-agent's proof, plain HTTP through
// the gateway, and quarantine mid-task.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { decodeJwt } from "jose";
import { Client, Denied, InvalidScope, InvalidTarget, Quarantined, TaskEnded } from "../../dist/index.js";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ADMIN, BIN, Writ } from "./harness.mjs";

let writ;
let upstream;
const seen = [];

before(async () => {
  writ = await Writ.start();
  upstream = http.createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ ok: true, path: req.url }));
  });
  await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
  await writ.registerTool({
    name: "crm", audience: "https://crm.example", scopes: ["read", "write"],
    upstream: { kind: "http", url: `http://127.0.0.1:${upstream.address().port}/api` },
  });
  await writ.registerAgent("helper-bot");
});

after(async () => {
  upstream.close();
  await writ.stop();
});

/** A fetch that counts the requests to each path. */
function counting() {
  const counts = new Map();
  const f = (url, init) => {
    const p = new URL(url).pathname;
    counts.set(p, (counts.get(p) ?? 0) + 1);
    return fetch(url, init);
  };
  return { f, counts };
}

async function demo(extra = {}) {
  return new Client({ baseUrl: writ.addr, agent: "demo-agent", attestation: { joinToken: await writ.joinToken() }, ...extra });
}

test("a task completes when its scope returns, and its tokens die with it", async () => {
  const client = await demo();
  const inst = await client.attest();
  assert.equal(inst.tokenType, "DPoP");
  const key = await client.key();
  assert.equal(decodeJwt(inst.accessToken).cnf.jkt, key.thumbprint, "the instance token is bound to the key");
  let taskId;
  const value = await client.withTask({ intent: "summarise tickets", capabilities: { tickets: ["read"] }, onBehalfOf: "user:alice" }, async (task) => {
    taskId = task.id;
    assert.equal((await writ.task(task.id)).status, "active");
    const claims = decodeJwt(task.accessToken);
    assert.equal(claims.obo, "user:alice");
    assert.equal(claims.cnf.jkt, key.thumbprint);
    return 42;
  });
  assert.equal(value, 42);
  const t = await writ.task(taskId);
  assert.equal(t.status, "completed");
});

test("an exception inside the scope ends the task and comes out unchanged", async () => {
  const client = await demo();
  let taskId;
  const boom = new Error("the agent failed");
  await assert.rejects(
    client.withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async (task) => {
      taskId = task.id;
      throw boom;
    }),
    (e) => e === boom,
  );
  assert.equal((await writ.task(taskId)).status, "completed", "not leaked");
});

test("cancellation by AbortSignal ends the task", async () => {
  const client = await demo();
  const ac = new AbortController();
  let taskId;
  let inner;
  const run = client.withTask({ intent: "x", capabilities: { tickets: ["read"] }, signal: ac.signal }, async (task) => {
    taskId = task.id;
    inner = task.signal;
    await new Promise(() => {}); // works forever
  });
  setTimeout(() => ac.abort(new Error("the user gave up")), 300);
  await assert.rejects(run, /the user gave up/);
  assert.ok(inner.aborted, "the task's own signal fired");
  assert.equal((await writ.task(taskId)).status, "completed");
});

test("a refused task start is Denied with the deciding policy and version", async () => {
  const client = await demo();
  await assert.rejects(
    client.withTask({ intent: "clean up", capabilities: { tickets: ["delete"] }, onBehalfOf: "user:alice" }, async () => {
      assert.fail("never runs");
    }),
    (e) => e instanceof Denied && e.determiningPolicies.includes("no-deletes") && /^sha256:/.test(e.policyVersion),
  );
});

test("tool tokens are exchanged once and cached; other scopes and tools get their own or typed refusals", async () => {
  const { f, counts } = counting();
  const client = await demo({ fetch: f });
  await client.withTask({ intent: "x", capabilities: { tickets: ["read", "comment"] }, onBehalfOf: "user:alice" }, async (task) => {
    const a = await task.tokenFor("tickets", { scopes: ["read"] });
    const b = await task.tokenFor("tickets", { scopes: ["read"] });
    assert.equal(a.accessToken, b.accessToken);
    assert.equal(counts.get("/oauth2/token"), 1);
    const c = await task.tokenFor("tickets", { scopes: ["comment"] });
    assert.notEqual(c.accessToken, a.accessToken);
    assert.equal(counts.get("/oauth2/token"), 2);
    const claims = decodeJwt(a.accessToken);
    assert.equal(claims.aud, "https://tickets.example.com");
    assert.equal(claims.scope, "read");
    assert.equal(claims.cnf.jkt, (await client.key()).thumbprint);
    await assert.rejects(task.tokenFor("tickets", { scopes: ["write"] }), InvalidScope);
    await assert.rejects(task.tokenFor("crm", { scopes: ["read"] }), InvalidTarget);
  });
});

test("ES256 instance keys work as well as Ed25519", async () => {
  const client = await demo({ key: { alg: "ES256" } });
  await client.withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async (task) => {
    const t = await task.tokenFor("tickets", { scopes: ["read"] });
    assert.equal(t.tokenType, "DPoP");
    assert.equal((await client.key()).alg, "ES256");
  });
});

test("a key made by `writ dpop keygen` is the instance key, with the thumbprint writ printed", async () => {
  const file = join(mkdtempSync(join(tmpdir(), "writ-keygen-")), "agent.pem");
  const made = JSON.parse(execFileSync(BIN, ["dpop", "keygen", "--out", file], { encoding: "utf8" }));
  const client = await demo({ key: { file } });
  const inst = await client.attest();
  assert.equal(decodeJwt(inst.accessToken).cnf.jkt, made.jkt);
});

test("fetch through the gateway: DPoP per request, policy refusals typed, dead after the task", async () => {
  const client = await demo();
  let fetchCrm;
  await client.withTask({ intent: "look up a customer", capabilities: { crm: ["read"] } }, async (task) => {
    fetchCrm = task.fetch("crm", { scopes: ["read"] });
    for (const n of [1, 2]) {
      const r = await fetchCrm(writ.gw(`/crm/customers/${n}?fields=name`));
      assert.equal(r.status, 200);
      assert.equal((await r.json()).path, `/api/customers/${n}?fields=name`);
    }
    const got = seen.at(-1);
    assert.equal(got.headers.authorization, undefined, "the upstream never sees the agent's token");
    assert.equal(got.headers["x-writ-task"], task.id);
    await assert.rejects(
      fetchCrm(writ.gw("/crm/customers"), { method: "POST", body: "{}", headers: { "content-type": "application/json" } }),
      (e) => e instanceof Denied && !!e.policyVersion,
    );
  });
  await assert.rejects(fetchCrm(writ.gw("/crm/customers/1")), TaskEnded);
});

test("a 401 from the gateway (its tool token revoked): the fetch exchanges again and retries once", async () => {
  const { f, counts } = counting();
  const client = await demo({ fetch: f });
  await client.withTask({ intent: "x", capabilities: { crm: ["read"] } }, async (task) => {
    const api = task.fetch("crm", { scopes: ["read"] });
    assert.equal((await api(writ.gw("/crm/a"))).status, 200);
    const first = await task.tokenFor("crm", { scopes: ["read"] });
    const r = await fetch(writ.url("/oauth2/revoke"), {
      method: "POST", body: new URLSearchParams({ token: first.accessToken }),
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    assert.equal(r.status, 200);
    const before = counts.get("/oauth2/token");
    const res = await api(writ.gw("/crm/b"));
    assert.equal(res.status, 200);
    assert.equal(counts.get("/crm/b"), 2, "refused once, then retried");
    assert.equal(counts.get("/oauth2/token"), before + 1, "one new exchange");
    assert.notEqual((await task.tokenFor("crm", { scopes: ["read"] })).accessToken, first.accessToken);
  });
});

test("delegation: a child task bound to the sub-agent's key, with its proof", async () => {
  const planner = await demo();
  const helper = new Client({ baseUrl: writ.addr, agent: "helper-bot", attestation: { joinToken: await writ.joinToken("helper-bot") } });
  const helperKey = await helper.key();
  await planner.withTask({ intent: "triage", capabilities: { tickets: ["read", "comment"] }, onBehalfOf: "user:alice" }, async (task) => {
    const grant = await task.delegate({ actor: helper, scopes: { tickets: ["read"] } });
    const claims = decodeJwt(grant.accessToken);
    assert.equal(claims.sub, "spiffe://writ.local/agent/demo-agent");
    assert.deepEqual(claims.act, { sub: "spiffe://writ.local/agent/helper-bot" });
    assert.equal(claims.cnf.jkt, helperKey.thumbprint);
    assert.equal(claims.scope, "tickets:read");

    const childId = await helper.withDelegation(grant, async (child) => {
      const t = await child.tokenFor("tickets", { scopes: ["read"] });
      assert.equal(decodeJwt(t.accessToken).cnf.jkt, helperKey.thumbprint);
      await assert.rejects(child.tokenFor("tickets", { scopes: ["comment"] }), InvalidScope);
      return child.id;
    });
    assert.equal(childId, grant.taskId);
    assert.equal((await writ.task(childId)).parent_task_id, task.id);

    // Wider than policy allows sub-agents: Denied (delegate-read-only).
    await assert.rejects(task.delegate({ actor: helper, scopes: { tickets: ["comment"] } }), (e) => e instanceof Denied);
    // Credentials handed over (another process): the same, by value.
    const creds = await helper.actorCredentials();
    const g2 = await task.delegate({ actor: creds, scopes: ["tickets:read"] });
    // Ending the planner's task ends the child's.
    const child = await helper.adopt(g2);
    await task.complete();
    await assert.rejects(child.tokenFor("tickets", { scopes: ["read"] }), TaskEnded);
  });
});

test("quarantine mid-task: the next call throws Quarantined", async () => {
  await writ.registerAgent("risky-bot");
  const client = new Client({ baseUrl: writ.addr, agent: "risky-bot", attestation: { joinToken: await writ.joinToken("risky-bot") } });
  let taskId;
  await assert.rejects(
    client.withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async (task) => {
      taskId = task.id;
      await task.tokenFor("tickets", { scopes: ["read"] });
      await writ.admin("POST", "/v1/agents/risky-bot/quarantine");
      await task.tokenFor("tickets");
      assert.fail("a quarantined agent got a token");
    }),
    Quarantined,
  );
  assert.equal((await writ.task(taskId)).status, "revoked");
  await assert.rejects(client.startTask({ intent: "again", capabilities: { tickets: ["read"] } }), (e) => e instanceof Quarantined || e instanceof TaskEnded || e.status === 401);
});
