//! Decisions: [`Facts`] in, a [`Decision`] out: a [`Verdict`] with the
//! policies that reached it, the set's version and the reasons.

use cedar_policy::{Authorizer, Decision as CedarDecision, EntityId, EntityUid, Request};
use writ_core::Capability;
use writ_core::api::Tool;

use crate::PolicySet;
use crate::context_reads::ContextReads;
use crate::facts::{Action, Facts};

/// What an enforcement point must do. Every enforcement point matches on
/// it exhaustively; there is no other way to read a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
    /// A person must approve first: a permit that allowed it is annotated
    /// `@approval("required")`, or a task start asks for an exception.
    NeedsApproval,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::NeedsApproval => "needs_approval",
        }
    }
}

/// A verdict with the policies that reached it and the set's version.
/// Its fields are private: read it through [`Decision::verdict`], so that
/// no caller can treat a held or failed decision as an allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    verdict: Verdict,
    /// A task start that asks for a lifetime beyond the configured maximum.
    exception: bool,
    /// For an allow (or a hold): the permits that matched. For a deny: the
    /// forbids that matched (empty when no permit matched).
    determining_policies: Vec<String>,
    /// Evaluation errors and refusals; any error makes the verdict a deny.
    errors: Vec<String>,
    policy_version: String,
    /// What the permits that allowed it ask for, by annotation.
    obligations: Obligations,
    /// Refused before policy was asked: `errors` says why.
    unanswerable: bool,
}

/// The anatomy of a decision.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub decision: Decision,
    pub tools: Vec<ToolExplanation>,
}

/// For one tool: every permit and every forbid whose conditions hold.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ToolExplanation {
    pub tool: String,
    pub permits: Vec<String>,
    pub forbids: Vec<String>,
    pub errors: Vec<String>,
}

/// Conditions attached to an allow by annotations on the permits that
/// decided it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Obligations {
    /// `@approval("required")`: a person must approve first.
    pub approval_required: bool,
    /// `@approval_window("SECONDS")`: once approved, the same request passes
    /// for this long (the shortest such window); absent: exactly once.
    pub approval_window: Option<i64>,
    /// `@max_ttl("SECONDS")`: the shortest such cap.
    pub max_ttl: Option<i64>,
    /// `@exception("allowed")` on a permit for every tool: a lifetime beyond
    /// the configured maximum may be asked for (with approval).
    pub exception_allowed: bool,
    /// `@unbound_delegation("allowed")` on a `DelegateTask` permit for every
    /// tool: a DPoP-bound task may be handed to a sub-agent whose instance
    /// is not bound (its child token is then a bearer token).
    pub unbound_delegation: bool,
    /// `@approval_by("on_behalf_of")` beside `@approval("required")`: the
    /// person the task acts for may approve it themself. `None` when no
    /// permit asked for approval; else whether every one that did says so.
    pub approval_by_on_behalf_of: Option<bool>,
}

/// Both sides must allow it, where a side has a say.
fn both(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a && b),
        (a, b) => a.or(b),
    }
}

fn min_of(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Decision {
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// A person must approve, and every permit that asked for it lets the
    /// person the task acts for (its `on_behalf_of`) be that person. Never
    /// for an exception (those stay with approvers).
    pub fn on_behalf_of_may_approve(&self) -> bool {
        self.verdict == Verdict::NeedsApproval
            && !self.exception
            && self.obligations.approval_required
            && self.obligations.approval_by_on_behalf_of == Some(true)
    }

    /// A task start that lives beyond the configured maximum, by exception.
    pub fn exception(&self) -> bool {
        self.exception
    }

    pub fn determining_policies(&self) -> &[String] {
        &self.determining_policies
    }

    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }

    /// The shortest `@max_ttl` of the permits that allowed it.
    pub fn max_ttl(&self) -> Option<i64> {
        self.obligations.max_ttl
    }

    /// Every tool's permits allow an exception to be passed on.
    pub fn exception_allowed(&self) -> bool {
        self.verdict != Verdict::Deny && self.obligations.exception_allowed
    }

    /// Every tool's permits let a bound task go to an unbound sub-agent.
    pub fn unbound_delegation_allowed(&self) -> bool {
        self.verdict != Verdict::Deny && self.obligations.unbound_delegation
    }

    /// How long an approval of this request lets the same request through
    /// (seconds); 0: once.
    pub fn approval_window(&self) -> i64 {
        self.obligations.approval_window.unwrap_or(0).max(0)
    }

    /// A refusal made before policy was asked (a request outside what the
    /// token holds), in the same shape as policy's own.
    pub fn refused(policy_version: &str, reason: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Deny,
            exception: false,
            determining_policies: Vec::new(),
            errors: vec![reason.into()],
            policy_version: policy_version.to_owned(),
            obligations: Obligations::default(),
            unanswerable: false,
        }
    }

    /// A one-line reason for people and audit records.
    pub fn reason(&self) -> String {
        match self.verdict {
            Verdict::Allow => format!("permitted by {}", self.determining_policies.join(", ")),
            Verdict::NeedsApproval if self.exception && !self.obligations.approval_required => {
                format!(
                    "an exception needs approval (permitted by {})",
                    self.determining_policies.join(", ")
                )
            }
            Verdict::NeedsApproval => format!(
                "approval required by {}",
                self.determining_policies.join(", ")
            ),
            Verdict::Deny if self.unanswerable => format!("denied: {}", self.errors.join("; ")),
            Verdict::Deny if !self.errors.is_empty() => {
                if self.determining_policies.is_empty() {
                    format!(
                        "denied: policy evaluation failed ({})",
                        self.errors.join("; ")
                    )
                } else {
                    format!(
                        "denied by {} ({})",
                        self.determining_policies.join(", "),
                        self.errors.join("; ")
                    )
                }
            }
            Verdict::Deny if self.determining_policies.is_empty() => {
                "denied: no policy permits this request".to_owned()
            }
            Verdict::Deny => format!("denied by {}", self.determining_policies.join(", ")),
        }
    }

    fn deny(version: &str, error: String) -> Self {
        Self::refused(version, error)
    }

    /// A question policy cannot answer (an unknown type or action, an
    /// action that does not apply to these types): a denial that says why.
    pub(crate) fn unanswerable(policy_version: &str, why: impl Into<String>) -> Self {
        let mut d = Self::refused(policy_version, why);
        d.unanswerable = true;
        d
    }

    /// A decision from one Cedar answer, with the obligations of its permits.
    pub(crate) fn of_answer(
        set: &PolicySet,
        allowed: bool,
        determining: Vec<String>,
        errors: Vec<String>,
    ) -> Self {
        let allowed = allowed && errors.is_empty();
        let obligations = if allowed {
            set.obligations_of(&determining)
        } else {
            Obligations::default()
        };
        let verdict = match (allowed, obligations.approval_required) {
            (false, _) => Verdict::Deny,
            (true, true) => Verdict::NeedsApproval,
            (true, false) => Verdict::Allow,
        };
        Self {
            verdict,
            exception: false,
            determining_policies: determining,
            errors,
            policy_version: set.version().to_owned(),
            obligations,
            unanswerable: false,
        }
    }
}

