// MCP through writ's gateway with the MCP TypeScript SDK's
// StreamableHTTPClientTransport: the authorization server found by RFC 9728
// discovery from the gateway's 401, a tool token bound to the agent's key,
// and a DPoP proof on every request the transport makes.

import {
  StreamableHTTPClientTransport,
  type StreamableHTTPClientTransportOptions,
} from "@modelcontextprotocol/sdk/client/streamableHttp.js";

import { Denied, PendingApproval, WritError } from "./errors.js";
import type { FetchLike } from "./http.js";
import type { Task } from "./task.js";

/** RFC 9728 protected resource metadata, as the gateway publishes it per tool. */
export interface ProtectedResource {
  resource: string;
  authorizationServers: string[];
  /** The tool's name at writ (the audience to exchange for). */
  tool: string;
  scopesSupported: string[];
  metadataUrl: string;
}

/** The `resource_metadata` parameter of a `WWW-Authenticate` challenge. */
export function resourceMetadataUrl(wwwAuthenticate: string): string | undefined {
  const m = /resource_metadata="([^"]+)"/.exec(wwwAuthenticate) ?? /resource_metadata=([^\s,]+)/.exec(wwwAuthenticate);
  return m?.[1];
}

/**
 * Asks the resource without a credential; from its 401's `WWW-Authenticate`
 * (RFC 9728 §5.1) reads where its metadata is, and fetches it.
 */
export async function discover(url: string | URL, fetchImpl: FetchLike = (u, i) => fetch(u, i)): Promise<ProtectedResource> {
  const probe = await fetchImpl(url, { method: "GET", headers: { accept: "application/json, text/event-stream" } });
  await probe.body?.cancel().catch(() => undefined);
  const challenge = probe.headers.get("www-authenticate") ?? "";
  const metadataUrl = probe.status === 401 ? resourceMetadataUrl(challenge) : undefined;
  if (!metadataUrl) {
    throw new WritError(`${String(url)} did not answer 401 with resource_metadata (got ${probe.status})`, { status: probe.status });
  }
  const res = await fetchImpl(metadataUrl, { headers: { accept: "application/json" } });
  if (!res.ok) throw new WritError(`resource metadata ${metadataUrl}: ${res.status}`, { status: res.status });
  const m = (await res.json()) as Record<string, unknown>;
  const servers = Array.isArray(m.authorization_servers) ? m.authorization_servers.filter((s): s is string => typeof s === "string") : [];
  const resource = typeof m.resource === "string" ? m.resource : "";
  const tool = typeof m.resource_name === "string" ? m.resource_name : resource;
  // RFC 9728 §3.3: the metadata must be about the resource that was asked.
  const asked = new URL(url);
  if (!resource || !`${asked.origin}${asked.pathname}`.startsWith(resource.replace(/\/+$/, ""))) {
    throw new WritError(`resource metadata names ${resource || "nothing"}, not ${String(url)}`);
  }
  return {
    resource,
    authorizationServers: servers,
    tool,
    scopesSupported: Array.isArray(m.scopes_supported) ? m.scopes_supported.filter((s): s is string => typeof s === "string") : [],
    metadataUrl,
  };
}

const origin = (u: string): string => new URL(u).href.replace(/\/+$/, "");

export interface McpTransportOptions extends Omit<StreamableHTTPClientTransportOptions, "fetch" | "authProvider"> {
  /** MCP tool names to ask for (default: all the task holds for the server). */
  scopes?: readonly string[];
}

/**
 * A `StreamableHTTPClientTransport` for an MCP server behind writ's
 * gateway, authorized by the task: `await client.connect(await
 * mcpTransport(task, url))`, then `client.callTool(...)`.
 */
export async function mcpTransport(task: Task, url: string | URL, opts: McpTransportOptions = {}): Promise<StreamableHTTPClientTransport> {
  const { scopes, ...rest } = opts;
  const fetchImpl = task.fetchImplementation;
  const meta = await discover(url, fetchImpl);
  const broker = task.brokerUrl;
  if (!meta.authorizationServers.some((s) => origin(s) === origin(broker))) {
    throw new WritError(`${String(url)} is protected by ${meta.authorizationServers.join(", ") || "no server"}, not by ${broker}`);
  }
  return new StreamableHTTPClientTransport(new URL(url), { ...rest, fetch: task.fetch(meta.tool, { scopes }) });
}

/**
 * The gateway refuses a `tools/call` with JSON-RPC error -32001 naming the
 * policies and version, or an approval: as `Denied` or `PendingApproval`.
 * Anything else is returned unchanged.
 */
export function asWritError(e: unknown): unknown {
  const err = e as { code?: unknown; data?: unknown; message?: unknown };
  if (!err || err.code !== -32001) return e;
  const data = (err.data ?? {}) as Record<string, unknown>;
  const message = typeof err.message === "string" ? err.message : "refused by writ";
  const info = { code: "-32001", detail: message, body: data, cause: e };
  if (typeof data.approval_id === "string") {
    return new PendingApproval(message, { ...info, approvalId: data.approval_id, taskId: typeof data.task === "string" ? data.task : undefined });
  }
  return new Denied(message, {
    ...info,
    status: 403,
    determiningPolicies: Array.isArray(data.determining_policies) ? data.determining_policies.filter((p): p is string => typeof p === "string") : [],
    policyVersion: typeof data.policy_version === "string" ? data.policy_version : undefined,
  });
}

/** Runs an MCP client call; a refusal by writ comes back as `Denied` or `PendingApproval`. */
export async function writCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    throw asWritError(e);
  }
}
