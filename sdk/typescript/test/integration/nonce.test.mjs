// With `writ serve --dpop-nonces` every proof must carry a server nonce:
// the SDK follows `use_dpop_nonce` and `DPoP-Nonce` on attest, task start,
// exchange and heartbeats without the agent noticing.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import { Client } from "../../dist/index.js";
import { Writ } from "./harness.mjs";

let writ;
before(async () => {
  writ = await Writ.start(["--dpop-nonces"]);
});
after(async () => writ.stop());

test("nonce retry: the first proof is refused with use_dpop_nonce, the retry carries the nonce", async () => {
  const log = [];
  const f = async (url, init) => {
    const res = await fetch(url, init);
    const proof = new Headers(init?.headers).get("dpop");
    log.push({ path: new URL(url).pathname, status: res.status, nonce: proof ? decodeJwt(proof).nonce : undefined,
               asked: res.headers.get("dpop-nonce") !== null });
    return res;
  };
  const client = new Client({ baseUrl: writ.addr, agent: "demo-agent", attestation: { joinToken: await writ.joinToken() }, fetch: f });
  await client.withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async (task) => {
    await task.heartbeat();
    const t = await task.tokenFor("tickets", { scopes: ["read"] });
    assert.equal(t.tokenType, "DPoP");
  });
  const attests = log.filter((l) => l.path === "/v1/attest");
  assert.equal(attests[0].nonce, undefined);
  assert.ok([400, 401].includes(attests[0].status), JSON.stringify(attests));
  assert.ok(attests[0].asked, "the refusal carries DPoP-Nonce");
  assert.equal(attests.at(-1).status, 201);
  assert.ok(attests.at(-1).nonce, "the retry carries the nonce");
  // Every later request that succeeded carried a nonce.
  for (const l of log.filter((l) => l.status < 300)) assert.ok(l.nonce, JSON.stringify(l));
  assert.ok(log.some((l) => l.path === "/oauth2/token" && l.status === 200));
  assert.ok(log.some((l) => l.path.endsWith("/complete") && l.status === 200));
});
