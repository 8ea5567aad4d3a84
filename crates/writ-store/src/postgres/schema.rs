//! PostgreSQL schema, applied in order and tracked in `writ_schema`.
//!
//! The first migration creates what SQLite reaches after its eighth, in
//! PostgreSQL's types (64-bit integers, `bytea`); later migrations follow
//! both backends in step. Every write transaction holds one advisory lock,
//! so identity columns are assigned in commit order and a reader that
//! resumes from a sequence number never misses a row.

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: everything up to SQLite's 8.
    r#"
CREATE TABLE admin_tokens (
    hash        TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);
CREATE TABLE agents (
    name        TEXT PRIMARY KEY,
    spiffe_id   TEXT NOT NULL,
    attestation TEXT NOT NULL,
    attributes  TEXT NOT NULL,
    quarantined BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);
CREATE TABLE join_tokens (
    hash        TEXT PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents(name),
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    created_at  BIGINT NOT NULL
);
CREATE TABLE tools (
    name        TEXT PRIMARY KEY,
    audience    TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    attributes  TEXT NOT NULL DEFAULT '{}',
    upstream    TEXT
);
CREATE TABLE instances (
    id          TEXT PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents(name),
    attestation TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    jkt         TEXT
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
    created_at       BIGINT NOT NULL,
    lease_expires_at BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    ended_at         BIGINT,
    end_reason       TEXT,
    policy_version   TEXT NOT NULL,
    parent_id        TEXT REFERENCES tasks(id),
    depth            BIGINT NOT NULL DEFAULT 0,
    exception        BIGINT NOT NULL DEFAULT 0,
    ttl              BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_active_deadline ON tasks(lease_expires_at) WHERE status = 'active';
CREATE INDEX tasks_agent ON tasks(agent);
CREATE INDEX tasks_parent ON tasks(parent_id);
CREATE INDEX tasks_created ON tasks(created_at);
CREATE TABLE grants (
    jti         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    agent       TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    task_id     TEXT,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    jkt         TEXT,
    audience    TEXT
);
CREATE INDEX grants_task ON grants(task_id);
CREATE INDEX grants_agent ON grants(agent);
CREATE TABLE revocations (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT NOT NULL
);
CREATE TABLE audit (
    seq         BIGINT PRIMARY KEY,
    ts          BIGINT NOT NULL,
    event       TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE FUNCTION writ_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION writ_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION writ_audit_append_only();
CREATE TABLE policy_sets (
    version         TEXT PRIMARY KEY,
    sources         TEXT NOT NULL,
    first_loaded_at BIGINT NOT NULL
);
CREATE TABLE policy_history (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version     TEXT NOT NULL REFERENCES policy_sets(version),
    origin      TEXT NOT NULL,
    loaded_at   BIGINT NOT NULL
);
CREATE TABLE approvals (
    id            TEXT PRIMARY KEY,
    task_id       TEXT NOT NULL UNIQUE REFERENCES tasks(id),
    status        TEXT NOT NULL,
    ttl           BIGINT NOT NULL,
    exception     BIGINT NOT NULL,
    justification TEXT,
    requested_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    decided_at    BIGINT,
    reason        TEXT
);
CREATE INDEX approvals_pending ON approvals(expires_at) WHERE status = 'pending';
CREATE TABLE tool_secrets (
    tool        TEXT PRIMARY KEY REFERENCES tools(name),
    header      TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE gateways (
    name        TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    acked_seq   BIGINT NOT NULL DEFAULT 0,
    revoked_at  BIGINT
);
CREATE TABLE shadow_policy (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    version     TEXT NOT NULL,
    sources     TEXT NOT NULL,
    set_at      BIGINT NOT NULL
);

-- What other replicas must pick up, announced at commit.
CREATE FUNCTION writ_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('writ_changes', TG_ARGV[0]);
    RETURN NULL;
END $$;
CREATE TRIGGER revocations_announce AFTER INSERT ON revocations
    FOR EACH STATEMENT EXECUTE FUNCTION writ_announce('revocations');
CREATE TRIGGER signing_keys_announce AFTER INSERT OR UPDATE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION writ_announce('keys');
CREATE TRIGGER policy_history_announce AFTER INSERT ON policy_history
    FOR EACH STATEMENT EXECUTE FUNCTION writ_announce('policy');
CREATE TRIGGER shadow_policy_announce AFTER INSERT OR UPDATE OR DELETE ON shadow_policy
    FOR EACH STATEMENT EXECUTE FUNCTION writ_announce('shadow');
"#,
    // 2 (SQLite's 9): database roles created for tasks.
    r#"
CREATE TABLE db_leases (
    role        TEXT PRIMARY KEY,
    task_id     TEXT NOT NULL REFERENCES tasks(id),
    tool        TEXT NOT NULL REFERENCES tools(name),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    -- 1 once the role exists in the database (and was handed out).
    created     BIGINT NOT NULL DEFAULT 0,
    -- Not tried again before then (a drop that failed).
    retry_at    BIGINT NOT NULL DEFAULT 0,
    dropped_at  BIGINT
);
CREATE INDEX db_leases_live ON db_leases(task_id) WHERE dropped_at IS NULL;
"#,
    // 3 (SQLite's 10): SPIFFE: agents' workloads, nodes and their join tokens, the
    // trust domain's X.509 authority and JWT-SVID keys.
    r#"
ALTER TABLE agents ADD COLUMN workload TEXT;
CREATE TABLE nodes (
    name        TEXT PRIMARY KEY,
    attestation TEXT NOT NULL,
    quarantined BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    token_hash  TEXT UNIQUE,
    attested_at BIGINT
);
CREATE TABLE node_join_tokens (
    hash        TEXT PRIMARY KEY,
    node        TEXT NOT NULL REFERENCES nodes(name),
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    created_at  BIGINT NOT NULL
);
CREATE TABLE spiffe_keys (
    kid         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    cert        BYTEA,
    created_at  BIGINT NOT NULL,
    not_after   BIGINT NOT NULL
);
CREATE TRIGGER spiffe_keys_announce AFTER INSERT OR UPDATE ON spiffe_keys
    FOR EACH STATEMENT EXECUTE FUNCTION writ_announce('keys');
"#,
    // 4 (SQLite's 11): requests held for a person's approval (call
    // approvals), and refusals counted per agent in 10-second buckets,
    // shared by replicas.
    r#"
CREATE TABLE call_approvals (
    id            TEXT PRIMARY KEY,
    task_id       TEXT NOT NULL REFERENCES tasks(id),
    fingerprint   TEXT NOT NULL,
    -- The ApprovalCall as JSON, without used_at (kept in its own column).
    call          TEXT NOT NULL,
    status        TEXT NOT NULL,
    ttl           BIGINT NOT NULL DEFAULT 0,
    exception     BIGINT NOT NULL DEFAULT 0,
    justification TEXT,
    requested_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    decided_at    BIGINT,
    reason        TEXT,
    used_at       BIGINT
);
CREATE INDEX call_approvals_task ON call_approvals(task_id, fingerprint);
CREATE INDEX call_approvals_pending ON call_approvals(expires_at) WHERE status = 'pending';
CREATE TABLE denials (
    agent       TEXT NOT NULL,
    bucket      BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (agent, bucket)
);
"#,
    // 12: when each agent's refusals were last forgotten (a release):
    // a refusal made before it, delivered late by a gateway, is not counted.
    r#"
CREATE TABLE denials_cleared (
    agent       TEXT PRIMARY KEY,
    at          BIGINT NOT NULL
);
"#,
    // 13: admin credentials have names (those from before are named by
    // their hash's start) and say whether a dev start made them.
    r#"
ALTER TABLE admin_tokens ADD COLUMN name TEXT;
ALTER TABLE admin_tokens ADD COLUMN dev BIGINT NOT NULL DEFAULT 0;
UPDATE admin_tokens SET name = 'admin-' || substr(hash, 1, 12) WHERE name IS NULL;
CREATE UNIQUE INDEX admin_tokens_name ON admin_tokens(name);
"#,
    // 14: signed checkpoints of the audit chain, kept apart from its
    // rows: whoever rewrites the rows cannot sign new ones.
    r#"
CREATE TABLE audit_checkpoints (
    seq         BIGINT PRIMARY KEY,
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
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE TABLE client_assertions (
    client_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
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
    created_at  BIGINT NOT NULL
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
ALTER TABLE agents ADD COLUMN deleted_at BIGINT;
ALTER TABLE tools ADD COLUMN deleted_at BIGINT;
"#,
    // 19: an operator credential from a single sign-on session ends at
    // its expiry (credentials made by a person have none); an approval
    // may say the person its task acts for may decide it.
    r#"
ALTER TABLE admin_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE approvals ADD COLUMN obo_may_approve BIGINT NOT NULL DEFAULT 0;
"#,
    // 20: identity tokens operators signed in with (a hash of their
    // issuer and `jti`, or of the token), kept until they could no longer
    // be accepted anyway, so that none signs anybody in twice.
    r#"
CREATE TABLE used_identity_tokens (
    key         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
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
    dev         BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
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
    bucket      BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (rule, subject, bucket)
);
CREATE TABLE rule_fired_once (
    rule        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (rule, subject)
);
CREATE TABLE attestation_sources (
    agent       TEXT NOT NULL,
    source      TEXT NOT NULL,
    first_at    BIGINT NOT NULL,
    PRIMARY KEY (agent, source)
);
CREATE TABLE rule_releases (
    agent       TEXT PRIMARY KEY,
    rule        TEXT NOT NULL,
    release_at  BIGINT NOT NULL
);
CREATE TABLE approval_holds (
    agent       TEXT PRIMARY KEY,
    rule        TEXT NOT NULL,
    until_at    BIGINT NOT NULL
);
ALTER TABLE tasks ADD COLUMN exception_uses BIGINT NOT NULL DEFAULT 0;
"#,
    // 23: audit sinks. Per sink, the last audit sequence it acknowledged
    // (records are delivered after it, in order, at least once), which
    // replica delivers to it while its lease lasts, and its last error.
    r#"
CREATE TABLE audit_sinks (
    name        TEXT PRIMARY KEY,
    acked       BIGINT NOT NULL,
    holder      TEXT,
    lease_until BIGINT NOT NULL,
    last_error  TEXT,
    updated_at  BIGINT NOT NULL
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
    id               BIGINT PRIMARY KEY CHECK (id = 1),
    archived_through BIGINT NOT NULL,
    segment_hash     TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION writ_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.seq <= COALESCE(
            (SELECT archived_through FROM audit_archive WHERE id = 1), 0) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only (only archived records may be removed)';
END $$;
"#,
    // 25: instance retention. Expired instances no task names any more
    // are pruned; the indexes find them, and the tasks naming one,
    // without a scan (the foreign key's check on delete uses the second).
    r#"
CREATE INDEX instances_expiry ON instances(expires_at);
CREATE INDEX tasks_instance ON tasks(instance_id);
"#,
];
