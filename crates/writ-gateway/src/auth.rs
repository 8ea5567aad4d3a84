//! Who is calling: the tool token, verified here against the broker's JWKS,
//! bound to its DPoP key, checked against the revocation set.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, header};
use writ_core::api::{Agent, Tool};
use writ_core::dpop::{self, ReplayCache, ReplayError};
use writ_core::token::{self, AccessClaims, TokenError};

use crate::error::GatewayError;
use crate::state::{Bundle, View};

/// Most DPoP proofs remembered at once.
const MAX_PROOFS: usize = 1_000_000;

/// Tokens whose signature and claims verified, until they expire: a
/// repeated token skips the signature check (revocation, binding, agent
/// state and policy are still checked on every request).
pub type Verified = token::VerifiedTokens;

#[derive(Debug)]
pub struct Replay(Mutex<ReplayCache>);

impl Default for Replay {
    fn default() -> Self {
        Self(Mutex::new(ReplayCache::new(MAX_PROOFS)))
    }
}

/// A verified caller of one tool.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Arc<AccessClaims>,
    /// The agent acting now (the outermost actor, or the subject).
    pub agent: Agent,
    /// Every earlier agent of the delegation chain, root first.
    pub chain: Vec<Agent>,
    pub scopes: Vec<String>,
}

pub(crate) fn unauthorized(
    view: &View,
    tool: &str,
    error: Option<&'static str>,
    detail: impl Into<String>,
) -> GatewayError {
    GatewayError::Unauthorized {
        error,
        detail: detail.into(),
        metadata: crate::metadata_url(&view.cfg.public_url, tool),
    }
}

/// Verifies the request's credential for `tool`.
#[allow(clippy::too_many_arguments, reason = "one request's context")]
pub async fn authenticate(
    view: &View,
    replay: &Replay,
    verified: &Verified,
    bundle: &Bundle,
    tool: &Tool,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Caller, GatewayError> {
    let name = tool.name.as_str();
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized(view, name, None, "missing credential"))?;
    let (scheme, tok) = authz.split_once(' ').ok_or_else(|| {
        unauthorized(
            view,
            name,
            Some("invalid_request"),
            "malformed Authorization header",
        )
    })?;
    let dpop_scheme = if scheme.eq_ignore_ascii_case("dpop") {
        true
    } else if scheme.eq_ignore_ascii_case("bearer") {
        false
    } else {
        return Err(unauthorized(
            view,
            name,
            Some("invalid_request"),
            "use the Bearer or DPoP scheme",
        ));
    };
    let tok = tok.trim();
    let now = view.now();
    let claims = match verified.recall(tok, &bundle.issuer, now) {
        Some(c) => c,
        None => {
            let kid = token::insecure_peek(tok)
                .ok()
                .and_then(|(h, _)| h.get("kid").and_then(|k| k.as_str()).map(str::to_owned));
            let jwks = view.jwks_for(kid.as_deref()).await;
            let c = token::verify_with_jwks(tok, &jwks, &bundle.issuer, now).map_err(|e| {
                let detail = match e {
                    TokenError::UnknownKey => "token is signed by an unknown key".to_owned(),
                    other => other.to_string(),
                };
                unauthorized(view, name, Some("invalid_token"), detail)
            })?;
            let c = Arc::new(c);
            let kid: Arc<str> = Arc::from(kid.unwrap_or_default());
            verified.put(tok, kid, Arc::clone(&c), now.secs());
            c
        }
    };
    // A token names its tool by audience; an audience shared by two tools
    // (registered before writ refused that) names neither.
    if claims.aud != tool.audience || bundle.shared_audiences.contains(&claims.aud) {
        return Err(unauthorized(
            view,
            name,
            Some("invalid_token"),
            format!("token is not for tool {name}"),
        ));
    }
    if claims.task.is_none() {
        return Err(unauthorized(
            view,
            name,
            Some("invalid_token"),
            "only task-scoped tool tokens are accepted",
        ));
    }
    check_binding(
        view,
        replay,
        name,
        &claims,
        dpop_scheme,
        Presented {
            token: tok,
            method,
            path,
            headers,
        },
    )?;
    if view.is_revoked(&claims.jti) {
        return Err(unauthorized(
            view,
            name,
            Some("invalid_token"),
            "token has been revoked",
        ));
    }
    caller_of(bundle, claims)
}

