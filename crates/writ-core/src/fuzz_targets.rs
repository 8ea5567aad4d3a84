//! Entry points for fuzzing (`fuzz/`) and for replaying the fuzz corpora as
//! ordinary regression tests. Each takes arbitrary bytes and must never
//! panic; each also checks an invariant of its own.

use std::sync::OnceLock;

use crate::dpop::{self, Expected};
use crate::scope::{self, Capability};
use crate::time::Timestamp;
use crate::token::{AccessClaims, Expect, KeyRing, SigningKey, TokenKind};

const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);
const ISS: &str = "https://writ.fuzz";

fn ring() -> Option<&'static KeyRing> {
    static RING: OnceLock<Option<KeyRing>> = OnceLock::new();
    RING.get_or_init(|| {
        SigningKey::generate(NOW)
            .ok()
            .map(|k| KeyRing::new(vec![k]))
    })
    .as_ref()
}

/// The access-token verifier. A token it accepts must be one it signed.
pub fn access_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(ring) = ring() else { return };
    let expect = Expect {
        issuer: ISS,
        audience: Some(ISS),
        kind: TokenKind::Any,
    };
    if let Ok(claims) = ring.verify(text, expect, NOW, 900) {
        // Only possible for a token signed by the ring's own key.
        let again = ring.sign(&claims);
        assert!(again.is_ok(), "an accepted token's claims must be signable");
    }
    // Also: a token signed now, with the input in a claim, round-trips.
    let claims = AccessClaims {
        iss: ISS.into(),
        sub: text.chars().take(64).collect(),
        aud: ISS.into(),
        exp: NOW.secs() + 60,
        iat: NOW.secs(),
        nbf: NOW.secs(),
        jti: "jti_fuzz".into(),
        client_id: "ins_fuzz".into(),
        scope: None,
        task: None,
        obo: None,
        cnf: None,
        act: None,
        exception: false,
        intent: None,
        task_ctx: None,
    };
    if let Ok(tok) = ring.sign(&claims) {
        let back = ring.verify(&tok, expect, NOW, 900);
        assert_eq!(
            back.ok().as_ref(),
            Some(&claims),
            "a token writ signs must verify to the same claims"
        );
    }
}

/// The DPoP proof verifier. A proof it accepts carries a thumbprint and a
/// jti hash of the right shapes.
pub fn dpop_proof(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let expected = Expected {
        method: "POST",
        url: "https://writ.fuzz/oauth2/token",
        access_token: Some("token"),
        now: NOW,
    };
    if let Ok(v) = dpop::verify_proof(text, &expected) {
        assert_eq!(v.jkt.len(), 43);
        assert_eq!(v.jti_hash.len(), 64);
    }
}

/// Token-exchange scope requests: whatever is asked, a narrowing never
/// yields more than is held.
pub fn scope_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let held = [
        Capability::parse_short("tickets:read,comment"),
        Capability::parse_short("wiki:read"),
    ];
    let held: Vec<Capability> = held.into_iter().filter_map(Result::ok).collect();
    if let Ok(narrowed) = scope::narrow(&held, Some(text)) {
        for c in &narrowed {
            let h = held.iter().find(|h| h.tool == c.tool);
            assert!(
                h.is_some_and(|h| c.scopes.is_subset(&h.scopes)),
                "narrowing widened {c:?}"
            );
        }
    }
    if let Some(first) = held.first()
        && let Ok(s) = scope::narrow_for_tool(first, Some(text))
    {
        assert!(s.is_subset(&first.scopes));
    }
    let _ = scope::from_claim(text);
    let _ = Capability::parse_short(text);
}

/// The v1 request bodies: any bytes parse to a typed request or an error.
pub fn api_request(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::api::StartTask>(data);
    let _ = serde_json::from_slice::<crate::api::RegisterAgent>(data);
    let _ = serde_json::from_slice::<crate::api::AttestRequest>(data);
    let _ = serde_json::from_slice::<crate::api::PushPolicies>(data);
}

