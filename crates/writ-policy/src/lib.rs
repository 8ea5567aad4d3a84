//! Policy-as-code for writ: the built-in Cedar schema, versioned policy sets
//! validated strictly against it, and decisions that carry their reasons.
//!
//! A decision is a value, never a bare `bool`: it names the policies that
//! decided it and the version of the set, and any evaluation error turns it
//! into a denial.

mod decide;
mod set;

pub use decide::{
    Action, AgentFacts, Decision, Explanation, Obligations, RequestFacts, TaskFacts, TaskRef,
    ToolExplanation, ToolFacts,
};
pub use set::{PolicyError, PolicySet, PolicySource, version_of};

/// The schema text, as shipped in `policies/writ.cedarschema`.
pub const SCHEMA_SRC: &str = include_str!("../../../policies/writ.cedarschema");
