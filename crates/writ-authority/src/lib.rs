//! The broker's logic: agents and their attestation, tasks, issuance, token
//! exchange and delegation, approvals, signing keys, the SPIFFE authority,
//! DPoP, OIDC verification and the sweeper. No HTTP: each operation takes
//! typed input and a caller, and answers typed output or an [`Error`] that
//! says what went wrong; `writ-broker` serves it over HTTP and alone decides
//! status codes.

pub mod alert;
pub mod attest_digest;
pub mod bootstrap;
pub mod config;
pub mod detect;
pub mod dpop;
pub mod error;
pub mod keys;
pub mod limit;
pub mod metrics;
pub mod oidc;
pub mod policy_watch;
pub mod replicas;
pub mod service;
pub mod sinks;
pub mod spiffe;
pub mod sweeper;

pub use bootstrap::{
    BootstrapError, DataDir, InitialPolicy, MasterRotated, Opened, open, rotate_master,
};
pub use config::{BrokerConfig, DEFAULT_ATTEST_PER_MINUTE, OperatorSso, RoleRule, SsoBrowser};
pub use error::{Binding, Error, GrantError};
pub use keys::KeyService;
pub use service::Broker;
