// The agent's connection to writ: attestation with an instance key, and
// the tasks it starts.

import { readFile } from "node:fs/promises";

import { InstanceKey, type KeyAlgorithm } from "./dpop.js";
import { AttestationFailed, Quarantined, TaskEnded, WritError, errorFromResponse } from "./errors.js";
import { Nonces, send, type FetchLike } from "./http.js";
import { PendingTask, Task, type Capabilities, type DelegatedGrant, type TaskOptions, type TaskToken } from "./task.js";

/** A credential, given as is, read from a file, or produced by a callback each time it is needed. */
export type Credential = string | (() => string | Promise<string>);

/**
 * How an instance proves what it is. A join token is good once; an OIDC
 * identity token or a JWT-SVID from a file or a callback (a Kubernetes
 * projected token, a CI token, a SPIFFE Workload API client) is read again
 * for every re-attestation.
 */
export type AttestationMethod =
  | { joinToken: Credential }
  | { oidcToken: Credential }
  | { oidcTokenFile: string }
  | { jwtSvid: Credential }
  | { jwtSvidFile: string };

export interface ClientOptions {
  /** The broker, e.g. `http://127.0.0.1:8750` (`WRIT_ADDR`). */
  baseUrl: string;
  /** The registered agent's name. */
  agent: string;
  attestation: AttestationMethod;
  /**
   * The instance key: an `InstanceKey`, `{ file }` (PKCS#8 PEM or JWK;
   * `create: true` makes it if missing), or `{ alg }` for a fresh one in
   * memory (the default: Ed25519). `false`: no key (bearer tokens).
   */
  key?: InstanceKey | { file: string; create?: boolean; alg?: KeyAlgorithm } | { alg: KeyAlgorithm } | false;
  /** Re-attest when the instance token has less than this left (default: a fifth of its life, at least 30 s). */
  reattestBeforeMs?: number;
  fetch?: FetchLike;
}

export interface Instance {
  instanceId: string;
  accessToken: string;
  tokenType: string;
  expiresAt: number;
  lifetimeMs: number;
}

const TOKEN_ENDPOINT = "/oauth2/token";

export class Client {
  readonly baseUrl: string;
  readonly agent: string;
  /** @internal */ readonly fetchImpl: FetchLike;
  /** @internal */ readonly nonces = new Nonces();
  private readonly opts: ClientOptions;
  private keyPromise?: Promise<InstanceKey | undefined>;
  private current?: Instance;
  private attesting?: Promise<Instance>;
  private timer?: NodeJS.Timeout;
  /** The join token used last: kept to learn, if the instance is revoked, whether the agent was quarantined. */
  private spentJoinToken?: string;

  constructor(opts: ClientOptions) {
    this.opts = opts;
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.agent = opts.agent;
    this.fetchImpl = opts.fetch ?? ((u, i) => fetch(u, i));
  }

  /** @internal */
  url(path: string): string {
    return `${this.baseUrl}${path}`;
  }

  /** The instance key (made or loaded on first use), or undefined without one. */
  async key(): Promise<InstanceKey | undefined> {
    this.keyPromise ??= (async () => {
      const k = this.opts.key;
      if (k === false) return undefined;
      if (k instanceof InstanceKey) return k;
      if (k && "file" in k) return InstanceKey.fromFile(k.file, { create: k.create, alg: k.alg });
      return InstanceKey.generate(k?.alg ?? "EdDSA");
    })();
    return this.keyPromise;
  }

  /** The current instance, if attested. */
  get instance(): Instance | undefined {
    return this.current;
  }

  /**
   * Attests (again): the credential, and a DPoP proof binding the instance
   * token to the key. Re-attestation before expiry then runs by itself.
   */
  async attest(): Promise<Instance> {
    this.attesting ??= this.doAttest().finally(() => {
      this.attesting = undefined;
    });
    return this.attesting;
  }

  private async credential(): Promise<Record<string, string>> {
    const a = this.opts.attestation;
    const read = async (c: Credential): Promise<string> => (typeof c === "function" ? await c() : c);
    if ("joinToken" in a) {
      if (typeof a.joinToken === "string" && this.spentJoinToken === a.joinToken && this.current) {
        throw new AttestationFailed("the join token was used already; give a callback to attest again");
      }
      const t = await read(a.joinToken);
      this.spentJoinToken = t;
      return { join_token: t };
    }
    if ("oidcToken" in a) return { oidc_token: await read(a.oidcToken) };
    if ("oidcTokenFile" in a) return { oidc_token: (await readFile(a.oidcTokenFile, "utf8")).trim() };
    if ("jwtSvid" in a) return { jwt_svid: await read(a.jwtSvid) };
    return { jwt_svid: (await readFile(a.jwtSvidFile, "utf8")).trim() };
  }

