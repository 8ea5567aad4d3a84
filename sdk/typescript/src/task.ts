// A task: its token, its lease kept alive in the background, the tool
// tokens exchanged under it, and its sub-agents.

import type { Client, Instance } from "./client.js";
import { Denied, PendingApproval, Quarantined, TaskEnded, WritError, errorFromResponse } from "./errors.js";
import { send, type FetchLike } from "./http.js";

/** `{tickets: ["read"]}`, or the API's list form. */
export type Capabilities = Record<string, readonly string[]> | readonly { tool: string; scopes: readonly string[] }[];

export interface TaskOptions {
  /** The declared purpose, seen by policy and in the audit. */
  intent: string;
  capabilities: Capabilities;
  /** The human the agent acts for, e.g. `user:alice`. */
  onBehalfOf?: string;
  /** Hard maximum lifetime in seconds. */
  ttlSeconds?: number;
  /** Why a lifetime beyond the broker's maximum is needed. */
  justification?: string;
  /** Aborting it ends the task. */
  signal?: AbortSignal;
  /** How long `withTask` waits for a person's approval (default 5 min); past it, `PendingApproval`. */
  approvalTimeoutMs?: number;
  /** Called once when the task waits for approval. */
  onPending?: (pending: PendingTask) => void;
  /** Heartbeat period; by default a third of the lease. */
  heartbeatIntervalMs?: number;
}

/** @internal The broker's answer to a task start or heartbeat. */
export interface TaskToken {
  task_id: string;
  access_token: string;
  token_type: string;
  expires_in: number;
  lease_expires_at: number;
  scope: string;
}

export interface ToolToken {
  accessToken: string;
  tokenType: string;
  scope: string;
  expiresAt: number;
}

/** A task delegated to a sub-agent: what it takes up with `client.withDelegation(grant, ...)`. */
export interface DelegatedGrant {
  taskId: string;
  accessToken: string;
  tokenType: string;
  expiresIn: number;
  scope: string;
}

export interface DelegateOptions {
  /** The sub-agent: its `Client`, or the credentials it handed over (`client.actorCredentials()`). */
  actor: Client | { actorToken: string; actorTokenProof?: string };
  /** What it may do: `{tickets: ["read"]}` or `["tickets:read"]`; never more than this task holds. */
  scopes: Record<string, readonly string[]> | readonly string[];
}

/** A cached tool token is exchanged again when it has less than this left. */
const TOOL_TOKEN_MARGIN_MS = 30_000;
const EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token";

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** A task waiting for a person: `await wait()` for the task once approved. */
export class PendingTask {
  constructor(
    private readonly client: Client,
    readonly taskId: string,
    readonly approvalId: string,
    private readonly instance: Instance,
    private readonly opts: TaskOptions,
  ) {}

  /** Asks once: the task if approved, `undefined` while undecided; throws `Denied` once denied. */
  async poll(): Promise<Task | undefined> {
    const inst = await this.client.instanceToken().catch(() => this.instance);
    const res = await this.client.agentRequest(`/v1/tasks/${encodeURIComponent(this.taskId)}/heartbeat`, inst.accessToken, inst.tokenType, {
      method: "POST",
    });
    if (res.status === 200) return new Task(this.client, (await res.json()) as TaskToken, this.opts);
    if (res.status === 202) {
      await res.body?.cancel().catch(() => undefined);
      return undefined;
    }
    const e = await errorFromResponse(res, `approval ${this.approvalId}`);
    if (res.status === 403 && !(e instanceof Denied)) {
      throw new Denied(`task ${this.taskId}: approval ${this.approvalId} was denied (${e.detail ?? ""})`, e);
    }
    throw e;
  }

  /** Waits for the decision (polling), up to `timeoutMs`; then `PendingApproval` (catch it and wait again if you like). */
  async wait(opts: { timeoutMs?: number; pollMs?: number; signal?: AbortSignal } = {}): Promise<Task> {
    const deadline = Date.now() + (opts.timeoutMs ?? 300_000);
    for (;;) {
      opts.signal?.throwIfAborted();
      const t = await this.poll();
      if (t) return t;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new PendingApproval(`task ${this.taskId} is still waiting for approval ${this.approvalId}`, {
          approvalId: this.approvalId,
          taskId: this.taskId,
          pending: this,
        });
      }
      await sleep(Math.min(opts.pollMs ?? 1000, left), opts.signal);
    }
  }
}

export class Task {
  readonly id: string;
  private token: string;
  private tokenType: string;
  private leaseExpiresAt: number;
  /** The scopes the task token carries (`tool:scope ...`). */
  scope: string;
  private ended?: WritError;
  private readonly controller = new AbortController();
  private readonly tools = new Map<string, Promise<ToolToken>>();
  private timer?: NodeJS.Timeout;
  private running = false;
  private completed = false;

