//! AuthZEN search: which subjects may take an action on a resource, which
//! resources a subject may act on, which actions a subject may take on a
//! resource. The candidates are the entities writ knows (registered agents
//! and tools, and `entities.json`), each decided by the same evaluation an
//! access evaluation gets, so every result, asked for again, is `true`.
//!
//! Pages are bounded: at most [`MAX_PAGE`] results, and at most
//! [`MAX_SCAN`] candidates decided per request (a page may then be short,
//! with a `next_token`). The token names where the next page starts and the
//! question it belongs to; one that does not fit is a 400.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_policy::{Action, PolicySet};

use super::authzen::{
    ActionRef, ActionSearch, Evaluation, Found, FoundAction, Mode, PageRequest, PageResponse,
    Resource, ResourceSearch, SearchResponse, Subject, SubjectSearch,
};
use crate::error::Error;

/// Results per page when the request names no limit.
pub const DEFAULT_PAGE: usize = 50;
/// Most results per page.
pub const MAX_PAGE: usize = 100;
/// Most candidates decided for one request.
pub const MAX_SCAN: usize = 1000;

const WRIT_ACTIONS: [Action; 4] = [
    Action::StartTask,
    Action::ExchangeToken,
    Action::DelegateTask,
    Action::CallTool,
];

/// The Cedar type an AuthZEN type stands for.
fn cedar_type(t: &str) -> &str {
    match t {
        "agent" | "instance" => "Agent",
        "tool" => "Tool",
        other => other,
    }
}

/// Where a page starts, and the question it belongs to.
struct Paging {
    offset: usize,
    limit: usize,
    digest: String,
}

impl Paging {
    fn new(page: Option<&PageRequest>, question: &Value, total: usize) -> Result<Self, Error> {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(question.to_string().as_bytes());
        let hex = writ_core::audit::hex(ctx.finish().as_ref());
        let digest = hex.get(..32).unwrap_or(&hex).to_owned();
        let limit = match page.and_then(|p| p.limit) {
            None | Some(0) => DEFAULT_PAGE,
            Some(n) => usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE),
        };
        let offset = match page.and_then(|p| p.token.as_deref()) {
            None | Some("") => 0,
            Some(token) => Self::offset_of(token, &digest, total)
                .ok_or_else(|| Error::Invalid("invalid page token".into()))?,
        };
        Ok(Self {
            offset,
            limit,
            digest,
        })
    }

    fn offset_of(token: &str, digest: &str, total: usize) -> Option<usize> {
        if token.len() > 128 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (offset, of) = text.split_once(':')?;
        let offset: usize = offset.parse().ok()?;
        (of == digest && offset <= total).then_some(offset)
    }

    fn token(&self, next: usize, total: usize) -> String {
        if next >= total {
            return String::new();
        }
        URL_SAFE_NO_PAD.encode(format!("{next}:{}", self.digest))
    }
}

