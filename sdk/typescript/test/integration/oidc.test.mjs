// OIDC attestation: identity tokens from an issuer whose JWKS writ fetches
// (the issuer here is the test: jose signs, node:http serves the JWKS), given
// as a file (a Kubernetes projected token) or a callback; re-attestation
// before expiry reads a fresh one; a quarantined agent learns it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SignJWT, exportJWK, generateKeyPair } from "jose";
import { Client, AttestationFailed, Quarantined } from "../../dist/index.js";
import { Writ, sleep } from "./harness.mjs";

const ISSUER = "https://token.actions.example.com";
const SUBJECT = "repo:acme/agents:ref:refs/heads/main";
let writ;
let jwks;
let signingKey;

before(async () => {
  writ = await Writ.start();
  const { privateKey, publicKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  signingKey = privateKey;
  const body = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "ci-1", alg: "EdDSA", use: "sig" }] });
  jwks = http.createServer((_, res) => {
    res.setHeader("content-type", "application/json");
    res.end(body);
  });
  await new Promise((r) => jwks.listen(0, "127.0.0.1", r));
  for (const name of ["ci-agent", "ci-quarantined"]) {
    await writ.registerAgent(name, {
      kind: "oidc", issuer: ISSUER, audience: "writ", subject: SUBJECT,
      jwks_uri: `http://127.0.0.1:${jwks.address().port}/jwks.json`,
    });
  }
});
after(async () => {
  jwks.close();
  await writ.stop();
});

const mint = (over = {}) =>
  new SignJWT({ ...over })
    .setProtectedHeader({ alg: "EdDSA", kid: "ci-1" })
    .setIssuer(ISSUER).setAudience("writ").setSubject(SUBJECT)
    .setIssuedAt().setExpirationTime("5m")
    .sign(signingKey);

test("an identity token from a file attests", async () => {
  const dir = mkdtempSync(join(tmpdir(), "writ-oidc-"));
  const file = join(dir, "token");
  writeFileSync(file, `${await mint()}\n`);
  const client = new Client({ baseUrl: writ.addr, agent: "ci-agent", attestation: { oidcTokenFile: file } });
  await client.withTask({ intent: "build", capabilities: { tickets: ["read"] } }, async (task) => {
    await task.tokenFor("tickets", { scopes: ["read"] });
  });
  // A token for another subject attests nothing.
  writeFileSync(file, await new SignJWT({}).setProtectedHeader({ alg: "EdDSA", kid: "ci-1" }).setIssuer(ISSUER)
    .setAudience("writ").setSubject("repo:evil/x").setIssuedAt().setExpirationTime("5m").sign(signingKey));
  const other = new Client({ baseUrl: writ.addr, agent: "ci-agent", attestation: { oidcTokenFile: file } });
  await assert.rejects(other.attest(), AttestationFailed);
});

test("a callback gives a fresh token for every re-attestation, before the instance token expires", async () => {
  let calls = 0;
  const client = new Client({
    baseUrl: writ.addr, agent: "ci-agent",
    attestation: { oidcToken: async () => { calls += 1; return mint(); } },
    // The instance token lives 15 min: ask for a new one 1.5 s after attesting.
    reattestBeforeMs: 15 * 60_000 - 1500,
  });
  const first = await client.attest();
  assert.equal(calls, 1);
  await sleep(2500);
  const second = client.instance;
  assert.ok(calls >= 2, "re-attested in the background");
  assert.notEqual(second.instanceId, first.instanceId);
  await client.withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async (task) => {
    await task.tokenFor("tickets", { scopes: ["read"] });
  });
  client.close();
});

test("quarantine mid-task with OIDC: the next call throws Quarantined, and so does attesting again", async () => {
  const client = new Client({ baseUrl: writ.addr, agent: "ci-quarantined", attestation: { oidcToken: () => mint() } });
  await assert.rejects(
    client.withTask({ intent: "x", capabilities: { tickets: ["read"] } }, async (task) => {
      await writ.admin("POST", "/v1/agents/ci-quarantined/quarantine");
      await task.heartbeat();
    }),
    Quarantined,
  );
  await assert.rejects(client.attest(), Quarantined);
});