/// The MCP JSON-RPC inspector an enforcement point decides with. Every
/// message of a body is classified, and a tool call's name is exactly the
/// string the server will read as `params.name`.
pub fn mcp_message(data: &[u8]) {
    let Ok((messages, single)) = crate::mcp::parse(data) else {
        return;
    };
    assert!(!messages.is_empty());
    assert!(!single || messages.len() == 1);
    for m in &messages {
        match crate::mcp::classify(m) {
            crate::mcp::Kind::Request(n) => {
                // What policy is told a message names is what the server reads.
                let server_reads = |k: &str| {
                    m.get("params")
                        .and_then(|p| p.get(k))
                        .and_then(serde_json::Value::as_str)
                };
                assert_eq!(
                    m.get("method").and_then(serde_json::Value::as_str),
                    Some(n.method.as_str())
                );
                assert!(!crate::mcp::is_plumbing(&n.method));
                match n.method.as_str() {
                    "tools/call" => assert_eq!(n.tool.as_deref(), server_reads("name")),
                    "prompts/get" => assert_eq!(n.prompt.as_deref(), server_reads("name")),
                    "resources/read" => assert_eq!(n.resource.as_deref(), server_reads("uri")),
                    _ => assert!(n.tool.is_none()),
                }
            }
            crate::mcp::Kind::Plumbing { method } => {
                assert!(crate::mcp::is_plumbing(&method));
                assert_ne!(method, "tools/call");
            }
            crate::mcp::Kind::Response | crate::mcp::Kind::Invalid => {
                assert!(
                    m.get("method")
                        .and_then(serde_json::Value::as_str)
                        .is_none()
                );
            }
        }
    }
}

/// The token-exchange form (`POST /oauth2/token`), read as the broker reads
/// it: a form it accepts names the exchange grant and a subject token, and
/// the scope it asks for never widens what the task holds.
pub fn token_exchange_form(data: &[u8]) {
    let Ok(req) = serde_urlencoded::from_bytes::<crate::api::TokenRequest>(data) else {
        return;
    };
    if let Ok(subject) = req.check() {
        assert_eq!(
            req.grant_type.as_deref(),
            Some(crate::api::TOKEN_EXCHANGE_GRANT)
        );
        assert_eq!(req.subject_token.as_deref(), Some(subject));
        assert!(req.audience.is_none() || req.resource.is_none());
    }
    let Some(held) = Capability::parse_short("tickets:read,comment").ok() else {
        return;
    };
    if let Ok(narrowed) = scope::narrow_for_tool(&held, req.scope.as_deref()) {
        assert!(narrowed.is_subset(&held.scopes), "a narrowing never widens");
    }
}

/// The AuthZEN request mapper: a batch expands to one evaluation per item
/// (one for none), each item's parts or else the request's, up to the
/// batch limit.
pub fn authzen_request(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::authzen::Evaluation>(data);
    let Ok(req) = serde_json::from_slice::<crate::authzen::Evaluations>(data) else {
        return;
    };
    let items = req.evaluations.as_ref().map_or(0, Vec::len);
    let top_subject = req.subject.as_ref().map(|s| s.id.clone());
    let item_subjects: Vec<Option<String>> = req
        .evaluations
        .iter()
        .flatten()
        .map(|e| {
            e.get("subject")
                .and_then(|s| s.get("id"))
                .and_then(|i| i.as_str())
                .map(str::to_owned)
        })
        .collect();
    match crate::authzen::expand(req) {
        Ok((_, crate::authzen::Expanded::Single(e))) => {
            assert_eq!(items, 0);
            assert_eq!(Some(e.subject.id), top_subject);
        }
        Ok((_, crate::authzen::Expanded::Batch(full))) => {
            assert_eq!(full.len(), items);
            assert!(full.len() <= crate::authzen::MAX_BATCH);
            for (i, e) in full.iter().enumerate() {
                let Ok(e) = e else { continue };
                let expected = item_subjects
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| top_subject.clone());
                assert_eq!(Some(e.subject.id.clone()), expected);
            }
        }
        Err(_) => {}
    }
}
