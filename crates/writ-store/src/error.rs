//! Store errors: what went wrong, in terms a caller can act on.

/// Why a join token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    #[error("join token is unknown")]
    Unknown,
    #[error("join token was already used")]
    Used,
    #[error("join token has expired")]
    Expired,
    #[error("join token belongs to another agent")]
    WrongAgent,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    Conflict(String),
    #[error(transparent)]
    JoinToken(#[from] JoinTokenError),
    #[error("{0} is the last admin credential; revoking it would leave no way to manage writ")]
    LastAdminCredential(String),
    #[error("agent is quarantined")]
    Quarantined,
    #[error("instance is revoked or expired")]
    InstanceRevoked,
    #[error("task is not active ({0})")]
    NotActive(&'static str),
    /// The backend cannot take the request now (disk full, read-only, I/O).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store is shut down")]
    Closed,
    /// An archive step that would lose or reorder records: nothing changed.
    #[error("audit archive refused: {0}")]
    ArchiveRefused(String),
}