/// What Cedar says reached an answer: the policies that determined it and
/// the evaluation errors on the way.
/// Cedar gives the determining policies as a set: they are sorted here, so
/// one question gets one answer, byte for byte, at every enforcement point
/// and in every audit record.
pub(crate) fn reasons(response: &cedar_policy::Response) -> (Vec<String>, Vec<String>) {
    let d = response.diagnostics();
    let mut determining: Vec<String> = d.reason().map(ToString::to_string).collect();
    determining.sort_unstable();
    (determining, d.errors().map(ToString::to_string).collect())
}

/// What one policy's annotations oblige.
pub(crate) fn obligations_of_policy(p: &cedar_policy::Policy) -> Obligations {
    let mut o = Obligations::default();
    // An unparsable number is the tightest one: fail towards shorter.
    let secs = |v: &str| v.trim().parse::<i64>().unwrap_or(0).max(0);
    let mut by_obo = false;
    for (key, value) in p.annotations() {
        match key {
            "approval" if value == "required" => o.approval_required = true,
            "approval_by" if value == "on_behalf_of" => by_obo = true,
            "exception" if value == "allowed" => o.exception_allowed = true,
            "unbound_delegation" if value == "allowed" => o.unbound_delegation = true,
            "max_ttl" => o.max_ttl = min_of(o.max_ttl, Some(secs(value))),
            "approval_window" => o.approval_window = min_of(o.approval_window, Some(secs(value))),
            _ => {}
        }
    }
    if o.approval_required {
        o.approval_by_on_behalf_of = Some(by_obo);
    }
    o
}

/// One tool's Cedar answer, before the verdict is drawn.
struct Answer {
    allowed: bool,
    determining: Vec<String>,
    errors: Vec<String>,
}

impl PolicySet {
    /// Decides: one Cedar request per tool asked for; allowed only when
    /// every one of them is, held when a permit asks for approval.
    pub fn decide(&self, facts: &Facts<'_>) -> Decision {
        let mut allowed_by: Vec<String> = Vec::new();
        let mut denied_by: Vec<String> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut all_allowed = !facts.capabilities.is_empty();
        let mut obligations = Obligations {
            exception_allowed: true,
            unbound_delegation: true,
            ..Obligations::default()
        };
        for cap in facts.capabilities.iter() {
            let Some(tool) = facts.tools.iter().find(|t| t.name == cap.tool) else {
                return Decision::deny(self.version(), format!("unknown tool {}", cap.tool));
            };
            let (policies, reads) =
                match self.slices.get(facts.action.cedar_id(), tool.name.as_str()) {
                    Some(s) => (&s.policies, &s.reads),
                    None => (&*self.policies, &crate::context_reads::ALL),
                };
            let a = match self.answer(policies, reads, facts, tool, cap) {
                Ok(a) => a,
                Err(e) => return Decision::deny(self.version(), e),
            };
            all_allowed &= a.allowed;
            if a.allowed {
                let o = self.obligations_of(&a.determining);
                obligations.approval_required |= o.approval_required;
                obligations.approval_by_on_behalf_of = both(
                    obligations.approval_by_on_behalf_of,
                    o.approval_by_on_behalf_of,
                );
                obligations.exception_allowed &= o.exception_allowed;
                obligations.unbound_delegation &= o.unbound_delegation;
                obligations.max_ttl = min_of(obligations.max_ttl, o.max_ttl);
                obligations.approval_window =
                    min_of(obligations.approval_window, o.approval_window);
            }
            let target = if a.allowed {
                &mut allowed_by
            } else {
                &mut denied_by
            };
            for p in a.determining {
                if !target.contains(&p) {
                    target.push(p);
                }
            }
            errors.extend(a.errors);
        }
        let exception = facts.action == Action::StartTask && facts.exception;
        if exception && all_allowed && errors.is_empty() && !obligations.exception_allowed {
            // An exception needs a permit that says so, for every tool.
            errors.push("no policy allows an exception for this request".into());
        }
        let verdict = if !(all_allowed && errors.is_empty()) {
            Verdict::Deny
        } else if obligations.approval_required || exception {
            Verdict::NeedsApproval
        } else {
            Verdict::Allow
        };
        Decision {
            verdict,
            exception,
            determining_policies: match verdict {
                Verdict::Allow | Verdict::NeedsApproval => allowed_by,
                // Permits that matched did not decide a deny: the forbids
                // (or nothing) did.
                Verdict::Deny if !all_allowed => denied_by,
                Verdict::Deny => allowed_by,
            },
            errors,
            policy_version: self.version().to_owned(),
            obligations: match verdict {
                Verdict::Deny => Obligations::default(),
                Verdict::Allow | Verdict::NeedsApproval => obligations,
            },
            unanswerable: false,
        }
    }

