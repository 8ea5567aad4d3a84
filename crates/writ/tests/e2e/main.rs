//! End-to-end tests: the real `writ` binary, over HTTP and through its CLI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

mod approvals;
mod archive;
mod attest;
mod audit;
mod authzen_pdp;
mod bad_input;
mod cli;
mod client_auth;
mod console;
mod crash;
mod dbcreds;
pub(crate) mod delegation;
mod deploy;
mod detect;
mod detect_proofs;
mod evidence;
mod faults;
mod gateway;
mod gateway_edges;
mod hardening;
mod harness;
mod hostile;
mod kill_switch;
mod least_privilege;
mod least_privilege_replay;
mod logs;
mod metrics;
mod node;
mod one_answer;
mod operators;
mod policy;
mod replicas;
mod restart;
mod sinks;
mod spiffe;
mod tasks;
mod tokens;
