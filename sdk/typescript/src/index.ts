export { Client, capabilityList, type AttestationMethod, type ClientOptions, type Credential, type Instance } from "./client.js";
export { InstanceKey, accessTokenHash, type KeyAlgorithm, type ProofFor } from "./dpop.js";
export {
  AttestationFailed,
  Denied,
  DpopError,
  InvalidScope,
  InvalidTarget,
  PendingApproval,
  Quarantined,
  TaskEnded,
  WritError,
  errorFromBody,
  errorFromResponse,
  type WritErrorInfo,
} from "./errors.js";
export { Nonces, send, type FetchLike } from "./http.js";
export { PendingTask, Task, type Capabilities, type DelegateOptions, type DelegatedGrant, type TaskOptions, type ToolToken } from "./task.js";
