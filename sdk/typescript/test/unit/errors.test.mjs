// Answers become typed errors; requests follow DPoP-Nonce; MCP refusals and
// RFC 9728 challenges are read.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import {
  Denied, DpopError, InstanceKey, InvalidScope, InvalidTarget, Nonces, PendingApproval, Quarantined, WritError,
  errorFromBody, errorFromResponse, send,
} from "../../dist/index.js";
import { asWritError, resourceMetadataUrl } from "../../dist/mcp.js";

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

test("problem details and OAuth errors become their types", async () => {
  const denied = await errorFromResponse(json(403, {
    type: "about:blank", title: "Forbidden", status: 403, detail: "denied by no-deletes [policy sha256:ab]",
    determining_policies: ["no-deletes"], policy_version: "sha256:ab",
  }), "start task");
  assert.ok(denied instanceof Denied);
  assert.deepEqual(denied.determiningPolicies, ["no-deletes"]);
  assert.equal(denied.policyVersion, "sha256:ab");
  assert.equal(denied.status, 403);
  assert.ok(denied instanceof WritError);

  assert.ok(errorFromBody(400, { error: "invalid_scope", error_description: "x" }, "", "t") instanceof InvalidScope);
  assert.ok(errorFromBody(400, { error: "invalid_target", error_description: "x" }, "", "t") instanceof InvalidTarget);
  assert.ok(errorFromBody(400, { error: "invalid_dpop_proof", error_description: "replayed" }, "", "t") instanceof DpopError);
  assert.ok(errorFromBody(403, { title: "Forbidden", detail: "attestation failed: agent is quarantined" }, "", "t") instanceof Quarantined);
  const held = errorFromBody(403, { title: "Forbidden", detail: "approval required", approval_id: "apr_1", task_id: "task_1" }, "", "t");
  assert.ok(held instanceof PendingApproval);
  assert.equal(held.approvalId, "apr_1");
  const plain = errorFromBody(500, undefined, "oops", "t");
  assert.equal(plain.constructor, WritError);
  assert.equal(plain.detail, "oops");
});

test("send follows use_dpop_nonce once, with the nonce the server gave", async () => {
  const key = await InstanceKey.generate();
  const seen = [];
  const fake = async (url, init) => {
    const proof = decodeJwt(new Headers(init.headers).get("dpop"));
    seen.push(proof);
    if (!proof.nonce) {
      return json(401, { title: "Unauthorized", detail: "nonce" }, {
        "dpop-nonce": "server-nonce-1", "www-authenticate": 'DPoP error="use_dpop_nonce"',
      });
    }
    return json(200, { ok: true });
  };
  const nonces = new Nonces();
  const res = await send("https://writ.example/v1/tasks", { method: "POST", body: "{}" }, { fetch: fake, key, nonces, accessToken: "t" });
  assert.equal(res.status, 200);
  assert.equal(seen.length, 2);
  assert.equal(seen[1].nonce, "server-nonce-1");
  assert.notEqual(seen[0].jti, seen[1].jti);
  // The nonce is remembered for the next request to that server.
  await send("https://writ.example/oauth2/token", { method: "POST", body: "a=b" }, { fetch: fake, key, nonces, proofWithoutAth: true });
  assert.equal(seen.length, 3);
  assert.equal(seen[2].nonce, "server-nonce-1");
  assert.equal(seen[2].ath, undefined);
});

test("an OAuth use_dpop_nonce (400) is followed too, and only once", async () => {
  const key = await InstanceKey.generate();
  let n = 0;
  const fake = async () => {
    n += 1;
    return json(400, { error: "use_dpop_nonce", error_description: "x" }, { "dpop-nonce": `n${n}` });
  };
  const res = await send("https://writ.example/oauth2/token", { method: "POST" }, { fetch: fake, key, nonces: new Nonces() });
  assert.equal(res.status, 400);
  assert.equal(n, 2);
  assert.ok((await errorFromResponse(res, "exchange")) instanceof DpopError);
});

test("RFC 9728 challenges and MCP refusals", () => {
  assert.equal(
    resourceMetadataUrl('Bearer realm="writ", resource_metadata="http://gw/.well-known/oauth-protected-resource/crm"'),
    "http://gw/.well-known/oauth-protected-resource/crm",
  );
  assert.equal(resourceMetadataUrl("Bearer"), undefined);
  const d = asWritError({ code: -32001, message: "denied by writ", data: { determining_policies: ["p"], policy_version: "v" } });
  assert.ok(d instanceof Denied);
  assert.deepEqual(d.determiningPolicies, ["p"]);
  const a = asWritError({ code: -32001, message: "held", data: { approval_id: "apr_9", approval_status: "pending" } });
  assert.ok(a instanceof PendingApproval);
  const other = { code: -32602, message: "bad params" };
  assert.equal(asWritError(other), other);
});
