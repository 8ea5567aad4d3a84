//! The evidence checks, one function each, on the facts read from live state.

use super::Status::{Gap, NotApplicable, Pass};
use super::*;

pub(super) fn token_lifetimes(id: &str, f: &Facts) -> Evidence {
    let longest = f
        .instance_token_ttl
        .max(f.task_token_ttl)
        .max(f.tool_token_ttl);
    let status = if longest <= LONG_LIVED_SECS {
        Pass
    } else {
        Gap
    };
    ev(
        id,
        status,
        format!(
            "configured token lifetimes: instance {}, task {}, tool {} (long-lived above {})",
            mins(f.instance_token_ttl),
            mins(f.task_token_ttl),
            mins(f.tool_token_ttl),
            mins(LONG_LIVED_SECS)
        ),
        Vec::new(),
    )
}

pub(super) fn long_lived_tokens(id: &str, f: &Facts) -> Evidence {
    let longest = match &f.longest_token {
        Some((s, kind, _)) => format!("; the longest ever issued: {kind}, {}", mins(*s)),
        None => String::new(),
    };
    let mut links = f.long_tokens.links();
    if links.is_empty()
        && let Some((_, _, seq)) = &f.longest_token
    {
        links.push(AuditLink::new(*seq));
    }
    ev(
        id,
        if f.long_tokens.count == 0 { Pass } else { Gap },
        format!(
            "{} token(s) issued to live longer than {} in {} audit record(s) read{longest}",
            f.long_tokens.count,
            mins(LONG_LIVED_SECS),
            f.records
        ),
        links,
    )
}

pub(super) fn static_secrets(id: &str, f: &Facts) -> Evidence {
    if f.secret_tools.is_empty() {
        ev(
            id,
            Pass,
            "no tool has a static upstream secret for the gateway to inject".into(),
            f.secret_sets.links(),
        )
    } else {
        ev(
            id,
            Gap,
            format!(
                "the gateway still injects a static upstream secret for {} tool(s): {} (held by writ, never handed to agents; replace with dynamic credentials or rotate)",
                f.secret_tools.len(),
                f.secret_tools.join(", ")
            ),
            f.secret_sets.links(),
        )
    }
}

pub(super) fn least_privilege(id: &str, f: &Facts) -> Evidence {
    if f.lp_agents == 0 {
        return ev(
            id,
            NotApplicable,
            "no agent was granted anything in the report window".into(),
            Vec::new(),
        );
    }
    let ok = f.lp_unused_scopes == 0 && f.lp_overbroad.is_empty();
    ev(
        id,
        if ok { Pass } else { Gap },
        format!(
            "least-privilege report over {} agent(s): {} scope(s) granted and never used, {} over-broad policy(ies){}",
            f.lp_agents,
            f.lp_unused_scopes,
            f.lp_overbroad.len(),
            if f.lp_overbroad.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.lp_overbroad.join(", "))
            }
        ),
        Vec::new(),
    )
}

pub(super) fn delegation_limits(id: &str, f: &Facts) -> Evidence {
    let ok = f.max_delegation_depth <= BOUNDED_DEPTH && f.lp_depth_used <= f.max_delegation_depth;
    ev(
        id,
        if ok { Pass } else { Gap },
        format!(
            "delegation depth limit {} (bounded at {BOUNDED_DEPTH} or less); deepest used {}; each delegated token names its chain of actors and narrows its parent's scopes",
            f.max_delegation_depth, f.lp_depth_used
        ),
        Vec::new(),
    )
}

/// A gap when a bearer token was issued in the chain read, when the
/// broker would issue one (no `--require-dpop`), or when a token's binding
/// is not on record; a pass only when the record shows every token issued
/// bound to a DPoP key; nothing issued yet: not applicable.
pub(super) fn sender_constrained(id: &str, f: &Facts) -> Evidence {
    let nonces = if f.dpop_nonces {
        "required"
    } else {
        "not required"
    };
    let (bound, bearer, unknown) = (
        f.bound_tokens.count,
        f.bearer_tokens.count,
        f.unknown_binding.count,
    );
    let counts = format!(
        "{bound} token(s) issued bound to a DPoP key, {bearer} bearer token(s) with no binding, \
         {unknown} whose binding is not on record; server nonces {nonces}; {} presentation(s) \
         of a real token the wrong way refused",
        f.refusals.count
    );
    let mut why = Vec::new();
    if bearer > 0 {
        why.push("bearer tokens were issued");
    }
    if unknown > 0 {
        why.push("some tokens' binding is not on record");
    }
    if !f.require_dpop {
        why.push("the broker issues bearer tokens to an instance that attests without DPoP (no --require-dpop)");
    }
    let status = if !why.is_empty() {
        Gap
    } else if bound == 0 {
        NotApplicable
    } else {
        Pass
    };
    let summary = if why.is_empty() {
        format!("every token is bound to its instance's key (--require-dpop): {counts}")
    } else {
        format!("{}: {counts}", why.join("; "))
    };
    let links = if bearer > 0 {
        f.bearer_tokens.links()
    } else if unknown > 0 {
        f.unknown_binding.links()
    } else {
        let mut l = f.bound_tokens.links();
        l.extend(f.refusals.links());
        l
    };
    ev(id, status, summary, links)
}