  constructor(
    private readonly client: Client,
    t: TaskToken,
    private readonly opts: TaskOptions,
  ) {
    this.id = t.task_id;
    this.token = t.access_token;
    this.tokenType = t.token_type;
    this.leaseExpiresAt = t.lease_expires_at;
    this.scope = t.scope;
  }

  /** Aborted when the task ends under the agent (lapsed, revoked, quarantined) or its caller cancels. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** The task token (for tools that take it directly). */
  get accessToken(): string {
    return this.token;
  }

  /** When the lease lapses without a heartbeat (ms since the epoch). */
  get leaseExpiry(): number {
    return this.leaseExpiresAt;
  }

  /** The broker this task's client talks to. */
  get brokerUrl(): string {
    return this.client.baseUrl;
  }

  /** The plain fetch the client uses (no credentials added). */
  get fetchImplementation(): FetchLike {
    return this.client.fetchImpl;
  }

  /** @internal Runs `body` as the task's scope. */
  async run<T>(body: (task: Task) => Promise<T>): Promise<T> {
    const outer = this.opts.signal;
    const onAbort = (): void => this.controller.abort(outer?.reason);
    if (outer?.aborted) onAbort();
    else outer?.addEventListener("abort", onAbort, { once: true });
    this.running = true;
    this.scheduleHeartbeat();
    try {
      const cancelled = new Promise<never>((_, reject) => {
        const fail = (): void => {
          // Completed from inside the scope: the body finishes on its own.
          if (!this.completed) reject(this.ended ?? outer?.reason ?? this.controller.signal.reason);
        };
        if (this.controller.signal.aborted) fail();
        else this.controller.signal.addEventListener("abort", fail, { once: true });
      });
      cancelled.catch(() => undefined);
      return await Promise.race([body(this), cancelled]);
    } finally {
      outer?.removeEventListener("abort", onAbort);
      this.running = false;
      if (this.timer) clearTimeout(this.timer);
      if (!this.ended) await this.complete().catch(() => undefined);
    }
  }

  private scheduleHeartbeat(delay?: number): void {
    if (!this.running || this.ended) return;
    const every = this.opts.heartbeatIntervalMs ?? Math.min(60_000, Math.max(250, (this.leaseExpiresAt - Date.now()) / 3));
    this.timer = setTimeout(() => {
      this.heartbeat().then(
        () => this.scheduleHeartbeat(),
        () => {
          // Ended: heartbeat() recorded why. Otherwise (a network failure), try again soon.
          if (!this.ended) this.scheduleHeartbeat(Math.max(250, Math.min(1000, (this.leaseExpiresAt - Date.now()) / 4)));
        },
      );
    }, delay ?? every);
    this.timer.unref();
  }

  private end(e: WritError): WritError {
    if (!this.ended) {
      this.ended = e;
      this.controller.abort(e);
      if (this.timer) clearTimeout(this.timer);
    }
    return this.ended;
  }

  /** Throws what ended the task, if it has; or the caller's abort reason. */
  private check(): void {
    if (this.ended) throw this.ended;
    this.controller.signal.throwIfAborted();
  }

  /** A grant stopped working: find out why, and remember it. */
  private async failed(): Promise<WritError> {
    return this.end(await this.client.whyEnded(this.id, this.token, this.tokenType));
  }

  /** Renews the lease (and the task token) now. */
  async heartbeat(): Promise<void> {
    this.check();
    const res = await this.client.agentRequest(`/v1/tasks/${encodeURIComponent(this.id)}/heartbeat`, this.token, this.tokenType, {
      method: "POST",
    });
    if (res.status === 200) {
      const t = (await res.json()) as TaskToken;
      this.token = t.access_token;
      this.tokenType = t.token_type;
      this.leaseExpiresAt = t.lease_expires_at;
      this.scope = t.scope;
      return;
    }
    if (res.status === 401 || res.status === 409 || res.status === 403 || res.status === 404) {
      await res.body?.cancel().catch(() => undefined);
      throw await this.failed();
    }
    throw await errorFromResponse(res, `heartbeat ${this.id}`);
  }

  /** Ends the task: every token issued under it, and every delegated task, stops working. */
  async complete(): Promise<void> {
    if (this.ended) return;
    if (this.timer) clearTimeout(this.timer);
    const res = await this.client.agentRequest(`/v1/tasks/${encodeURIComponent(this.id)}/complete`, this.token, this.tokenType, {
      method: "POST",
    });
    if (res.status !== 200) throw await errorFromResponse(res, `complete ${this.id}`);
    await res.body?.cancel().catch(() => undefined);
    this.completed = true;
    this.end(new TaskEnded(`task ${this.id} is completed`, { taskId: this.id, taskStatus: "completed" }));
  }

