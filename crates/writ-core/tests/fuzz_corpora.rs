//! The fuzz corpora (`fuzz/corpus/<target>/`) replayed as regression tests:
//! every input that was ever interesting runs on every test run.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn access_token_corpus() {
    replay("access_token", writ_core::fuzz_targets::access_token);
}

#[test]
fn dpop_proof_corpus() {
    replay("dpop_proof", writ_core::fuzz_targets::dpop_proof);
}

#[test]
fn scope_request_corpus() {
    replay("scope_request", writ_core::fuzz_targets::scope_request);
}

#[test]
fn api_request_corpus() {
    replay("api_request", writ_core::fuzz_targets::api_request);
}

#[test]
fn mcp_message_corpus() {
    replay("mcp_message", writ_core::fuzz_targets::mcp_message);
}

#[test]
fn token_exchange_form_corpus() {
    replay(
        "token_exchange_form",
        writ_core::fuzz_targets::token_exchange_form,
    );
}

#[test]
fn authzen_request_corpus() {
    replay("authzen_request", writ_core::fuzz_targets::authzen_request);
}