pub(super) fn audit_integrity(id: &str, f: &Facts) -> Evidence {
    match &f.chain_break {
        Some((seq, reason)) => ev(
            id,
            Gap,
            format!("the audit chain does not verify: record {seq}: {reason}"),
            vec![AuditLink::new(*seq)],
        ),
        None if f.chain_valid => ev(
            id,
            Pass,
            format!(
                "audit chain verified now: {} record(s), {} signed checkpoint(s), sealed through record {}",
                f.records, f.checkpoints, f.sealed_through
            ),
            if f.sealed_through > 0 {
                vec![AuditLink::new(f.sealed_through)]
            } else {
                Vec::new()
            },
        ),
        None => ev(
            id,
            Gap,
            "the audit chain was not verified".into(),
            Vec::new(),
        ),
    }
}

pub(super) fn policy_enforcement(id: &str, f: &Facts) -> Evidence {
    let mut links = f.policy_loads.links();
    links.extend(f.decisions_denied.links());
    ev(
        id,
        Pass,
        format!(
            "live Cedar policy set {}; {} policy load(s); {} decision(s) allowed, {} denied",
            f.live_policy_version,
            f.policy_loads.count,
            f.decisions_allowed,
            f.decisions_denied.count
        ),
        links,
    )
}

pub(super) fn revocation(id: &str, f: &Facts) -> Evidence {
    let mut links = f.quarantines.links();
    links.extend(f.revocations.links());
    ev(
        id,
        Pass,
        format!(
            "revocations reach every connected gateway within {} s before they are acknowledged; {} quarantine(s) and {} token revocation(s) recorded; quarantined now: {}",
            f.propagation_wait_secs,
            f.quarantines.count,
            f.revocations.count,
            if f.quarantined_now.is_empty() {
                "none".to_owned()
            } else {
                f.quarantined_now.join(", ")
            }
        ),
        links,
    )
}

pub(super) fn attestation(id: &str, f: &Facts) -> Evidence {
    let mut links = f.attests.links();
    links.extend(f.attest_failures.links());
    ev(
        id,
        if f.attests.count > 0 {
            Pass
        } else {
            NotApplicable
        },
        format!(
            "{} successful attestation(s), {} refused; no agent gets a token without one",
            f.attests.count, f.attest_failures.count
        ),
        links,
    )
}

pub(super) fn human_approval(id: &str, f: &Facts) -> Evidence {
    ev(
        id,
        if f.approvals.count > 0 {
            Pass
        } else {
            NotApplicable
        },
        format!(
            "{} approval decision(s) by a person recorded",
            f.approvals.count
        ),
        f.approvals.links(),
    )
}

pub(super) fn gateway_mediation(id: &str, f: &Facts) -> Evidence {
    if f.tools == 0 {
        return ev(
            id,
            NotApplicable,
            "no tool is registered".into(),
            Vec::new(),
        );
    }
    let mut links = f.tool_calls.links();
    links.extend(f.tool_calls_denied.links());
    ev(
        id,
        if f.tool_calls.count > 0 {
            Pass
        } else {
            NotApplicable
        },
        format!(
            "{} of {} tool(s) reached through a gateway; {} call(s) through it allowed, {} denied",
            f.tools_via_gateway, f.tools, f.tool_calls.count, f.tool_calls_denied.count
        ),
        links,
    )
}

pub(super) fn task_lifetimes(id: &str, f: &Facts) -> Evidence {
    let ok = f.max_task_ttl <= SHORT_TASK_SECS;
    ev(
        id,
        if ok { Pass } else { Gap },
        format!(
            "tasks end within {} at most (exceptions by approval within {}); {} task(s) ran by exception",
            mins(f.max_task_ttl),
            mins(f.max_exception_ttl),
            f.lp_exceptions
        ),
        Vec::new(),
    )
}