  /**
   * A tool token (RFC 8693 exchange): audience the tool (name or audience
   * URI), scopes narrowed to `scopes` (all the task holds for it when
   * omitted). Cached until shortly before it expires.
   */
  async tokenFor(tool: string, opts: { scopes?: readonly string[] } = {}): Promise<ToolToken> {
    this.check();
    const scopes = opts.scopes ? [...opts.scopes].sort() : undefined;
    const key = `${tool}\u0000${scopes?.join(" ") ?? "*"}`;
    const cached = this.tools.get(key);
    if (cached) {
      const t = await cached.catch(() => undefined);
      if (t && t.expiresAt - Date.now() > TOOL_TOKEN_MARGIN_MS) return t;
      if (this.tools.get(key) === cached) this.tools.delete(key);
    }
    const p = this.exchange(tool, scopes);
    this.tools.set(key, p);
    p.catch(() => {
      if (this.tools.get(key) === p) this.tools.delete(key);
    });
    return p;
  }

  /** Forgets a cached tool token (after the tool refused it). */
  forgetToken(tool: string): void {
    for (const k of this.tools.keys()) if (k.startsWith(`${tool}\u0000`)) this.tools.delete(k);
  }

  private async exchange(tool: string, scopes?: string[]): Promise<ToolToken> {
    const form: Record<string, string> = {
      grant_type: EXCHANGE,
      subject_token: this.token,
      subject_token_type: ACCESS_TOKEN,
      audience: tool,
    };
    if (scopes) form.scope = scopes.join(" ");
    const res = await this.client.tokenRequest(form);
    if (res.status === 200) {
      const j = (await res.json()) as { access_token: string; token_type: string; scope: string; expires_in: number };
      return { accessToken: j.access_token, tokenType: j.token_type, scope: j.scope, expiresAt: Date.now() + j.expires_in * 1000 };
    }
    return this.refused(res, `token for ${tool}`);
  }

  private async refused(res: Response, what: string): Promise<never> {
    const e = await errorFromResponse(res, what);
    if (e.code === "invalid_grant" && /no longer active|revoked|expired|not active/i.test(e.detail ?? "")) throw await this.failed();
    throw e;
  }

  /**
   * Delegates part of this task to a sub-agent: a child task bound to the
   * sub-agent's key, with its proof that it takes part. The sub-agent
   * takes it up with `withDelegation(grant, ...)`.
   */
  async delegate(opts: DelegateOptions): Promise<DelegatedGrant> {
    this.check();
    const actor = "actorCredentials" in opts.actor ? await opts.actor.actorCredentials() : opts.actor;
    const scope = Array.isArray(opts.scopes)
      ? (opts.scopes as readonly string[]).join(" ")
      : Object.entries(opts.scopes as Record<string, readonly string[]>)
          .flatMap(([tool, ss]) => ss.map((s) => `${tool}:${s}`))
          .join(" ");
    const form: Record<string, string> = {
      grant_type: EXCHANGE,
      subject_token: this.token,
      subject_token_type: ACCESS_TOKEN,
      actor_token: actor.actorToken,
      actor_token_type: ACCESS_TOKEN,
      scope,
    };
    if (actor.actorTokenProof) form.actor_token_proof = actor.actorTokenProof;
    const res = await this.client.tokenRequest(form);
    if (res.status === 200) {
      const j = (await res.json()) as { access_token: string; token_type: string; scope: string; expires_in: number; task_id: string };
      return { taskId: j.task_id, accessToken: j.access_token, tokenType: j.token_type, expiresIn: j.expires_in, scope: j.scope };
    }
    return this.refused(res, "delegate");
  }

  /**
   * `fetch` for a tool behind writ's gateway: `Authorization: DPoP` with its
   * tool token and a fresh proof per request, the server's `DPoP-Nonce`
   * followed, and on a 401 a new tool token and one more try. A refusal by
   * policy (403 problem details naming the policy version, or an approval)
   * throws `Denied` or `PendingApproval`; other answers are returned.
   */
  fetch(tool: string, opts: { scopes?: readonly string[] } = {}): FetchLike {
    return async (url, init = {}) => {
      const attempt = async (): Promise<Response> => {
        const t = await this.tokenFor(tool, opts);
        const key = t.tokenType === "DPoP" ? await this.client.key() : undefined;
        return send(url, init, {
          fetch: this.client.fetchImpl,
          key,
          nonces: this.client.nonces,
          accessToken: t.accessToken,
          scheme: t.tokenType === "DPoP" ? "DPoP" : "Bearer",
        });
      };
      let res = await attempt();
      if (res.status === 401) {
        await res.body?.cancel().catch(() => undefined);
        this.forgetToken(tool);
        res = await attempt();
        if (res.status === 401) {
          const e = await this.client.whyEnded(this.id, this.token, this.tokenType);
          if (e instanceof TaskEnded || e instanceof Quarantined) throw this.end(e);
          return res;
        }
      }
      if (res.status === 403 && /problem\+json/.test(res.headers.get("content-type") ?? "")) {
        const body = (await res.clone().json().catch(() => undefined)) as Record<string, unknown> | undefined;
        if (body && (body.policy_version || body.approval_id)) throw await errorFromResponse(res, `${init.method ?? "GET"} ${String(url)}`);
      }
      return res;
    };
  }
}
