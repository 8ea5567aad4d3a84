//! The v1 wire types, shared by the broker, the client and the tests.
//!
//! Every request type rejects unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentName, InstanceId, TaskId, ToolName};
use crate::scope::{Capability, Scope};
use crate::time::Timestamp;

mod agents;
mod audit;
mod clients;
mod gateways;
mod nodes;
mod oauth;
mod operators;
mod tasks;
mod tools;

pub use agents::*;
pub use audit::*;
pub use clients::*;
pub use gateways::*;
pub use nodes::*;
pub use oauth::*;
pub use operators::*;
pub use tasks::*;
pub use tools::*;