/// What the agent sent with its token.
struct Presented<'a> {
    token: &'a str,
    method: &'a Method,
    path: &'a str,
    headers: &'a HeaderMap,
}

/// A bound token comes with a fresh proof of its key (once only), an
/// unbound one as Bearer: RFC 9449 §7.1.
fn check_binding(
    view: &View,
    replay: &Replay,
    name: &str,
    claims: &AccessClaims,
    dpop_scheme: bool,
    p: Presented<'_>,
) -> Result<(), GatewayError> {
    let Presented {
        token: tok,
        method,
        path,
        headers,
    } = p;
    let now = view.now();
    match (&claims.cnf, dpop_scheme) {
        (Some(cnf), true) => {
            let proof = headers
                .get("dpop")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    unauthorized(view, name, Some("invalid_dpop_proof"), "missing DPoP proof")
                })?;
            if headers.get_all("dpop").iter().count() > 1 {
                return Err(unauthorized(
                    view,
                    name,
                    Some("invalid_dpop_proof"),
                    "more than one DPoP proof",
                ));
            }
            let url = format!("{}{}", view.cfg.public_url.trim_end_matches('/'), path);
            let expected = dpop::Expected {
                method: method.as_str(),
                url: &url,
                access_token: Some(tok),
                now,
            };
            let v = dpop::verify_proof(proof, &expected)
                .map_err(|e| unauthorized(view, name, Some("invalid_dpop_proof"), e.to_string()))?;
            if v.jkt != cnf.jkt {
                return Err(unauthorized(
                    view,
                    name,
                    Some("invalid_dpop_proof"),
                    "DPoP proof is signed by another key than the token is bound to",
                ));
            }
            let mut cache = replay
                .0
                .lock()
                .map_err(|_| GatewayError::Unavailable("replay cache lock poisoned".into()))?;
            match cache.insert(&v.jti_hash, now) {
                Ok(()) => {}
                Err(ReplayError::Replay) => {
                    return Err(unauthorized(
                        view,
                        name,
                        Some("invalid_dpop_proof"),
                        "DPoP proof was already used",
                    ));
                }
                Err(ReplayError::Full) => {
                    return Err(GatewayError::Unavailable(
                        "DPoP replay cache is full".into(),
                    ));
                }
            }
        }
        (Some(_), false) => {
            return Err(unauthorized(
                view,
                name,
                Some("invalid_token"),
                "token is DPoP-bound: present it with the DPoP scheme and a proof",
            ));
        }
        (None, true) => {
            return Err(unauthorized(
                view,
                name,
                Some("invalid_token"),
                "token is not DPoP-bound: present it as Bearer",
            ));
        }
        (None, false) => {}
    }
    Ok(())
}

/// The caller a verified tool token names: the agent acting now (the
/// outermost actor, or the subject) and the chain before it, each a
/// registered agent that is not quarantined.
pub fn caller_of(bundle: &Bundle, claims: Arc<AccessClaims>) -> Result<Caller, GatewayError> {
    // Principal and chain, from `sub` (the root) and the nested `act`s
    // (outermost = acting now).
    let mut hops: Vec<&str> = vec![claims.sub.as_str()];
    let mut inner = Vec::new();
    let mut a = claims.act.as_ref();
    while let Some(actor) = a {
        inner.push(actor.sub.as_str());
        a = actor.act.as_deref();
    }
    inner.reverse();
    hops.extend(inner);
    let mut agents = Vec::with_capacity(hops.len());
    for spiffe in hops {
        let agent = bundle
            .agents_by_spiffe
            .get(spiffe)
            .ok_or_else(|| GatewayError::Forbidden {
                reason: format!("{spiffe} is not a registered agent"),
                policy_version: None,
                determining_policies: Vec::new(),
                approval_id: None,
            })?;
        if agent.quarantined {
            return Err(GatewayError::Forbidden {
                reason: format!("agent {} is quarantined", agent.name),
                policy_version: None,
                determining_policies: Vec::new(),
                approval_id: None,
            });
        }
        agents.push(agent.clone());
    }
    let agent = agents
        .pop()
        .ok_or_else(|| GatewayError::Unavailable("empty delegation chain".into()))?;
    let scopes = claims
        .scope
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Caller {
        claims,
        agent,
        chain: agents,
        scopes,
    })
}
