//! Policy-as-code for writ: the built-in Cedar schema, versioned policy sets
//! validated strictly against it, the facts every enforcement point decides
//! on, and decisions that carry their reasons.
//!
//! [`Facts`] are made by one constructor per action from the store's model
//! types, and a general AuthZEN [`Question`] (the user's own entity types
//! and actions, declared in `*.cedarschema` files beside the policies) by
//! one constructor too; no other crate assembles a Cedar request. A [`Decision`] is a
//! value, never a bare `bool`: a [`Verdict`] (allow, deny, needs approval),
//! the policies that reached it and the version of the set, and any
//! evaluation error turns it into a denial.

pub mod cases;
mod context_reads;
mod decide;
mod entity_cache;
mod facts;
mod question;
mod record;
mod request;
pub mod rules;
mod set;
mod vocabulary;

pub use decide::{Decision, Explanation, Obligations, ToolExplanation, Verdict};
pub use facts::{
    Action, Behaviour, CallRequest, Chain, Facts, InstanceFacts, TaskAsk, TaskView, TaskViewError,
};
pub use question::{Party, Question, QuestionError};
pub use record::{REDACTED, RecordedRequest, RequestReads};
pub use set::{
    ENTITIES_FILE, FileKind, MAX_ENTITIES, MAX_FILE_BYTES, PolicyError, PolicySet, PolicySource,
    version_of,
};
pub use vocabulary::WRIT_TYPES;

/// The schema text, as shipped in `policies/writ.cedarschema`.
pub const SCHEMA_SRC: &str = include_str!("../../../policies/writ.cedarschema");
