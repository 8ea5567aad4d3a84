// The instance key and its proofs, checked with jose's own verification
// (the proof's embedded JWK) and RFC 7638 thumbprints.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EmbeddedJWK, calculateJwkThumbprint, decodeProtectedHeader, jwtVerify } from "jose";
import { InstanceKey, accessTokenHash } from "../../dist/index.js";

for (const alg of ["EdDSA", "ES256"]) {
  test(`${alg}: a proof verifies with its embedded key and says what it is for`, async () => {
    const key = await InstanceKey.generate(alg);
    const proof = await key.proof({ method: "post", url: "https://writ.example/v1/tasks?x=1#f", accessToken: "tok", nonce: "n-1" });
    const { payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: "dpop+jwt", algorithms: [alg] });
    assert.equal(protectedHeader.alg, alg);
    assert.equal(protectedHeader.jwk.d, undefined, "never the private key");
    assert.equal(await calculateJwkThumbprint(protectedHeader.jwk), key.thumbprint);
    assert.equal(payload.htm, "POST");
    assert.equal(payload.htu, "https://writ.example/v1/tasks", "no query or fragment");
    assert.equal(payload.ath, createHash("sha256").update("tok").digest("base64url"));
    assert.equal(payload.nonce, "n-1");
    assert.ok(Math.abs(payload.iat - Date.now() / 1000) < 5);
    const again = await key.proof({ method: "POST", url: "https://writ.example/v1/tasks" });
    const p2 = (await jwtVerify(again, EmbeddedJWK)).payload;
    assert.notEqual(p2.jti, payload.jti, "a fresh jti every time");
    assert.equal(p2.ath, undefined);
  });
}

test("a key file is made once (0600) and read back as the same key", async () => {
  const dir = mkdtempSync(join(tmpdir(), "writ-key-"));
  const file = join(dir, "instance.pem");
  const made = await InstanceKey.fromFile(file, { create: true });
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.match(readFileSync(file, "utf8"), /BEGIN PRIVATE KEY/);
  const read = await InstanceKey.fromFile(file);
  assert.equal(read.thumbprint, made.thumbprint);
  assert.equal(read.alg, "EdDSA");
  const es = await InstanceKey.fromFile(join(dir, "es.pem"), { create: true, alg: "ES256" });
  assert.equal((await InstanceKey.fromFile(join(dir, "es.pem"), { alg: "ES256" })).thumbprint, es.thumbprint);
  await assert.rejects(InstanceKey.fromFile(join(dir, "missing.pem")));
});

test("a private JWK is a key too; garbage is refused", async () => {
  const { generateKeyPair, exportJWK } = await import("jose");
  const { privateKey } = await generateKeyPair("Ed25519", { extractable: true });
  const jwk = await exportJWK(privateKey);
  const dir = mkdtempSync(join(tmpdir(), "writ-key-"));
  writeFileSync(join(dir, "k.json"), JSON.stringify(jwk));
  const key = await InstanceKey.fromFile(join(dir, "k.json"));
  assert.equal(key.thumbprint, await calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x }));
  const proof = await key.proof({ method: "GET", url: "https://a.example/" });
  assert.equal(decodeProtectedHeader(proof).jwk.d, undefined);
  await assert.rejects(InstanceKey.parse("not a key"));
});

test("ath is base64url SHA-256 of the token", () => {
  assert.equal(accessTokenHash("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
});