    /// The annotations of the permits that decided an allow.
    pub(crate) fn obligations_of(&self, permits: &[String]) -> Obligations {
        let mut o = Obligations::default();
        for id in permits {
            let Some(p) = self.obligations.get(id) else {
                continue;
            };
            o.approval_required |= p.approval_required;
            o.approval_by_on_behalf_of =
                both(o.approval_by_on_behalf_of, p.approval_by_on_behalf_of);
            o.exception_allowed |= p.exception_allowed;
            o.unbound_delegation |= p.unbound_delegation;
            o.max_ttl = min_of(o.max_ttl, p.max_ttl);
            o.approval_window = min_of(o.approval_window, p.approval_window);
        }
        o
    }

    /// Which policies permit and which forbid a request, tool by tool, and
    /// the decision: for people writing and debugging policies.
    pub fn explain(&self, facts: &Facts<'_>) -> Result<Explanation, String> {
        let mut permits = cedar_policy::PolicySet::new();
        let mut forbids = cedar_policy::PolicySet::new();
        for p in self.policies.policies() {
            let target = match p.effect() {
                cedar_policy::Effect::Permit => &mut permits,
                cedar_policy::Effect::Forbid => &mut forbids,
            };
            target.add(p.clone()).map_err(|e| e.to_string())?;
        }
        // With every request permitted, the forbids that match are the reason for a deny.
        let all = cedar_policy::Policy::parse(
            Some(cedar_policy::PolicyId::new("writ-explain-permit-all")),
            "permit (principal, action, resource);",
        )
        .map_err(|e| e.to_string())?;
        forbids.add(all).map_err(|e| e.to_string())?;
        let mut per_tool = Vec::new();
        for cap in facts.capabilities.iter() {
            let tool = facts
                .tools
                .iter()
                .find(|t| t.name == cap.tool)
                .ok_or_else(|| format!("unknown tool {}", cap.tool))?;
            let all = &crate::context_reads::ALL;
            let p = self.answer(&permits, all, facts, tool, cap)?;
            let f = self.answer(&forbids, all, facts, tool, cap)?;
            let mut errors = p.errors;
            errors.extend(f.errors);
            per_tool.push(ToolExplanation {
                tool: cap.tool.to_string(),
                permits: if p.allowed { p.determining } else { Vec::new() },
                forbids: if f.allowed { Vec::new() } else { f.determining },
                errors,
            });
        }
        Ok(Explanation {
            decision: self.decide(facts),
            tools: per_tool,
        })
    }

    /// The one place a Cedar request is assembled. Its context holds
    /// what `policies` read of it (`reads`).
    fn answer(
        &self,
        policies: &cedar_policy::PolicySet,
        reads: &ContextReads,
        facts: &Facts<'_>,
        tool: &Tool,
        cap: &Capability,
    ) -> Result<Answer, String> {
        let n = &self.names;
        let context = self.context(facts, cap, reads)?;
        let principal = facts.chain.principal;
        let agent_uid =
            |name: &str| EntityUid::from_type_name_and_id(n.agent.clone(), EntityId::new(name));

        let action = n.action(facts.action).clone();
        let principal_uid = agent_uid(principal.name.as_str());
        let resource =
            EntityUid::from_type_name_and_id(n.tool.clone(), EntityId::new(tool.name.as_str()));
        let request = Request::new(principal_uid, action, resource, context, None)
            .map_err(|e| format!("request: {e}"))?;
        let entities = self.entities(facts, tool)?;
        let answer = Self::evaluate(&request, policies, &entities);
        // The request is built from typed facts, so its shape is fixed by
        // this code; debug builds (every test) validate it, with the whole
        // context, against the schema, and check that the whole context
        // answers as the part the policies read did. Release builds skip
        // that cost. A context that did not fit would still deny: missing
        // attributes are evaluation errors.
        #[cfg(debug_assertions)]
        {
            let whole = Request::new(
                request
                    .principal()
                    .cloned()
                    .ok_or("request: no principal")?,
                request.action().cloned().ok_or("request: no action")?,
                request.resource().cloned().ok_or("request: no resource")?,
                self.context(facts, cap, &crate::context_reads::ALL)?,
                Some(&self.schema),
            )
            .map_err(|e| format!("request: {e}"))?;
            let w = Self::evaluate(&whole, policies, &entities);
            debug_assert_eq!(
                (w.allowed, &w.determining, &w.errors),
                (answer.allowed, &answer.determining, &answer.errors),
                "the context's attributes the policies read must answer as the whole context"
            );
        }
        Ok(answer)
    }

