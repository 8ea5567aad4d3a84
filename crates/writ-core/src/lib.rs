//! Domain types and pure logic of writ: names and ids, scopes, secrets,
//! token claims and signing, sealing at rest, and the audit chain.
//!
//! Nothing in this crate performs I/O. Time is a parameter (`Clock`), so
//! every expiry decision can be tested by moving a clock instead of waiting.

pub mod api;
pub mod archive;
pub mod audit;
pub mod authzen;
pub mod dpop;
pub mod fuzz_targets;
pub mod ids;
pub mod labels;
pub mod lifetime;
pub mod mcp;
pub mod random;
pub mod scope;
pub mod seal;
pub mod secret;
pub mod time;
pub mod token;
pub mod txn;

pub use ids::{AgentName, ApprovalId, InstanceId, Jti, NameError, TaskId, ToolName};
pub use scope::{Capability, Scope, ScopeError};
pub use secret::Secret;
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
