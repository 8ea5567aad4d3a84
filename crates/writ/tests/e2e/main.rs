//! End-to-end tests: the real `writ` binary, over HTTP and through its CLI.

mod attest;
mod audit;
mod bad_input;
mod cli;
mod harness;
mod kill_switch;
mod restart;
mod tasks;
mod tokens;