    fn evaluate(
        request: &Request,
        policies: &cedar_policy::PolicySet,
        entities: &cedar_policy::Entities,
    ) -> Answer {
        let response = Authorizer::new().is_authorized(request, policies, entities);
        let (determining, errors) = crate::decide::reasons(&response);
        Answer {
            allowed: response.decision() == CedarDecision::Allow && errors.is_empty(),
            determining,
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicySource;
    use crate::facts::{Behaviour, CallRequest, Chain, InstanceFacts, TaskAsk, TaskView};
    use writ_core::Timestamp;
    use writ_core::api::{Agent, Attestation, Task, TaskStatus};

    fn set(text: &str) -> PolicySet {
        PolicySet::compile(vec![PolicySource {
            name: "t.cedar".into(),
            text: text.into(),
        }])
        .unwrap()
    }

    fn examples() -> PolicySet {
        PolicySet::load_dir(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/policies"
        )))
        .unwrap()
    }

    fn agent(name: &str, attrs: &[(&str, &str)]) -> Agent {
        Agent {
            name: name.parse().unwrap(),
            spiffe_id: format!("spiffe://writ.local/agent/{name}"),
            attestation: Attestation::JoinToken,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workload: None,
            quarantined: false,
            created_at: Timestamp::from_secs(0),
        }
    }

    fn tool(name: &str, scopes: &[&str], attrs: &[(&str, &str)]) -> Tool {
        Tool {
            name: name.parse().unwrap(),
            audience: format!("https://{name}.example"),
            scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            upstream: None,
            secret_header: None,
            gateway: None,
            created_at: Timestamp::from_secs(0),
        }
    }