impl super::authzen::AuthZen {
    /// The ids writ knows of one type, sorted: registered agents or tools,
    /// or the entities of a user type in `entities.json`.
    async fn known(&self, policy: &PolicySet, type_: &str) -> Result<Vec<String>, Error> {
        let mut ids: Vec<String> = match type_ {
            "agent" => self
                .store
                .list_agents()
                .await?
                .into_iter()
                .map(|a| a.name.to_string())
                .collect(),
            "tool" => self
                .store
                .list_tools()
                .await?
                .into_iter()
                .map(|t| t.name.to_string())
                .collect(),
            t if policy.declares_type(t) => policy.entity_ids(t),
            _ => Vec::new(),
        };
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Decides candidates from the page's offset; the ones allowed, and
    /// where the next page starts.
    async fn page_of<T>(
        &self,
        candidates: &[T],
        paging: &Paging,
        actor: &str,
        evaluation: impl Fn(&T) -> Evaluation,
    ) -> Result<(Vec<usize>, usize), Error> {
        let mut allowed = Vec::new();
        let mut i = paging.offset;
        let mut scanned = 0;
        while let Some(c) = candidates.get(i) {
            if allowed.len() >= paging.limit || scanned >= MAX_SCAN {
                break;
            }
            let e = evaluation(c);
            if let Ok(ev) = self.evaluate_inner(&e, actor, Mode::Search).await?
                && ev.response.decision
            {
                allowed.push(i);
            }
            i += 1;
            scanned += 1;
        }
        Ok((allowed, i))
    }

    /// A subject or resource search over `candidates` of `type_`: this
    /// page's allowed ones, the token of the next, audited once.
    #[allow(
        clippy::too_many_arguments,
        reason = "one search's question and answer"
    )]
    async fn search_among(
        &self,
        actor: &str,
        what: &str,
        question: Value,
        type_: &str,
        candidates: Vec<String>,
        page: Option<&PageRequest>,
        version: &str,
        evaluation: impl Fn(&String) -> Evaluation,
    ) -> Result<SearchResponse<Found>, Error> {
        let paging = Paging::new(page, &question, candidates.len())?;
        let (allowed, next) = self
            .page_of(&candidates, &paging, actor, evaluation)
            .await?;
        let results: Vec<Found> = allowed
            .iter()
            .filter_map(|i| candidates.get(*i))
            .map(|id| Found {
                type_: type_.to_owned(),
                id: id.clone(),
            })
            .collect();
        self.audit_search(actor, what, question, results.len(), version)
            .await?;
        Ok(SearchResponse {
            page: PageResponse {
                next_token: paging.token(next, candidates.len()),
                count: results.len(),
            },
            results,
        })
    }

    async fn audit_search(
        &self,
        actor: &str,
        what: &str,
        detail: Value,
        count: usize,
        version: &str,
    ) -> Result<(), Error> {
        let event = AuditEvent::new(AuditKind::Decision, Outcome::Success, actor)
            .policy(version, Vec::new())
            .reason(format!("search {what}: {count} found"))
            .detail(detail);
        self.store.append_audit(self.now(), vec![event]).await?;
        Ok(())
    }

    /// `/access/v1/search/subject`.
    pub async fn search_subjects(
        &self,
        req: SubjectSearch,
        actor: &str,
    ) -> Result<SearchResponse<Found>, Error> {
        let policy = self.policies.live();
        let question = json!({
            "search": "subject", "subject": req.subject.type_, "action": req.action,
            "resource": req.resource, "context": req.context,
        });
        let candidates = if req.subject.type_ == "instance" {
            Vec::new()
        } else {
            self.known(&policy, &req.subject.type_).await?
        };
        let version = policy.version().to_owned();
        self.search_among(
            actor,
            "subject",
            question,
            &req.subject.type_,
            candidates,
            req.page.as_ref(),
            &version,
            |id| Evaluation {
                subject: Subject {
                    type_: req.subject.type_.clone(),
                    id: id.clone(),
                    properties: req.subject.properties.clone(),
                },
                action: req.action.clone(),
                resource: req.resource.clone(),
                context: req.context.clone(),
            },
        )
        .await
    }

    /// `/access/v1/search/resource`: e.g. which tools an agent may call.
    pub async fn search_resources(
        &self,
        req: ResourceSearch,
        actor: &str,
    ) -> Result<SearchResponse<Found>, Error> {
        let policy = self.policies.live();
        let question = json!({
            "search": "resource", "subject": req.subject, "action": req.action,
            "resource": req.resource.type_, "context": req.context,
        });
        let candidates = self.known(&policy, &req.resource.type_).await?;
        let version = policy.version().to_owned();
        self.search_among(
            actor,
            "resource",
            question,
            &req.resource.type_,
            candidates,
            req.page.as_ref(),
            &version,
            |id| Evaluation {
                subject: req.subject.clone(),
                action: req.action.clone(),
                resource: Resource {
                    type_: req.resource.type_.clone(),
                    id: id.clone(),
                    properties: req.resource.properties.clone(),
                },
                context: req.context.clone(),
            },
        )
        .await
    }

    /// `/access/v1/search/action`: the actions whose schema applies to the
    /// two types (writ's own, between an agent and a tool), those allowed.
    pub async fn search_actions(
        &self,
        req: ActionSearch,
        actor: &str,
    ) -> Result<SearchResponse<FoundAction>, Error> {
        let policy = self.policies.live();
        let question = json!({
            "search": "action", "subject": req.subject, "resource": req.resource,
            "context": req.context,
        });
        let (p, r) = (
            cedar_type(&req.subject.type_),
            cedar_type(&req.resource.type_),
        );
        let mut candidates = policy.actions_between(p, r);
        if (p, r) == ("Agent", "Tool") {
            candidates.extend(WRIT_ACTIONS.iter().map(|a| a.cedar_id().to_owned()));
            candidates.sort();
        }
        let paging = Paging::new(req.page.as_ref(), &question, candidates.len())?;
        let (allowed, next) = self
            .page_of(&candidates, &paging, actor, |name| Evaluation {
                subject: req.subject.clone(),
                action: ActionRef {
                    name: name.clone(),
                    properties: Value::Null,
                },
                resource: req.resource.clone(),
                context: req.context.clone(),
            })
            .await?;
        let results: Vec<FoundAction> = allowed
            .iter()
            .filter_map(|i| candidates.get(*i))
            .map(|name| FoundAction { name: name.clone() })
            .collect();
        self.audit_search(actor, "action", question, results.len(), policy.version())
            .await?;
        Ok(SearchResponse {
            page: PageResponse {
                next_token: paging.token(next, candidates.len()),
                count: results.len(),
            },
            results,
        })
    }
}