  private async doAttest(): Promise<Instance> {
    const body = { agent: this.agent, ...(await this.credential()) };
    const inst = await this.postAttest(body);
    this.current = inst;
    this.schedule();
    return inst;
  }

  private async postAttest(body: Record<string, string>): Promise<Instance> {
    const key = await this.key();
    const url = this.url("/v1/attest");
    const res = await send(
      url,
      { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) },
      { fetch: this.fetchImpl, key, nonces: this.nonces, proofWithoutAth: true },
    );
    if (res.status !== 201) {
      const e = await errorFromResponse(res, "attest");
      if (e instanceof Quarantined) throw e;
      if (res.status === 401 || res.status === 403) throw new AttestationFailed(e.message, e);
      throw e;
    }
    const j = (await res.json()) as { instance_id: string; access_token: string; token_type: string; expires_in: number };
    return {
      instanceId: j.instance_id,
      accessToken: j.access_token,
      tokenType: j.token_type,
      expiresAt: Date.now() + j.expires_in * 1000,
      lifetimeMs: j.expires_in * 1000,
    };
  }

  private margin(inst: Instance): number {
    return this.opts.reattestBeforeMs ?? Math.max(30_000, inst.lifetimeMs / 5);
  }

  private renewable(): boolean {
    const a = this.opts.attestation;
    return !("joinToken" in a) || typeof a.joinToken === "function";
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    const inst = this.current;
    if (!inst || !this.renewable()) return;
    const wait = Math.max(1000, inst.expiresAt - this.margin(inst) - Date.now());
    this.timer = setTimeout(() => {
      this.attest().catch(() => undefined); // the next call that needs it tries again and throws
    }, wait);
    this.timer.unref();
  }

  /** A live instance token: attests first, or again when it nears expiry. */
  async instanceToken(): Promise<Instance> {
    const inst = this.current;
    if (!inst) return this.attest();
    if (inst.expiresAt - Date.now() < this.margin(inst) && this.renewable()) return this.attest();
    return inst;
  }

  /** Stops background work (re-attestation). */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** @internal A request with an agent token (instance, task or tool) and a proof. */
  async agentRequest(path: string, token: string, scheme: string, init: RequestInit = {}): Promise<Response> {
    const key = await this.key();
    return send(this.url(path), init, {
      fetch: this.fetchImpl,
      key: scheme === "DPoP" ? key : undefined,
      nonces: this.nonces,
      accessToken: token,
      scheme: scheme === "DPoP" ? "DPoP" : "Bearer",
    });
  }

  /** @internal RFC 8693 token exchange at the token endpoint, with this key's proof. */
  async tokenRequest(form: Record<string, string>): Promise<Response> {
    const key = await this.key();
    return send(
      this.url(TOKEN_ENDPOINT),
      {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(form).toString(),
      },
      { fetch: this.fetchImpl, key, nonces: this.nonces, proofWithoutAth: true },
    );
  }

  /**
   * What a planner needs to delegate to this instance: its instance token
   * and a proof by its key that it takes part (`actor_token_proof`: a DPoP
   * proof for `POST` to the token endpoint with `ath` of the instance
   * token). Good once, within a minute.
   */
  async actorCredentials(): Promise<{ actorToken: string; actorTokenProof?: string }> {
    const inst = await this.instanceToken();
    const key = await this.key();
    if (!key || inst.tokenType !== "DPoP") return { actorToken: inst.accessToken };
    const proof = await key.proof({
      method: "POST",
      url: this.url(TOKEN_ENDPOINT),
      accessToken: inst.accessToken,
      nonce: this.nonces.get(this.url(TOKEN_ENDPOINT)),
    });
    return { actorToken: inst.accessToken, actorTokenProof: proof };
  }

  /**
   * Starts a task. Resolves to the task, or to a `PendingTask` while a
   * person decides (`await pending.wait({ timeoutMs })` for the task).
   */
  async startTask(opts: TaskOptions): Promise<Task | PendingTask> {
    const inst = await this.instanceToken();
    const body: Record<string, unknown> = {
      intent: opts.intent,
      capabilities: capabilityList(opts.capabilities),
    };
    if (opts.onBehalfOf !== undefined) body.on_behalf_of = opts.onBehalfOf;
    if (opts.ttlSeconds !== undefined) body.ttl = opts.ttlSeconds;
    if (opts.justification !== undefined) body.justification = opts.justification;
    const res = await this.agentRequest("/v1/tasks", inst.accessToken, inst.tokenType, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (res.status === 201) return new Task(this, (await res.json()) as TaskToken, opts);
    if (res.status === 202) {
      const p = (await res.json()) as { task_id: string; approval_id: string };
      return new PendingTask(this, p.task_id, p.approval_id, inst, opts);
    }
    throw await errorFromResponse(res, "start task");
  }

  /**
   * Runs `body` inside a task: starts it (waiting for an approval up to
   * `approvalTimeoutMs`), heartbeats in the background, completes it when
   * `body` returns, and ends it too when `body` throws or `signal` aborts.
   */
  async withTask<T>(opts: TaskOptions, body: (task: Task) => Promise<T>): Promise<T> {
    opts.signal?.throwIfAborted();
    let started = await this.startTask(opts);
    if (started instanceof PendingTask) {
      opts.onPending?.(started);
      started = await started.wait({ timeoutMs: opts.approvalTimeoutMs ?? 300_000, signal: opts.signal });
    }
    return started.run(body);
  }

  /**
   * Takes up a task delegated to this instance (what the planner's
   * `task.delegate` returned): heartbeats, tool tokens and the rest, with
   * this instance's key, ended when `body` returns or throws.
   */
  async withDelegation<T>(grant: DelegatedGrant, body: (task: Task) => Promise<T>, opts: { signal?: AbortSignal } = {}): Promise<T> {
    return (await this.adopt(grant, opts)).run(body);
  }

  /** A delegated task as a `Task` of this instance (heartbeating once to learn its lease). */
  async adopt(grant: DelegatedGrant, opts: { signal?: AbortSignal; heartbeatIntervalMs?: number } = {}): Promise<Task> {
    const task = new Task(
      this,
      {
        task_id: grant.taskId,
        access_token: grant.accessToken,
        token_type: grant.tokenType,
        expires_in: grant.expiresIn,
        scope: grant.scope,
        lease_expires_at: Date.now(),
      },
      { intent: "", capabilities: {}, signal: opts.signal, heartbeatIntervalMs: opts.heartbeatIntervalMs },
    );
    await task.heartbeat();
    return task;
  }

  /**
   * Why a task's grants stopped working: its own record if its tokens can
   * still read it; otherwise attestation tells whether the agent is
   * quarantined (writ says so only to a real credential).
   */
  async whyEnded(taskId: string, taskToken: string, tokenType: string): Promise<WritError> {
    const read = async (token: string, scheme: string): Promise<Response> =>
      this.agentRequest(`/v1/tasks/${encodeURIComponent(taskId)}`, token, scheme);
    for (const [token, scheme] of [
      [taskToken, tokenType],
      ...(this.current ? [[this.current.accessToken, this.current.tokenType]] : []),
    ] as [string, string][]) {
      const res = await read(token, scheme);
      if (res.status === 200) {
        const t = (await res.json()) as { status: string; end_reason?: string };
        if (/quarantin/i.test(t.end_reason ?? "")) {
          return new Quarantined(`task ${taskId} ended: ${t.end_reason}`, { status: 403 });
        }
        if (t.status !== "active") {
          return new TaskEnded(`task ${taskId} is ${t.status}${t.end_reason ? ` (${t.end_reason})` : ""}`, {
            taskId,
            taskStatus: t.status,
            reason: t.end_reason,
          });
        }
        return new WritError(`task ${taskId} is active, but its token was refused`);
      }
      await res.body?.cancel().catch(() => undefined);
    }
    // The instance itself is revoked: a quarantine revokes every instance.
    try {
      const body: Record<string, string> =
        this.spentJoinToken && "joinToken" in this.opts.attestation
          ? { join_token: this.spentJoinToken }
          : await this.credential();
      const inst = await this.postAttest({ agent: this.agent, ...body });
      this.current = inst;
      this.schedule();
    } catch (e) {
      if (e instanceof Quarantined) return e;
    }
    return new TaskEnded(`task ${taskId} ended: its instance was revoked`, {
      taskId,
      taskStatus: "revoked",
      reason: "instance revoked",
    });
  }
}

/** `{tickets: ["read"]}` or `[{tool, scopes}]` as the API's list. */
export function capabilityList(c: Capabilities): { tool: string; scopes: string[] }[] {
  if (Array.isArray(c)) return c.map((x) => ({ tool: x.tool, scopes: [...x.scopes] }));
  return Object.entries(c).map(([tool, scopes]) => ({ tool, scopes: [...scopes] }));
}