    const INSTANCE: InstanceFacts<'static> = InstanceFacts {
        id: "ins_1",
        attestation: "join_token",
    };

    fn start(
        p: &PolicySet,
        a: &Agent,
        tools: &[Tool],
        caps: &[&str],
        obo: Option<&str>,
        denials: u32,
        now: Timestamp,
    ) -> Decision {
        let capabilities: Vec<Capability> = caps
            .iter()
            .map(|c| Capability::parse_short(c).unwrap())
            .collect();
        let ask = TaskAsk {
            intent: "triage tickets",
            capabilities: &capabilities,
            on_behalf_of: obo,
            ttl: 600,
            exception: false,
        };
        let facts = Facts::start_task(
            a,
            INSTANCE,
            &ask,
            tools.iter().collect(),
            Behaviour {
                denials_5m: denials,
                requires_approval: false,
            },
            now,
        );
        p.decide(&facts)
    }

    fn decide(
        p: &PolicySet,
        caps: &[&str],
        obo: Option<&str>,
        attrs: &[(&str, &str)],
        now: Timestamp,
    ) -> Decision {
        let a = agent("demo-agent", attrs);
        let tools = [tool("tickets", &["read", "write", "delete"], &[])];
        start(p, &a, &tools, caps, obo, 0, now)
    }

    fn task(caps: &[&str], parent: Option<&str>, depth: u32) -> Task {
        Task {
            task_id: "task_0123456789abcdefghij01".parse().unwrap(),
            agent: "demo-agent".parse().unwrap(),
            instance_id: "ins_0123456789abcdefghij01".parse().unwrap(),
            intent: "triage tickets".into(),
            // As the broker stores them: normalised (sorted by tool).
            capabilities: writ_core::scope::normalize(
                &caps
                    .iter()
                    .map(|c| Capability::parse_short(c).unwrap())
                    .collect::<Vec<_>>(),
            ),
            on_behalf_of: None,
            status: TaskStatus::Active,
            created_at: Timestamp::from_secs(1_799_999_000),
            lease_expires_at: Timestamp::from_secs(1_800_000_300),
            expires_at: Timestamp::from_secs(1_800_000_600),
            ended_at: None,
            end_reason: None,
            policy_version: "v".into(),
            parent_task_id: parent.map(|_| "task_0123456789abcdefghij00".parse().unwrap()),
            depth,
            exception: false,
        }
    }

    const NOON_TUESDAY: Timestamp = Timestamp::from_secs(1_795_780_800); // 2026-11-24T12:00:00Z

    /// A decision builds only the context its slice reads: the tool's own
    /// policies and the general ones together, forbids included. Each
    /// attribute below is read by one policy alone; dropping it from the
    /// context would turn that policy's answer into an error (a denial),
    /// or let a forbid that matches go unseen.
    #[test]
    fn a_slice_builds_every_context_attribute_its_policies_read() {
        let p = set(r#"
            @id("tickets-own")
            permit (principal, action == Action::"StartTask", resource == Tool::"tickets")
            when { context.ttl <= 600 && context.intent like "triage*" };
            @id("no-long-chains")
            forbid (principal, action, resource) when { context.depth > 0 };
            @id("only-join-tokens")
            forbid (principal, action, resource) when { context.attestation != "join_token" };
            @id("no-deletes-asked")
            forbid (principal, action, resource)
            when { context.capabilities.contains({"tool": "tickets", "scopes": ["delete"]}) };
        "#);
        let slice = p.slices.get("StartTask", "tickets").unwrap();
        assert_eq!(
            slice.reads,
            ContextReads::Only(
                ["attestation", "capabilities", "depth", "intent", "ttl"]
                    .map(String::from)
                    .to_vec()
            )
        );
        let ok = decide(&p, &["tickets:read"], None, &[], NOON_TUESDAY);
        assert_eq!(ok.verdict(), Verdict::Allow, "{ok:?}");
        let forbidden = decide(&p, &["tickets:delete"], None, &[], NOON_TUESDAY);
        assert_eq!(forbidden.verdict(), Verdict::Deny);
        assert!(
            forbidden
                .determining_policies()
                .iter()
                .any(|d| d == "no-deletes-asked"),
            "{forbidden:?}"
        );
    }

    #[test]
    fn example_pack_decides_as_documented() {
        let p = examples();
        let d = decide(&p, &["tickets:read"], None, &[], NOON_TUESDAY);
        assert_eq!(d.verdict(), Verdict::Allow, "{d:?}");
        assert_eq!(d.determining_policies(), ["read-only"]);

        let d = decide(&p, &["tickets:write"], None, &[], NOON_TUESDAY);
        assert_eq!(d.verdict(), Verdict::Deny);
        assert!(d.determining_policies().is_empty());
        assert_eq!(d.reason(), "denied: no policy permits this request");

        let d = decide(
            &p,
            &["tickets:write"],
            Some("user:alice"),
            &[],
            NOON_TUESDAY,
        );
        assert_eq!(d.verdict(), Verdict::Allow);

        let d = decide(
            &p,
            &["tickets:read,delete"],
            Some("user:alice"),
            &[],
            NOON_TUESDAY,
        );
        assert_eq!(d.verdict(), Verdict::Deny);
        assert_eq!(d.determining_policies(), ["no-deletes"]);

        let high = [("risk_tier", "high")];
        let d = decide(&p, &["tickets:read"], None, &high, NOON_TUESDAY);
        assert_eq!(d.verdict(), Verdict::Allow);
        let night = NOON_TUESDAY.add_secs(12 * 3600);
        let d = decide(&p, &["tickets:read"], None, &high, night);
        assert_eq!(d.determining_policies(), ["high-risk-business-hours"]);
    }

    #[test]
    fn empty_set_and_empty_request_deny() {
        let p = PolicySet::empty().unwrap();
        let d = decide(&p, &["tickets:read"], None, &[], NOON_TUESDAY);
        assert_eq!(d.verdict(), Verdict::Deny);
        let d = decide(&examples(), &[], None, &[], NOON_TUESDAY);
        assert_eq!(d.verdict(), Verdict::Deny);
    }

    #[test]
    fn tags_are_visible_to_policy() {
        let p = set(
            r#"permit (principal, action, resource) when { principal.hasTag("team") && principal.getTag("team") == "payments" };"#,
        );
        let team = |t| decide(&p, &["tickets:read"], None, &[("team", t)], NOON_TUESDAY);
        assert_eq!(team("payments").verdict(), Verdict::Allow);
        assert_eq!(team("growth").verdict(), Verdict::Deny);
    }

    #[test]
    fn invalid_policies_are_refused_with_a_location() {
        let bad = PolicySet::compile(vec![PolicySource {
            name: "bad.cedar".into(),
            text: "permit (principal, action, resource)\nwhen { context.nope == 1 };".into(),
        }])
        .unwrap_err()
        .to_string();
        assert!(bad.starts_with("bad.cedar:2:"), "{bad}");

        let syntax = PolicySet::compile(vec![PolicySource {
            name: "syn.cedar".into(),
            text: "permit (principal, action, resource) when { ".into(),
        }])
        .unwrap_err()
        .to_string();
        assert!(syntax.starts_with("syn.cedar:1:"), "{syntax}");

        let dup = PolicySet::compile(vec![PolicySource {
            name: "d.cedar".into(),
            text: "@id(\"x\") permit (principal, action, resource);\n@id(\"x\") forbid (principal, action, resource);".into(),
        }])
        .unwrap_err();
        assert!(matches!(dup, crate::PolicyError::DuplicateId { .. }));
    }

    #[test]
    fn version_is_a_content_hash() {
        let a = set("permit (principal, action, resource);");
        let b = set("permit (principal, action, resource);");
        let c = set("forbid (principal, action, resource);");
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        assert!(a.version().starts_with("sha256:"));
    }

    #[test]
    fn user_data_tools_need_a_human_and_agents_a_rule_holds_wait_for_a_person() {
        let p = examples();
        let a = agent("demo-agent", &[]);
        let crm = [tool("crm", &["read"], &[("data", "user")])];
        let d = start(&p, &a, &crm, &["crm:read"], None, 0, NOON_TUESDAY);
        assert_eq!(d.determining_policies(), ["user-data-needs-a-human"]);
        let d = start(
            &p,
            &a,
            &crm,
            &["crm:read"],
            Some("user:alice"),
            0,
            NOON_TUESDAY,
        );
        assert_eq!(d.verdict(), Verdict::Allow);

        // Refusals alone no longer stop an agent in the example pack (its
        // detection rules do that); a rule's hold makes its tasks wait for
        // a person, and never widens what it may get.
        let plain = [tool("crm", &["read", "write"], &[])];
        let d = start(&p, &a, &plain, &["crm:read"], None, 50, NOON_TUESDAY);
        assert_eq!(d.verdict(), Verdict::Allow);
        let held = |caps: &[&str]| {
            let capabilities: Vec<Capability> = caps
                .iter()
                .map(|c| Capability::parse_short(c).unwrap())
                .collect();
            let ask = TaskAsk {
                intent: "triage tickets",
                capabilities: &capabilities,
                on_behalf_of: None,
                ttl: 600,
                exception: false,
            };
            p.decide(&Facts::start_task(
                &a,
                INSTANCE,
                &ask,
                plain.iter().collect(),
                Behaviour {
                    denials_5m: 0,
                    requires_approval: true,
                },
                NOON_TUESDAY,
            ))
        };
        let d = held(&["crm:read"]);
        assert_eq!(d.verdict(), Verdict::NeedsApproval);
        // In one order, every time (Cedar's own is a hash set's).
        assert_eq!(d.determining_policies(), ["held-after-a-rule", "read-only"]);
        for _ in 0..20 {
            assert_eq!(
                held(&["crm:read"]).determining_policies(),
                d.determining_policies()
            );
        }
        assert_eq!(held(&["crm:write"]).verdict(), Verdict::Deny);
    }

    fn delegate(p: &PolicySet, parent: &Task, caps: &[&str]) -> Decision {
        let planner = agent("demo-agent", &[]);
        let helper = agent("helper", &[]);
        let tools = [tool("tickets", &["read", "write"], &[])];
        let view = TaskView::of_task(parent, "join_token");
        let facts = Facts::delegate_task(
            Chain::new(&helper, [&planner]),
            "join_token",
            &view,
            caps.iter()
                .map(|c| Capability::parse_short(c).unwrap())
                .collect(),
            tools.iter().collect(),
            Behaviour::default(),
            Timestamp::from_secs(1_800_000_000),
        );
        p.decide(&facts)
    }

    #[test]
    fn delegation_depth_is_capped_by_the_example_pack() {
        let p = examples();
        // A child of a depth-1 task is at depth 2: allowed; of a depth-2
        // task, at depth 3: refused.
        let d = delegate(
            &p,
            &task(&["tickets:read"], Some("task_0"), 1),
            &["tickets:read"],
        );
        assert_eq!(d.verdict(), Verdict::Allow, "{d:?}");
        let d = delegate(
            &p,
            &task(&["tickets:read"], Some("task_0"), 2),
            &["tickets:read"],
        );
        assert_eq!(d.determining_policies(), ["delegation-depth-2"]);
        let d = delegate(&p, &task(&["tickets:write"], None, 0), &["tickets:write"]);
        assert_eq!(d.verdict(), Verdict::Deny, "sub-agents get read-only work");
    }

    #[test]
    fn p1_p2_conflicts_silence_and_evaluation_errors_all_deny() {
        let d = |p: &PolicySet| decide(p, &["tickets:read"], None, &[], NOON_TUESDAY);
        // permit and forbid both match: deny.
        let both = set(
            "@id(\"p\") permit (principal, action, resource);\n@id(\"f\") forbid (principal, action, resource);",
        );
        let r = d(&both);
        assert_eq!(r.verdict(), Verdict::Deny);
        assert_eq!(r.determining_policies(), ["f"]);
        // nothing matches: deny.
        let silent =
            set("@id(\"p\") permit (principal, action, resource) when { context.depth > 5 };");
        assert_eq!(d(&silent).verdict(), Verdict::Deny);
        // An evaluation error (overflow) in a forbid does not let a permit through.
        let overflow = set("@id(\"p\") permit (principal, action, resource);\n\
             @id(\"f\") forbid (principal, action, resource) when { context.ttl * 9223372036854775807 > 0 };");
        let r = d(&overflow);
        assert_eq!(
            r.verdict(),
            Verdict::Deny,
            "an evaluation error must deny: {r:?}"
        );
        assert!(!r.errors().is_empty());
        // ...nor one in a permit annotated for approval.
        let held = set(
            "@id(\"p\") @approval(\"required\") permit (principal, action, resource);\n\
             @id(\"f\") forbid (principal, action, resource) when { context.ttl * 9223372036854775807 > 0 };",
        );
        assert_eq!(d(&held).verdict(), Verdict::Deny);
    }

    #[test]
    fn approval_annotations_hold_the_request_with_their_window() {
        let p = set(
            "@id(\"held\") @approval(\"required\") @approval_window(\"300\") permit (principal, action, resource);",
        );
        let d = decide(&p, &["tickets:read"], None, &[], NOON_TUESDAY);
        assert_eq!(d.verdict(), Verdict::NeedsApproval);
        assert_eq!(d.determining_policies(), ["held"]);
        assert_eq!(d.approval_window(), 300);
        assert_eq!(d.reason(), "approval required by held");
        let once =
            set("@id(\"held\") @approval(\"required\") permit (principal, action, resource);");
        assert_eq!(
            decide(&once, &["tickets:read"], None, &[], NOON_TUESDAY).approval_window(),
            0
        );
        // A forbid still wins over a permit that would hold.
        let forbidden = set(
            "@id(\"held\") @approval(\"required\") permit (principal, action, resource);\n\
             @id(\"no\") forbid (principal, action, resource);",
        );
        let d = decide(&forbidden, &["tickets:read"], None, &[], NOON_TUESDAY);
        assert_eq!(d.verdict(), Verdict::Deny);
        assert_eq!(d.determining_policies(), ["no"]);
    }

    #[test]
    fn the_person_acted_for_may_approve_only_when_every_holding_permit_says_so() {
        let d = |text: &str| decide(&set(text), &["tickets:read"], None, &[], NOON_TUESDAY);
        let own = d(
            "@id(\"held\") @approval(\"required\") @approval_by(\"on_behalf_of\") permit (principal, action, resource);",
        );
        assert_eq!(own.verdict(), Verdict::NeedsApproval);
        assert!(own.on_behalf_of_may_approve());
        // Another holding permit without it: approvers only.
        let mixed = d(
            "@id(\"held\") @approval(\"required\") @approval_by(\"on_behalf_of\") permit (principal, action, resource);\n\
             @id(\"strict\") @approval(\"required\") permit (principal, action, resource);",
        );
        assert!(!mixed.on_behalf_of_may_approve());
        // A permit that does not hold has no say.
        let plain = d(
            "@id(\"held\") @approval(\"required\") @approval_by(\"on_behalf_of\") permit (principal, action, resource);\n\
             @id(\"open\") permit (principal, action, resource);",
        );
        assert!(plain.on_behalf_of_may_approve());
        // Without approval, or only the annotation: nothing to approve.
        assert!(
            !d("@id(\"x\") @approval_by(\"on_behalf_of\") permit (principal, action, resource);")
                .on_behalf_of_may_approve()
        );
        assert!(
            !d("@id(\"held\") @approval(\"required\") permit (principal, action, resource);")
                .on_behalf_of_may_approve()
        );
    }

    #[test]
    fn exceptions_need_a_permit_that_allows_them_and_then_approval() {
        let a = agent("demo-agent", &[]);
        let tools = [tool("tickets", &["read"], &[])];
        let caps = [Capability::parse_short("tickets:read").unwrap()];
        let ask = TaskAsk {
            intent: "long job",
            capabilities: &caps,
            on_behalf_of: None,
            ttl: 86_400,
            exception: true,
        };
        let facts = Facts::start_task(
            &a,
            INSTANCE,
            &ask,
            tools.iter().collect(),
            Behaviour::default(),
            NOON_TUESDAY,
        );
        let plain = set("@id(\"p\") permit (principal, action, resource);");
        let d = plain.decide(&facts);
        assert_eq!(d.verdict(), Verdict::Deny);
        assert_eq!(
            d.reason(),
            "denied by p (no policy allows an exception for this request)"
        );
        let allowing =
            set("@id(\"p\") @exception(\"allowed\") permit (principal, action, resource);");
        let d = allowing.decide(&facts);
        assert_eq!(d.verdict(), Verdict::NeedsApproval);
        assert!(d.exception());
    }

    #[test]
    fn policies_see_the_instance_and_the_task_as_entities() {
        let p = set(r#"
            @id("own-instance-read-only-children")
            permit (principal, action == Action::"ExchangeToken", resource)
            when {
              context has instance && context.instance.agent == principal &&
              context.instance.attestation == "join_token" &&
              context has task && context.task.intent like "*tickets*" &&
              context.task has started_at && context.task.started_at > 0 &&
              context.task.capabilities.contains({tool: "tickets", scopes: ["read", "write"]})
            };
            @id("no-children-of-children")
            forbid (principal, action, resource)
            when { context has task && context.task has parent };
        "#);
        let a = agent("demo-agent", &[]);
        let tickets = tool("tickets", &["read", "write"], &[]);
        let exchange = |t: &Task| {
            let view = TaskView::of_task(t, "join_token");
            let facts = Facts::exchange_token(
                Chain::alone(&a),
                &view,
                Capability::parse_short("tickets:read").unwrap(),
                &tickets,
                Behaviour::default(),
                Timestamp::from_secs(1_800_000_000),
            );
            p.decide(&facts)
        };
        let d = exchange(&task(&["tickets:read,write"], None, 0));
        assert_eq!(d.verdict(), Verdict::Allow, "{d:?}");
        // The same task id with other contents is decided on the new ones.
        let d = exchange(&task(&["tickets:read,write"], Some("task_0"), 1));
        assert_eq!(d.determining_policies(), ["no-children-of-children"]);
        let d = exchange(&task(&["tickets:read"], None, 0));
        assert_eq!(d.verdict(), Verdict::Deny, "{d:?}");
        // Without the task and the instance (an AuthZEN question about no
        // task), the permit's conditions do not hold.
        let caps = [Capability::parse_short("tickets:read").unwrap()];
        let ask = TaskAsk {
            intent: "triage tickets",
            capabilities: &caps,
            on_behalf_of: None,
            ttl: 600,
            exception: false,
        };
        let facts = Facts::untasked(
            Action::ExchangeToken,
            &a,
            None,
            &ask,
            &tickets,
            None,
            Behaviour::default(),
            Timestamp::from_secs(1_800_000_000),
        );
        assert_eq!(p.decide(&facts).verdict(), Verdict::Deny);
    }

    #[test]
    fn kept_entities_never_answer_for_a_changed_agent_tool_or_task() {
        let p = set(r#"
            @id("team-a-reads-tickets")
            permit (principal, action == Action::"StartTask", resource == Tool::"tickets")
            when {
              principal has owner && principal.owner == "team-a" && !principal.quarantined &&
              resource.audience == "https://tickets.example"
            };
        "#);
        let a = agent("demo-agent", &[("owner", "team-a")]);
        let tools = [tool("tickets", &["read"], &[])];
        let ask = |a: &Agent, tools: &[Tool]| {
            start(&p, a, tools, &["tickets:read"], None, 0, NOON_TUESDAY).verdict()
        };
        assert_eq!(ask(&a, &tools), Verdict::Allow);
        assert_eq!(ask(&a, &tools), Verdict::Allow);
        assert_eq!(
            p.entity_cache.builds(),
            1,
            "the second decision used the kept entities"
        );

        // Same names, changed facts: each is decided on what it is now.
        let mut quarantined = a.clone();
        quarantined.quarantined = true;
        assert_eq!(ask(&quarantined, &tools), Verdict::Deny);
        assert_eq!(
            ask(&agent("demo-agent", &[("owner", "team-b")]), &tools),
            Verdict::Deny
        );
        let mut moved = tools[0].clone();
        moved.audience = "https://elsewhere.example".into();
        assert_eq!(ask(&a, &[moved]), Verdict::Deny);
        assert_eq!(ask(&a, &tools), Verdict::Allow);
        assert_eq!(p.entity_cache.builds(), 5, "every change was built afresh");
        assert_eq!(p.entity_cache.len(), 1, "one entry per agent and tool");

        // A policy reload starts with nothing kept.
        let reloaded = set(&p.sources()[0].text);
        assert_eq!(reloaded.entity_cache.len(), 0);
    }

    #[test]
    fn kept_entities_are_built_afresh_when_any_fact_they_came_from_changes() {
        use crate::entity_cache::Inputs;
        let p = set("permit (principal, action, resource);");
        let root = agent("root-agent", &[("owner", "team-a")]);
        let principal = agent("demo-agent", &[("owner", "team-a")]);
        let tickets = tool("tickets", &["read", "write"], &[("tier", "1")]);
        let stored = task(&["tickets:read,write"], None, 0);
        let view = TaskView::of_task(&stored, "join_token");
        let agents = [&root, &principal];
        let humans = ["alice"];
        let base = Inputs {
            agents: &agents,
            principal: &principal,
            tool: &tickets,
            humans: &humans,
            instance: Some(INSTANCE),
            task: Some(&view),
        };

        let mut quarantined_root = root.clone();
        quarantined_root.quarantined = true;
        let chain_quarantined = [&quarantined_root, &principal];
        let mut retagged = principal.clone();
        retagged
            .attributes
            .insert("risk_tier".into(), "high".into());
        let chain_retagged = [&root, &retagged];
        let mut narrower = tickets.clone();
        narrower.scopes.pop();
        let mut retiered = tickets.clone();
        retiered.attributes.insert("tier".into(), "2".into());
        let bob = ["bob"];
        let mut other_intent = stored.clone();
        other_intent.intent = "export every ticket".into();
        let other_intent = TaskView::of_task(&other_intent, "join_token");
        let mut excepted = stored.clone();
        excepted.exception = true;
        let excepted = TaskView::of_task(&excepted, "join_token");
        let mut later = stored.clone();
        later.created_at = Timestamp::from_secs(1_799_999_001);
        let later = TaskView::of_task(&later, "join_token");
        let oidc = TaskView::of_task(&stored, "oidc");
        let mut variants: Vec<(&str, Inputs<'_>)> = vec![
            (
                "an earlier agent quarantined",
                Inputs {
                    agents: &chain_quarantined,
                    ..base
                },
            ),
            (
                "the principal's attributes",
                Inputs {
                    agents: &chain_retagged,
                    principal: &retagged,
                    ..base
                },
            ),
            (
                "the tool's scopes",
                Inputs {
                    tool: &narrower,
                    ..base
                },
            ),
            (
                "the tool's attributes",
                Inputs {
                    tool: &retiered,
                    ..base
                },
            ),
            (
                "the human acted for",
                Inputs {
                    humans: &bob,
                    ..base
                },
            ),
            (
                "no human",
                Inputs {
                    humans: &[],
                    ..base
                },
            ),
            (
                "the instance's attestation",
                Inputs {
                    instance: Some(InstanceFacts {
                        id: INSTANCE.id,
                        attestation: "oidc",
                    }),
                    ..base
                },
            ),
            (
                "no instance",
                Inputs {
                    instance: None,
                    ..base
                },
            ),
            ("no task", Inputs { task: None, ..base }),
        ];
        let tasks = [
            ("the task's intent", &other_intent),
            ("the task's exception", &excepted),
            ("the task's start", &later),
            ("the task's attestation", &oidc),
        ];
        variants.extend(tasks.map(|(what, t)| {
            (
                what,
                Inputs {
                    task: Some(t),
                    ..base
                },
            )
        }));
        for (what, changed) in variants {
            let cache = crate::entity_cache::EntityCache::default();
            let build = |i: &Inputs<'_>| p.build_entities(i);
            cache.get_or_build(&base, || build(&base)).unwrap();
            cache.get_or_build(&base, || build(&base)).unwrap();
            assert_eq!(cache.builds(), 1, "{what}: the same facts are kept");
            cache.get_or_build(&changed, || build(&changed)).unwrap();
            assert_eq!(cache.builds(), 2, "{what}: a change is built afresh");
        }
    }

    #[test]
    fn a_tool_token_and_the_store_give_a_gateway_the_same_task() {
        let t = task(&["tickets:read,write", "crm:read"], Some("task_0"), 1);
        let ctx = TaskView::of_task_claim(&t, "spiffe_x509");
        let claims = writ_core::token::AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: 0,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            client_id: t.instance_id.to_string(),
            scope: Some("read".into()),
            task: Some(t.task_id.to_string()),
            obo: t.on_behalf_of.clone(),
            cnf: None,
            act: None,
            exception: t.exception,
            intent: Some(t.intent.clone()),
            task_ctx: Some(ctx),
        };
        let from_token = TaskView::of_token(&claims).unwrap();
        let from_store = TaskView::of_task(&t, "spiffe_x509");
        assert_eq!(format!("{from_token:?}"), format!("{from_store:?}"));

        let p = examples();
        let a = agent("demo-agent", &[]);
        let tickets = tool("tickets", &["read", "write"], &[]);
        let req = CallRequest {
            method: "GET",
            path: "/x",
            ..CallRequest::default()
        };
        let scopes: std::collections::BTreeSet<writ_core::Scope> = ["read".parse().unwrap()].into();
        let now = Timestamp::from_secs(1_800_000_000);
        let d1 = p.decide(&Facts::call_tool(
            Chain::alone(&a),
            &from_token,
            scopes.clone(),
            &tickets,
            req.clone(),
            Behaviour::default(),
            now,
        ));
        let d2 = p.decide(&Facts::call_tool(
            Chain::alone(&a),
            &from_store,
            scopes,
            &tickets,
            req,
            Behaviour::default(),
            now,
        ));
        assert_eq!(d1, d2);
        assert_eq!(d1.verdict(), Verdict::Allow);
    }
}
