//! What went wrong, in the broker's own words.
//!
//! The services answer [`Error`]; the HTTP edge (`writ-broker`'s
//! `error.rs`) alone turns it into a status, a problem-details body or an
//! RFC 6749 error. The text of a variant is the detail a client is told;
//! internal causes (`Unavailable`, `Internal`, a failing store) are kept for
//! the log and shown only by [`Error::cause`].

use writ_core::dpop::DpopError;
use writ_policy::Decision;
use writ_store::StoreError;

/// An operation of the broker refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is malformed or out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// The caller presented no credential, or one that is not (or no
    /// longer) valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// An OAuth client (of introspection or revocation) failed to
    /// authenticate: unknown, revoked, a wrong secret, a refused assertion
    /// (RFC 6749 §5.2's `invalid_client`).
    #[error("{0}")]
    InvalidClient(String),
    /// The caller is known but may not do this (not its task, not its
    /// tool, the wrong kind of credential).
    #[error("{0}")]
    Forbidden(String),
    /// Policy refused: the decision says by which policies and why.
    #[error("{}", .0.reason())]
    Denied(Decision),
    /// The agent or node is quarantined.
    #[error("{0}")]
    Quarantined(String),
    /// A person refused the approval it waited for, or nobody decided it
    /// in time.
    #[error("{0}")]
    ApprovalRefused(String),
    /// What was named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what exists.
    #[error("{0}")]
    Conflict(String),
    /// The task has ended (or is not yet active).
    #[error("{0}")]
    TaskEnded(String),
    /// A bound on how much one caller may have open at once was reached.
    #[error("{0}")]
    TooMany(String),
    /// A client asked more often than its rate allows; it may try again
    /// after `retry_after` seconds.
    #[error("{detail}")]
    RateLimited { detail: String, retry_after: u64 },
    /// A DPoP proof was missing, refused, or needs a server nonce.
    #[error(transparent)]
    Binding(#[from] Binding),
    /// A token exchange (RFC 8693) was refused.
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// The store cannot serve now, or holds corrupt data; the cause is
    /// logged, never told.
    #[error("{}", if store_is_corrupt(.0) { "internal error" } else { "service unavailable" })]
    Store(StoreError),
    /// A dependency (the disk, a database, a key) cannot serve now; the
    /// cause is logged, never told.
    #[error("service unavailable")]
    Unavailable(String),
    /// A bug or corrupt data; the cause is logged, never told.
    #[error("internal error")]
    Internal(String),
}

fn store_is_corrupt(e: &StoreError) -> bool {
    matches!(e, StoreError::Corrupt(_))
}

/// Why a credential's DPoP binding was not proven (RFC 9449).
#[derive(Debug, thiserror::Error)]
pub enum Binding {
    /// A bound token came without a proof.
    #[error("a DPoP proof is required with this token")]
    ProofMissing,
    /// The proof was refused.
    #[error(transparent)]
    Proof(DpopError),
    /// The proof lacks a valid server nonce: `nonce` is a fresh one.
    #[error("{}", DpopError::UseNonce)]
    UseNonce { nonce: String },
}

/// Why a token exchange was refused, in RFC 6749/8693's terms.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The subject or actor token cannot be exchanged (`invalid_grant`).
    #[error("{0}")]
    Invalid(String),
    /// The scope asked for is not held (`invalid_scope`).
    #[error("{0}")]
    Scope(String),
    /// The target is not a registered tool, or the task holds nothing for
    /// it (`invalid_target`).
    #[error("{0}")]
    Target(String),
    /// Policy refused the exchange (`access_denied`).
    #[error("{0}")]
    Denied(String),
    /// Not the grant type writ serves (`unsupported_grant_type`).
    #[error("{0}")]
    UnsupportedType(String),
}

impl GrantError {
    /// The RFC 6749 §5.2 / RFC 8693 §2.2.2 error code, as the audit record
    /// names the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            GrantError::Invalid(_) => "invalid_grant",
            GrantError::Scope(_) => "invalid_scope",
            GrantError::Target(_) => "invalid_target",
            GrantError::Denied(_) => "access_denied",
            GrantError::UnsupportedType(_) => "unsupported_grant_type",
        }
    }
}

impl From<StoreError> for Error {
    /// The store's answers become the broker's words; its failures stay
    /// wrapped, their cause for the log.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Error::NotFound(format!("{what} not found")),
            StoreError::Conflict(what) => Error::Conflict(format!("{what} already exists")),
            StoreError::JoinToken(j) => Error::Unauthenticated(format!("attestation failed: {j}")),
            e @ (StoreError::LastAdminCredential(_) | StoreError::ArchiveRefused(_)) => {
                Error::Conflict(e.to_string())
            }
            StoreError::Quarantined => Error::Quarantined("agent is quarantined".into()),
            StoreError::InstanceRevoked => Error::Unauthenticated("instance is revoked".into()),
            StoreError::NotActive(s) => Error::TaskEnded(format!("task is not active ({s})")),
            e @ (StoreError::Unavailable(_) | StoreError::Closed | StoreError::Corrupt(_)) => {
                Error::Store(e)
            }
        }
    }
}

impl From<writ_core::random::RandomError> for Error {
    fn from(e: writ_core::random::RandomError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl Error {
    /// The whole story, internal causes included: for the operator (a
    /// startup failure, a log line), never for a client.
    pub fn cause(&self) -> String {
        match self {
            Error::Unavailable(cause) => format!("service unavailable: {cause}"),
            Error::Internal(cause) => format!("internal error: {cause}"),
            Error::Store(e) => format!("{self}: {}", store_cause(e)),
            other => other.to_string(),
        }
    }
}

/// A failing store's cause, as it was logged before the store had its own
/// error kinds in the broker's words.
pub fn store_cause(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(cause) | StoreError::Corrupt(cause) => cause.clone(),
        StoreError::Closed => "store closed".into(),
        other => other.to_string(),
    }
}
