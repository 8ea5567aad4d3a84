// Every failure the SDK reports is one of these classes: callers branch on
// `instanceof`, never on message text.

/** What writ answered, when the failure came from an HTTP answer. */
export interface WritErrorInfo {
  /** HTTP status. */
  status?: number;
  /** The RFC 6749 `error` code, or the problem's `title`. */
  code?: string;
  /** `error_description` or the problem's `detail`. */
  detail?: string;
  /** The parsed body (problem details or OAuth error), when JSON. */
  body?: unknown;
  cause?: unknown;
}

/** The base of every error the SDK throws. */
export class WritError extends Error {
  readonly status?: number;
  readonly code?: string;
  readonly detail?: string;
  readonly body?: unknown;

  constructor(message: string, info: WritErrorInfo = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = new.target.name;
    this.status = info.status;
    this.code = info.code;
    this.detail = info.detail;
    this.body = info.body;
  }
}

/** Attestation was refused (unknown agent, a used or expired credential). */
export class AttestationFailed extends WritError {}

/** Policy said no: the policies that decided and the policy-set version. */
export class Denied extends WritError {
  readonly determiningPolicies: string[];
  readonly policyVersion?: string;

  constructor(message: string, info: WritErrorInfo & { determiningPolicies?: string[]; policyVersion?: string }) {
    super(message, info);
    this.determiningPolicies = info.determiningPolicies ?? [];
    this.policyVersion = info.policyVersion;
  }
}

/** A person must approve first. `approvalId` names the request they see. */
export class PendingApproval extends WritError {
  readonly approvalId: string;
  readonly taskId?: string;
  /** For a task start: what to `await` to keep waiting (`pending.wait()`). */
  readonly pending?: unknown;

  constructor(message: string, info: WritErrorInfo & { approvalId: string; taskId?: string; pending?: unknown }) {
    super(message, info);
    this.approvalId = info.approvalId;
    this.taskId = info.taskId;
    this.pending = info.pending;
  }
}

/** The agent is quarantined: every grant it held is revoked, and it gets no new ones. */
export class Quarantined extends WritError {}

/** The task is over (completed, lapsed lease, revoked, denied approval); its grants are dead. */
export class TaskEnded extends WritError {
  readonly taskId: string;
  /** `completed`, `expired`, `revoked`, `denied`, or `unknown`. */
  readonly taskStatus: string;
  readonly reason?: string;

  constructor(message: string, info: WritErrorInfo & { taskId: string; taskStatus: string; reason?: string }) {
    super(message, info);
    this.taskId = info.taskId;
    this.taskStatus = info.taskStatus;
    this.reason = info.reason;
  }
}

/** A scope the task does not hold, or one the tool does not have (`invalid_scope`). */
export class InvalidScope extends WritError {}

/** A tool writ does not know, or that the task holds nothing for (`invalid_target`). */
export class InvalidTarget extends WritError {}

/** A DPoP proof was refused (`invalid_dpop_proof`, or `use_dpop_nonce` after a retry). */
export class DpopError extends WritError {}

/** Parses an error answer into the SDK's error types. */
export async function errorFromResponse(res: Response, what: string): Promise<WritError> {
  const text = await res.text().catch(() => "");
  let body: Record<string, unknown> | undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === "object") body = parsed as Record<string, unknown>;
  } catch {
    body = undefined;
  }
  return errorFromBody(res.status, body, text, what, res.headers);
}

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

export function errorFromBody(
  status: number,
  body: Record<string, unknown> | undefined,
  text: string,
  what: string,
  headers?: Headers,
): WritError {
  const code = str(body?.error) ?? str(body?.title);
  const detail = str(body?.error_description) ?? str(body?.detail) ?? (body ? undefined : text.slice(0, 300));
  const info: WritErrorInfo = { status, code, detail, body };
  const message = `${what}: ${status}${code ? ` ${code}` : ""}${detail ? `: ${detail}` : ""}`;
  const wwwAuth = headers?.get("www-authenticate") ?? "";
  if (code === "invalid_dpop_proof" || code === "use_dpop_nonce" || /error="(invalid_dpop_proof|use_dpop_nonce)"/.test(wwwAuth)) {
    return new DpopError(message, info);
  }
  if (/quarantined/i.test(detail ?? "")) return new Quarantined(message, info);
  if (code === "invalid_scope") return new InvalidScope(message, info);
  if (code === "invalid_target") return new InvalidTarget(message, info);
  const approvalId = str(body?.approval_id);
  if (approvalId) {
    return new PendingApproval(message, { ...info, approvalId, taskId: str(body?.task_id) });
  }
  const policyVersion = str(body?.policy_version);
  const policies = Array.isArray(body?.determining_policies) ? (body.determining_policies as unknown[]).filter((p): p is string => typeof p === "string") : [];
  if (status === 403 && (policyVersion || code === "access_denied" || code === "Forbidden")) {
    return new Denied(message, { ...info, determiningPolicies: policies, policyVersion });
  }
  if (code === "unauthorized_client" && /denied/i.test(detail ?? "")) {
    return new Denied(message, { ...info, determiningPolicies: policies, policyVersion });
  }
  return new WritError(message, info);
}
