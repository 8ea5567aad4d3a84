//! Who is calling: the tool token, verified here against the broker's JWKS,
//! bound to its DPoP key, checked against the revocation set.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, header};
use writ_core::api::{Agent, Tool};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::dpop::{self, ReplayCache, ReplayError};
use writ_core::token::{self, AccessClaims, TokenError};

use crate::error::GatewayError;
use crate::spool::Spool;
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
    spool: &Spool,
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
    if let Err(refused) = check_binding(
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
    ) {
        // The token is real, so this is its holder (or its thief) trying
        // it without its key: a record the broker's rules see, as the
        // broker records its own (`token_refused`, with how).
        if let Some(binding) = refused.binding {
            spool.push(refusal_record(
                view,
                bundle,
                tool,
                &claims,
                method,
                path,
                binding,
                &refused.error,
            ));
        }
        return Err(refused.error);
    }
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

/// A token refused for how it was presented: the error to answer with,
/// and how it was presented wrong (as the broker names it in its
/// `token_refused` records), `None` when the refusal says nothing of the
/// caller (the replay cache is full).
struct Refused {
    error: GatewayError,
    binding: Option<&'static str>,
}

/// How a presentation was wrong: `replay` (a proof used before),
/// `wrong_key` (a proof by another key than the token's), `proof_missing`,
/// `bad_proof` (any other fault of the proof), `wrong_scheme`.
fn refused(binding: &'static str) -> impl FnOnce(GatewayError) -> Refused {
    move |error| Refused {
        error,
        binding: Some(binding),
    }
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
) -> Result<(), Refused> {
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
                })
                .map_err(refused("proof_missing"))?;
            if headers.get_all("dpop").iter().count() > 1 {
                return Err(refused("bad_proof")(unauthorized(
                    view,
                    name,
                    Some("invalid_dpop_proof"),
                    "more than one DPoP proof",
                )));
            }
            let url = format!("{}{}", view.cfg.public_url.trim_end_matches('/'), path);
            let expected = dpop::Expected {
                method: method.as_str(),
                url: &url,
                access_token: Some(tok),
                now,
            };
            let v = dpop::verify_proof(proof, &expected).map_err(|e| {
                refused("bad_proof")(unauthorized(
                    view,
                    name,
                    Some("invalid_dpop_proof"),
                    e.to_string(),
                ))
            })?;
            if v.jkt != cnf.jkt {
                return Err(refused("wrong_key")(unauthorized(
                    view,
                    name,
                    Some("invalid_dpop_proof"),
                    "DPoP proof is signed by another key than the token is bound to",
                )));
            }
            let unavailable = |why: &str| Refused {
                error: GatewayError::Unavailable(why.into()),
                binding: None,
            };
            let mut cache = replay
                .0
                .lock()
                .map_err(|_| unavailable("replay cache lock poisoned"))?;
            match cache.insert(&v.jti_hash, now) {
                Ok(()) => {}
                Err(ReplayError::Replay) => {
                    return Err(refused("replay")(unauthorized(
                        view,
                        name,
                        Some("invalid_dpop_proof"),
                        "DPoP proof was already used",
                    )));
                }
                Err(ReplayError::Full) => return Err(unavailable("DPoP replay cache is full")),
            }
        }
        (Some(_), false) => {
            return Err(refused("wrong_scheme")(unauthorized(
                view,
                name,
                Some("invalid_token"),
                "token is DPoP-bound: present it with the DPoP scheme and a proof",
            )));
        }
        (None, true) => {
            return Err(refused("wrong_scheme")(unauthorized(
                view,
                name,
                Some("invalid_token"),
                "token is not DPoP-bound: present it as Bearer",
            )));
        }
        (None, false) => {}
    }
    Ok(())
}

/// The `token_refused` record of a real token for `tool` presented the
/// wrong way (`binding` says how), charged to the agent acting with it
/// (a thief's tries count against the agent whose token was stolen) and
/// naming its instance, task and human, as the broker checks before it
/// records it.
#[allow(clippy::too_many_arguments, reason = "one refusal's context")]
fn refusal_record(
    view: &View,
    bundle: &Bundle,
    tool: &Tool,
    claims: &AccessClaims,
    method: &Method,
    path: &str,
    binding: &'static str,
    error: &GatewayError,
) -> AuditEvent {
    let acting = claims.act.as_ref().map_or(&claims.sub, |a| &a.sub);
    let reason = match error {
        GatewayError::Unauthorized { detail, .. } => detail.clone(),
        other => other.to_string(),
    };
    let mut event = AuditEvent::new(AuditKind::TokenRefused, Outcome::Deny, "gateway")
        .instance(&claims.client_id)
        .jti(&claims.jti)
        .on_behalf_of(claims.obo.as_ref())
        .reason(reason)
        .detail(serde_json::json!({
            "tool": tool.name,
            "method": method.as_str(),
            "path": crate::decide::capped(path),
            "binding": binding,
            "decided_at": view.now().millis(),
        }));
    if let Some(agent) = bundle.agents_by_spiffe.get(acting.as_str()) {
        event = event.agent(&agent.name);
    }
    if let Some(t) = &claims.task {
        event = event.task(t);
    }
    event
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
