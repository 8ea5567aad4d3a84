//! SQLite schema, applied in order and tracked by `PRAGMA user_version`.

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE admin_tokens (
    hash        TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);
CREATE TABLE agents (
    name        TEXT PRIMARY KEY,
    spiffe_id   TEXT NOT NULL,
    attestation TEXT NOT NULL,
    attributes  TEXT NOT NULL,
    quarantined INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE TABLE join_tokens (
    hash        TEXT PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents(name),
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE TABLE tools (
    name        TEXT PRIMARY KEY,
    audience    TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE instances (
    id          TEXT PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents(name),
    attestation TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX instances_agent ON instances(agent);
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    agent            TEXT NOT NULL REFERENCES agents(name),
    instance_id      TEXT NOT NULL REFERENCES instances(id),
    intent           TEXT NOT NULL,
    capabilities     TEXT NOT NULL,
    on_behalf_of     TEXT,
    status           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    lease_expires_at INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    end_reason       TEXT,
    policy_version   TEXT NOT NULL
);
CREATE INDEX tasks_active_deadline ON tasks(lease_expires_at) WHERE status = 'active';
CREATE INDEX tasks_agent ON tasks(agent);
CREATE TABLE grants (
    jti         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    agent       TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    task_id     TEXT,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX grants_task ON grants(task_id);
CREATE INDEX grants_agent ON grants(agent);
CREATE TABLE revocations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER NOT NULL
);
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    event       TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
    // 2: delegation (parent tasks, depth) and sender constraint (DPoP jkt).
    r#"
ALTER TABLE tasks ADD COLUMN parent_id TEXT REFERENCES tasks(id);
ALTER TABLE tasks ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN jkt TEXT;
ALTER TABLE grants ADD COLUMN jkt TEXT;
ALTER TABLE grants ADD COLUMN audience TEXT;
CREATE INDEX tasks_parent ON tasks(parent_id);
"#,
    // 3: versioned policy sets and when each became live.
    r#"
CREATE TABLE policy_sets (
    version         TEXT PRIMARY KEY,
    sources         TEXT NOT NULL,
    first_loaded_at INTEGER NOT NULL
);
CREATE TABLE policy_history (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    version     TEXT NOT NULL REFERENCES policy_sets(version),
    origin      TEXT NOT NULL,
    loaded_at   INTEGER NOT NULL
);
"#,
    // 4: tool attributes (policy tags).
    r#"
ALTER TABLE tools ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
"#,
    // 5: approvals and exceptions.
    r#"
ALTER TABLE tasks ADD COLUMN exception INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN ttl INTEGER NOT NULL DEFAULT 0;
CREATE TABLE approvals (
    id            TEXT PRIMARY KEY,
    task_id       TEXT NOT NULL UNIQUE REFERENCES tasks(id),
    status        TEXT NOT NULL,
    ttl           INTEGER NOT NULL,
    exception     INTEGER NOT NULL,
    justification TEXT,
    requested_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    decided_at    INTEGER,
    reason        TEXT
);
CREATE INDEX approvals_pending ON approvals(expires_at) WHERE status = 'pending';
"#,
    // 6: gateways: tool upstreams, sealed upstream secrets, gateway
    // credentials and how far each gateway's decisions are recorded.
    r#"
ALTER TABLE tools ADD COLUMN upstream TEXT;
CREATE TABLE tool_secrets (
    tool        TEXT PRIMARY KEY REFERENCES tools(name),
    header      TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE gateways (
    name        TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    acked_seq   INTEGER NOT NULL DEFAULT 0
);
"#,
    // 7: the shadow policy set, kept across restarts.
    r#"
CREATE TABLE shadow_policy (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    version     TEXT NOT NULL,
    sources     TEXT NOT NULL,
    set_at      INTEGER NOT NULL
);
"#,
    // 8: gateway credentials can be revoked.
    r#"
ALTER TABLE gateways ADD COLUMN revoked_at INTEGER;
"#,
    // 9: database roles created for tasks (dynamic credentials).
    r#"
CREATE TABLE db_leases (
    role        TEXT PRIMARY KEY,
    task_id     TEXT NOT NULL REFERENCES tasks(id),
    tool        TEXT NOT NULL REFERENCES tools(name),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    -- 1 once the role exists in the database (and was handed out).
    created     INTEGER NOT NULL DEFAULT 0,
    -- Not tried again before then (a drop that failed).
    retry_at    INTEGER NOT NULL DEFAULT 0,
    dropped_at  INTEGER
);
CREATE INDEX db_leases_live ON db_leases(task_id) WHERE dropped_at IS NULL;
"#,
    // 10: SPIFFE: agents' workloads, nodes and their join tokens, the
    // trust domain's X.509 authority and JWT-SVID keys.
    r#"
ALTER TABLE agents ADD COLUMN workload TEXT;
CREATE TABLE nodes (
    name        TEXT PRIMARY KEY,
    attestation TEXT NOT NULL,
    quarantined INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    token_hash  TEXT UNIQUE,
    attested_at INTEGER
);
CREATE TABLE node_join_tokens (
    hash        TEXT PRIMARY KEY,
    node        TEXT NOT NULL REFERENCES nodes(name),
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE TABLE spiffe_keys (
    kid         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    cert        BLOB,
    created_at  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL
);
"#,
    // 11: requests held for a person's approval (call approvals), and
    // refusals counted per agent in 10-second buckets, shared by replicas.
    r#"
CREATE TABLE call_approvals (
    id            TEXT PRIMARY KEY,
    task_id       TEXT NOT NULL REFERENCES tasks(id),
    fingerprint   TEXT NOT NULL,
    -- The ApprovalCall as JSON, without used_at (kept in its own column).
    call          TEXT NOT NULL,
    status        TEXT NOT NULL,
    ttl           INTEGER NOT NULL DEFAULT 0,
    exception     INTEGER NOT NULL DEFAULT 0,
    justification TEXT,
    requested_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    decided_at    INTEGER,
    reason        TEXT,
    used_at       INTEGER
);
CREATE INDEX call_approvals_task ON call_approvals(task_id, fingerprint);
CREATE INDEX call_approvals_pending ON call_approvals(expires_at) WHERE status = 'pending';
CREATE TABLE denials (
    agent       TEXT NOT NULL,
    bucket      INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (agent, bucket)
);
"#,
    // 12: when each agent's refusals were last forgotten (a release):
    // a refusal made before it, delivered late by a gateway, is not counted.
    r#"
CREATE TABLE denials_cleared (
    agent       TEXT PRIMARY KEY,
    at          INTEGER NOT NULL
);
"#,
    // 13: admin credentials have names (those from before are named by
    // their hash's start) and say whether a dev start made them.
    r#"
ALTER TABLE admin_tokens ADD COLUMN name TEXT;
ALTER TABLE admin_tokens ADD COLUMN dev INTEGER NOT NULL DEFAULT 0;
UPDATE admin_tokens SET name = 'admin-' || substr(hash, 1, 12) WHERE name IS NULL;
CREATE UNIQUE INDEX admin_tokens_name ON admin_tokens(name);
"#,
    // 14: signed checkpoints of the audit chain, kept apart from its
    // rows: whoever rewrites the rows cannot sign new ones.
    r#"
CREATE TABLE audit_checkpoints (
    seq         INTEGER PRIMARY KEY,
    token       TEXT NOT NULL
);
"#,
    // 15: the gateway that serves each tool (and alone gets its secret);
    // NULL: the gateway inside `writ serve`.
    r#"
ALTER TABLE tools ADD COLUMN gateway TEXT;
"#,
    // 16: OAuth clients of introspection and revocation (resource servers,
    // gateways): a hashed secret (client_secret_basic) or a public JWKS
    // (private_key_jwt), and the client assertions already used, kept
    // until they expire so none is accepted twice.
    r#"
CREATE TABLE oauth_clients (
    client_id   TEXT PRIMARY KEY,
    secret_hash TEXT,
    jwks        TEXT,
    audiences   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE TABLE client_assertions (
    client_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
"#,
    // 17: the public keys gateways sign transaction tokens with, published
    // in the broker's JWKS while their gateway's credential lives.
    r#"
CREATE TABLE gateway_keys (
    kid         TEXT PRIMARY KEY,
    gateway     TEXT NOT NULL,
    jwk         TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
"#,
    // 18: operator credentials carry a role (those from before are
    // admins); an approval names the operator who decided it; agents and
    // tools can be deleted (the row stays, so the name stays reserved and
    // what refers to it stays valid).
    r#"
ALTER TABLE admin_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE approvals ADD COLUMN decided_by TEXT;
ALTER TABLE call_approvals ADD COLUMN decided_by TEXT;
ALTER TABLE agents ADD COLUMN deleted_at INTEGER;
ALTER TABLE tools ADD COLUMN deleted_at INTEGER;
"#,
    // 19: an operator credential from a single sign-on session ends at
    // its expiry (credentials made by a person have none); an approval
    // may say the person its task acts for may decide it.
    r#"
ALTER TABLE admin_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE approvals ADD COLUMN obo_may_approve INTEGER NOT NULL DEFAULT 0;
"#,
    // 20: identity tokens operators signed in with (a hash of their
    // issuer and `jti`, or of the token), kept until they could no longer
    // be accepted anyway, so that none signs anybody in twice.
    r#"
CREATE TABLE used_identity_tokens (
    key         TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX used_identity_tokens_expiry ON used_identity_tokens(expires_at);
"#,
    // 21: sessions of the operator console: a short-lived, revocable
    // secret with the name and role of the operator credential that signed
    // in, and whether a dev start made it (kept apart from the
    // credentials, whose names are unique).
    r#"
CREATE TABLE console_sessions (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    dev         INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX console_sessions_name ON console_sessions(name);
"#,
    // 22: detection rules. Events counted per rule and agent in one-second
    // buckets (shared by every replica); rules that fire once per subject
    // (an exception nearing its end); attestation sources each agent has
    // used; automatic releases of quarantines a rule made; agents whose
    // tasks a rule holds for approval; and how often each exception task
    // was used.
    r#"
CREATE TABLE rule_counts (
    rule        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    bucket      INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (rule, subject, bucket)
);
CREATE TABLE rule_fired_once (
    rule        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (rule, subject)
);
CREATE TABLE attestation_sources (
    agent       TEXT NOT NULL,
    source      TEXT NOT NULL,
    first_at    INTEGER NOT NULL,
    PRIMARY KEY (agent, source)
);
CREATE TABLE rule_releases (
    agent       TEXT PRIMARY KEY,
    rule        TEXT NOT NULL,
    release_at  INTEGER NOT NULL
);
CREATE TABLE approval_holds (
    agent       TEXT PRIMARY KEY,
    rule        TEXT NOT NULL,
    until_at    INTEGER NOT NULL
);
ALTER TABLE tasks ADD COLUMN exception_uses INTEGER NOT NULL DEFAULT 0;
"#,
    // 23: audit sinks. Per sink, the last audit sequence it acknowledged
    // (records are delivered after it, in order, at least once), which
    // replica delivers to it while its lease lasts, and its last error.
    r#"
CREATE TABLE audit_sinks (
    name        TEXT PRIMARY KEY,
    acked       INTEGER NOT NULL,
    holder      TEXT,
    lease_until INTEGER NOT NULL,
    last_error  TEXT,
    updated_at  INTEGER NOT NULL
);
"#,
    // 24: retention. Indexes to find expired grants and ended tasks
    // without a scan; how far the audit log was archived (to segment
    // files, each head signed), and a delete guard that lets records go
    // only up to there.
    r#"
CREATE INDEX grants_expiry ON grants(expires_at);
CREATE INDEX tasks_ended ON tasks(ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE audit_archive (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    archived_through INTEGER NOT NULL,
    segment_hash     TEXT NOT NULL
);
DROP TRIGGER audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
WHEN OLD.seq > COALESCE((SELECT archived_through FROM audit_archive WHERE id = 1), 0)
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only (only archived records may be removed)'); END;
"#,
    // 25: instance retention. Expired instances no task names any more
    // are pruned; the indexes find them, and the tasks naming one,
    // without a scan (the foreign key's check on delete uses the second).
    r#"
CREATE INDEX instances_expiry ON instances(expires_at);
CREATE INDEX tasks_instance ON tasks(instance_id);
"#,
];
