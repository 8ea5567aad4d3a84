// Requests with a DPoP proof each, following `DPoP-Nonce` (RFC 9449 §8-9).

import type { InstanceKey } from "./dpop.js";

export type FetchLike = (url: string | URL, init?: RequestInit) => Promise<Response>;

/** The last nonce each server (by origin) gave; a proof carries it. */
export class Nonces {
  private readonly byOrigin = new Map<string, string>();

  get(url: string | URL): string | undefined {
    return this.byOrigin.get(new URL(url).origin);
  }

  remember(url: string | URL, res: Response): void {
    const n = res.headers.get("dpop-nonce");
    if (n) this.byOrigin.set(new URL(url).origin, n);
  }
}

/** Whether an answer asks for a (new) nonce. */
export async function wantsNonce(res: Response): Promise<boolean> {
  if (!res.headers.get("dpop-nonce")) return false;
  if (res.status !== 400 && res.status !== 401) return false;
  if (/use_dpop_nonce/.test(res.headers.get("www-authenticate") ?? "")) return true;
  try {
    const body = (await res.clone().json()) as { error?: unknown };
    return body.error === "use_dpop_nonce";
  } catch {
    return false;
  }
}

export interface SendOptions {
  fetch: FetchLike;
  key?: InstanceKey;
  nonces: Nonces;
  /** The token sent in `Authorization` (and hashed into the proof's `ath`). */
  accessToken?: string;
  /** `DPoP` or `Bearer`; DPoP when there is a key. */
  scheme?: "DPoP" | "Bearer";
  /** The token is in the body (token exchange): a proof without `ath`. */
  proofWithoutAth?: boolean;
}

/**
 * One request: `Authorization` and a fresh proof; when the server answers
 * `use_dpop_nonce`, once more with the nonce it gave. The body must be
 * replayable (a string, bytes or form), as every body the SDK sends is.
 */
export async function send(url: string | URL, init: RequestInit, o: SendOptions): Promise<Response> {
  const method = (init.method ?? "GET").toUpperCase();
  const attempt = async (): Promise<Response> => {
    const headers = new Headers(init.headers);
    const scheme = o.scheme ?? (o.key ? "DPoP" : "Bearer");
    if (o.accessToken !== undefined) headers.set("authorization", `${scheme} ${o.accessToken}`);
    if (o.key && (scheme === "DPoP" || o.proofWithoutAth)) {
      headers.set(
        "dpop",
        await o.key.proof({
          method,
          url,
          accessToken: o.proofWithoutAth ? undefined : o.accessToken,
          nonce: o.nonces.get(url),
        }),
      );
    }
    const res = await o.fetch(url, { ...init, method, headers });
    o.nonces.remember(url, res);
    return res;
  };
  const res = await attempt();
  if (o.key && (await wantsNonce(res))) {
    await res.body?.cancel().catch(() => undefined);
    return attempt();
  }
  return res;
}
