// The instance key and DPoP proofs (RFC 9449), signed by `jose`.

import { createHash, randomUUID } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import {
  SignJWT,
  calculateJwkThumbprint,
  exportJWK,
  exportPKCS8,
  generateKeyPair,
  importJWK,
  importPKCS8,
  type CryptoKey,
  type JWK,
  type KeyObject,
} from "jose";

export type KeyAlgorithm = "EdDSA" | "ES256";

type PrivateKey = CryptoKey | KeyObject;

/** What a proof is for. */
export interface ProofFor {
  method: string;
  url: string | URL;
  /** The access token the request carries (adds `ath`). */
  accessToken?: string;
  /** A server nonce (`DPoP-Nonce`). */
  nonce?: string;
}

/**
 * The instance's key: made in memory or read from a file, never sent. Only
 * its public half appears in proofs (`jwk` header), and tokens are bound
 * to its thumbprint (`cnf.jkt`).
 */
export class InstanceKey {
  private constructor(
    readonly alg: KeyAlgorithm,
    private readonly privateKey: PrivateKey,
    readonly publicJwk: JWK,
    readonly thumbprint: string,
  ) {}

  /** A fresh key, in memory: Ed25519 (EdDSA) unless ES256 is asked for. */
  static async generate(alg: KeyAlgorithm = "EdDSA"): Promise<InstanceKey> {
    const { privateKey, publicKey } = await generateKeyPair(alg === "EdDSA" ? "Ed25519" : "ES256", { extractable: true });
    return InstanceKey.from(alg, privateKey, await exportJWK(publicKey));
  }

  /**
   * A key from a PKCS#8 PEM file (`writ dpop keygen` writes one) or a
   * private JWK in JSON. With `create`, a missing file is made (mode 0600).
   */
  static async fromFile(path: string, opts: { alg?: KeyAlgorithm; create?: boolean } = {}): Promise<InstanceKey> {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (e) {
      if (opts.create && (e as NodeJS.ErrnoException).code === "ENOENT") {
        const key = await InstanceKey.generate(opts.alg);
        await writeFile(path, await key.toPkcs8(), { mode: 0o600, flag: "wx" });
        return key;
      }
      throw e;
    }
    return InstanceKey.parse(text, opts.alg);
  }

  /** A key from PKCS#8 PEM or private JWK text. */
  static async parse(text: string, alg?: KeyAlgorithm): Promise<InstanceKey> {
    const trimmed = text.trim();
    if (trimmed.startsWith("{")) {
      const jwk = JSON.parse(trimmed) as JWK;
      const a: KeyAlgorithm = jwk.kty === "EC" ? "ES256" : "EdDSA";
      const priv = (await importJWK(jwk, a === "EdDSA" ? "Ed25519" : "ES256")) as PrivateKey;
      const { d: _d, ...pub } = jwk;
      return InstanceKey.from(a, priv, pub);
    }
    const pem = ed25519V1(trimmed) ?? trimmed;
    // Try the asked-for algorithm first, then the other.
    const order: KeyAlgorithm[] = alg === "ES256" ? ["ES256", "EdDSA"] : ["EdDSA", "ES256"];
    let last: unknown;
    for (const a of order) {
      try {
        const priv = await importPKCS8(pem, a === "EdDSA" ? "Ed25519" : "ES256", { extractable: true });
        const full = await exportJWK(priv);
        const { d: _d, ...pub } = full;
        return InstanceKey.from(a, priv, pub);
      } catch (e) {
        last = e;
      }
    }
    throw new Error("not an Ed25519 or P-256 private key (PKCS#8 PEM or JWK)", { cause: last });
  }

  private static async from(alg: KeyAlgorithm, priv: PrivateKey, jwk: JWK): Promise<InstanceKey> {
    const pub: JWK =
      jwk.kty === "OKP" ? { kty: "OKP", crv: jwk.crv, x: jwk.x } : { kty: "EC", crv: jwk.crv, x: jwk.x, y: jwk.y };
    return new InstanceKey(alg, priv, pub, await calculateJwkThumbprint(pub, "sha256"));
  }

  /** The private key as PKCS#8 PEM (for saving it). */
  async toPkcs8(): Promise<string> {
    return exportPKCS8(this.privateKey);
  }

  /** A fresh proof: new `jti`, `iat` now, `htu` without query or fragment. */
  async proof(p: ProofFor): Promise<string> {
    const u = new URL(p.url);
    const htu = `${u.origin}${u.pathname}`;
    const claims: Record<string, unknown> = { jti: randomUUID(), htm: p.method.toUpperCase(), htu };
    if (p.accessToken !== undefined) claims.ath = accessTokenHash(p.accessToken);
    if (p.nonce !== undefined) claims.nonce = p.nonce;
    return new SignJWT(claims)
      .setProtectedHeader({ alg: this.alg, typ: "dpop+jwt", jwk: this.publicJwk })
      .setIssuedAt()
      .sign(this.privateKey);
  }
}

/** `ath`: base64url of the SHA-256 of the access token. */
export function accessTokenHash(token: string): string {
  return createHash("sha256").update(token, "ascii").digest("base64url");
}

/**
 * OpenSSL (under Node's crypto) refuses an Ed25519 PKCS#8 v2 key that
 * carries its public key (RFC 5958 `OneAsymmetricKey`), the form
 * `writ dpop keygen` writes. The same seed as a v1 `PrivateKeyInfo`: the
 * fixed RFC 8410 prefix and the 32 bytes of the seed.
 */
function ed25519V1(pem: string): string | undefined {
  const m = /-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/.exec(pem);
  if (!m?.[1]) return undefined;
  const der = Buffer.from(m[1].replace(/\s+/g, ""), "base64");
  // SEQUENCE { INTEGER 1, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) }, [1] public key }
  const head = Buffer.from("020101300506032b657004220420", "hex");
  if (der[0] !== 0x30 || der.length < 2 + head.length + 32 || !der.subarray(2, 2 + head.length).equals(head)) return undefined;
  const seed = der.subarray(2 + head.length, 2 + head.length + 32);
  const v1 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
  return `-----BEGIN PRIVATE KEY-----\n${v1.toString("base64")}\n-----END PRIVATE KEY-----\n`;
}
