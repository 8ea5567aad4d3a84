//! Nodes: hosts running `writ node`, which attest with a join token and
//! then obtain SVIDs for the local workloads they identified, only for the
//! agents registered on them, and only while neither side is quarantined.

use std::sync::Arc;
use writ_core::api::{
    Agent, Attestation, CreateJoinToken, JoinTokenCreated, JwtSvidIssued, JwtSvidRequest, Node,
    NodeAttest, NodeAttested, NodeEntries, NodeEntry, RegisterNode, Workload, X509SvidIssued,
    X509SvidRequest,
};

use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::{Clock, random};
use writ_store::{Store, StoreError};

use super::hash_secret;
use super::registry::join_token_ttl;
use crate::error::Error;
use crate::spiffe::{Authority, WorkloadKey};

const MAX_SELECTORS: usize = 16;

fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// One selector: what a node can learn about a local process from the
/// kernel.
fn valid_selector(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("unix:") else {
        return false;
    };
    match rest.split_once(':') {
        Some(("uid" | "gid", n)) => {
            !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit())
        }
        Some(("path", p)) => p.starts_with('/') && p.len() <= 4096 && !p.contains('\0'),
        Some(("sha256", h)) => {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        }
        _ => false,
    }
}

/// A SPIFFE agent of writ's own trust domain needs a workload (a node and
/// selectors); one of a federated trust domain names its SPIFFE ID there
/// and has none; no other agent has one.
pub(crate) fn check_workload(
    a: &Attestation,
    w: Option<&Workload>,
    trust_domain: &str,
    federated: &[String],
) -> Result<(), Error> {
    match (a, w) {
        (
            Attestation::Spiffe {
                spiffe_id: Some(id),
            },
            None,
        ) => {
            let td = crate::spiffe::trust_domain_of(id)
                .ok_or_else(|| Error::Invalid(format!("{id:?} is not a SPIFFE ID")))?;
            if td == trust_domain {
                return Err(Error::Invalid(format!(
                    "{id} is in writ's own trust domain: register the agent with a workload instead"
                )));
            }
            if !federated.iter().any(|f| f == td) {
                return Err(Error::Invalid(format!(
                    "trust domain {td} is not federated (writ serve --federate {td}=BUNDLE)"
                )));
            }
            Ok(())
        }
        (Attestation::Spiffe { spiffe_id: Some(_) }, Some(_)) => Err(Error::Invalid(
            "an agent of a federated trust domain has no workload on a writ node".into(),
        )),
        (Attestation::Spiffe { spiffe_id: None }, Some(w)) => {
            if !valid_node_name(&w.node) {
                return Err(Error::Invalid(format!("bad node name {:?}", w.node)));
            }
            if w.selectors.is_empty() || w.selectors.len() > MAX_SELECTORS {
                return Err(Error::Invalid(format!(
                    "a workload needs 1 to {MAX_SELECTORS} selectors"
                )));
            }
            if let Some(bad) = w.selectors.iter().find(|s| !valid_selector(s)) {
                return Err(Error::Invalid(format!(
                    "bad selector {bad:?}: expected unix:uid:N, unix:gid:N, unix:path:/ABS or unix:sha256:HEX"
                )));
            }
            // The kernel fixes uid and gid when a workload connects; path
            // and digest only narrow an identity down within a user.
            if !w
                .selectors
                .iter()
                .any(|s| s.starts_with("unix:uid:") || s.starts_with("unix:gid:"))
            {
                return Err(Error::Invalid(
                    "a workload's selectors must name a user or group (unix:uid:N or unix:gid:N)"
                        .into(),
                ));
            }
            Ok(())
        }
        (Attestation::Spiffe { spiffe_id: None }, None) => Err(Error::Invalid(
            "a spiffe agent needs a workload: {\"node\": ..., \"selectors\": [...]}".into(),
        )),
        (_, Some(_)) => Err(Error::Invalid(
            "only an agent attesting with spiffe has a workload".into(),
        )),
        (_, None) => Ok(()),
    }
}

/// Nodes and the SVIDs they obtain for their workloads: a service of its
/// own, holding only the store, the SPIFFE authority, the clock and the
/// settings it reads.
pub struct Nodes {
    store: Arc<dyn Store>,
    spiffe: Arc<Authority>,
    clock: Arc<dyn Clock>,
    settings: Settings,
}

/// What nodes read of the broker's configuration.
struct Settings {
    trust_domain: String,
    max_join_token_ttl: i64,
    x509_svid_ttl: i64,
    jwt_svid_ttl: i64,
}

impl Nodes {
    pub(super) fn new(h: &super::Handles) -> Self {
        let c = &h.config;
        Self {
            store: Arc::clone(&h.store),
            spiffe: Arc::clone(&h.spiffe),
            clock: Arc::clone(&h.clock),
            settings: Settings {
                trust_domain: c.trust_domain.clone(),
                max_join_token_ttl: c.max_join_token_ttl,
                x509_svid_ttl: c.x509_svid_ttl,
                jwt_svid_ttl: c.jwt_svid_ttl,
            },
        }
    }

    fn now(&self) -> writ_core::Timestamp {
        self.clock.now()
    }

    pub async fn register(&self, req: RegisterNode, actor: &str) -> Result<Node, Error> {
        if !valid_node_name(&req.name) {
            return Err(Error::Invalid(format!(
                "bad node name {:?}: 1 to 64 of A-Z a-z 0-9 - _ .",
                req.name
            )));
        }
        if req.attestation != Attestation::JoinToken {
            return Err(Error::Invalid("nodes attest with join tokens".into()));
        }
        let node = Node {
            name: req.name,
            attestation: req.attestation,
            quarantined: false,
            created_at: self.now(),
            attested_at: None,
        };
        let event = AuditEvent::new(AuditKind::Node, Outcome::Success, actor)
            .reason("node registered")
            .detail(serde_json::json!({ "node": node.name }));
        self.store.create_node(&node, vec![event]).await?;
        Ok(node)
    }

    pub async fn get(&self, name: &str) -> Result<Node, Error> {
        self.store
            .get_node(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("node {name} not found")))
    }

    pub async fn list(&self) -> Result<Vec<Node>, Error> {
        Ok(self.store.list_nodes().await?)
    }

    pub async fn create_join_token(
        &self,
        name: &str,
        req: CreateJoinToken,
        actor: &str,
    ) -> Result<JoinTokenCreated, Error> {
        let ttl = join_token_ttl(&req, self.settings.max_join_token_ttl)?;
        let node = self.get(name).await?;
        if node.quarantined {
            return Err(Error::Quarantined(format!("node {name} is quarantined")));
        }
        let token = format!("wnj_{}", random::token_256()?);
        let now = self.now();
        let expires_at = now.add_secs(ttl);
        let event = AuditEvent::new(AuditKind::JoinTokenCreate, Outcome::Success, actor)
            .detail(serde_json::json!({ "node": name, "expires_at": expires_at }));
        self.store
            .create_node_join_token(name, &hash_secret(&token), expires_at, now, vec![event])
            .await?;
        Ok(JoinTokenCreated {
            join_token: token,
            expires_at,
        })
    }

    /// Quarantine stops everything a node serves at once: its credential
    /// dies (its SVID requests fail), and its workloads get nothing more.
    pub async fn quarantine(&self, name: &str, on: bool, actor: &str) -> Result<Node, Error> {
        let event = AuditEvent::new(AuditKind::Node, Outcome::Success, actor)
            .reason(if on {
                "node quarantined"
            } else {
                "node released"
            })
            .detail(serde_json::json!({ "node": name }));
        self.store
            .set_node_quarantine(name, on, self.now(), vec![event])
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => Error::NotFound(format!("node {name} not found")),
                e => e.into(),
            })?;
        self.get(name).await
    }

    pub async fn attest(&self, req: NodeAttest) -> Result<NodeAttested, Error> {
        if !valid_node_name(&req.node) || req.join_token.len() > 256 {
            return Err(Error::Unauthenticated(
                "node attestation failed: unknown node".into(),
            ));
        }
        let now = self.now();
        let token = format!("wnt_{}", random::token_256()?);
        let event = AuditEvent::new(
            AuditKind::Node,
            Outcome::Success,
            format!("node:{}", req.node),
        )
        .reason("node attested")
        .detail(serde_json::json!({ "node": req.node, "method": "join_token" }));
        let res = self
            .store
            .attest_node(
                &req.node,
                &hash_secret(&req.join_token),
                &hash_secret(&token),
                now,
                vec![event],
            )
            .await;
        if let Err(e) = res {
            let reason = match &e {
                StoreError::JoinToken(j) => j.to_string(),
                StoreError::Quarantined => "node is quarantined".into(),
                e => return Err(e.clone().into()),
            };
            let event = AuditEvent::new(
                AuditKind::Node,
                Outcome::Failure,
                format!("node:{}", req.node),
            )
            .reason(format!("node attestation failed: {reason}"))
            .detail(serde_json::json!({ "node": req.node }));
            let _ = self.store.append_audit(now, vec![event]).await;
            return Err(Error::Unauthenticated(format!(
                "node attestation failed: {reason}"
            )));
        }
        Ok(NodeAttested {
            node: req.node,
            node_token: token,
        })
    }

    /// The node a credential belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Node, Error> {
        self.store
            .node_by_token(&hash_secret(token))
            .await?
            .ok_or_else(|| Error::Unauthenticated("unknown or revoked node credential".into()))
    }

    /// The node a verified client certificate names (its URI SAN
    /// `urn:writ:node:NAME`, issued by the `--tls-client-ca` authority):
    /// registered and not quarantined.
    pub async fn authenticate_named(&self, name: &str) -> Result<Node, Error> {
        match self.store.get_node(name).await? {
            Some(n) if !n.quarantined => Ok(n),
            _ => Err(Error::Unauthenticated(
                "the client certificate names no live node".into(),
            )),
        }
    }

    /// The agents a node may issue SVIDs for (not quarantined).
    pub async fn entries(&self, node: &Node) -> Result<NodeEntries, Error> {
        let entries = self
            .store
            .list_agents()
            .await?
            .into_iter()
            .filter(|a| !a.quarantined)
            .filter_map(|a| {
                let w = a.workload?;
                (w.node == node.name).then_some(NodeEntry {
                    agent: a.name,
                    spiffe_id: a.spiffe_id,
                    selectors: w.selectors,
                })
            })
            .collect();
        Ok(NodeEntries {
            trust_domain: self.settings.trust_domain.clone(),
            entries,
        })
    }

    /// The agent, if `node` may issue for it to a workload with `selectors`.
    async fn entry_for(
        &self,
        node: &Node,
        agent: &writ_core::AgentName,
        selectors: &[String],
    ) -> Result<Agent, Error> {
        let refuse = || Error::Forbidden(format!("node {} issues no SVID for {agent}", node.name));
        let a = self.store.get_agent(agent).await?.ok_or_else(refuse)?;
        let Some(w) = &a.workload else {
            return Err(refuse());
        };
        if w.node != node.name || a.quarantined {
            return Err(refuse());
        }
        // The node matched them; they are checked again here.
        if !w.selectors.iter().all(|s| selectors.contains(s)) {
            return Err(refuse());
        }
        Ok(a)
    }

    fn svid_event(node: &Node, a: &Agent, selectors: &[String], kind: &str) -> AuditEvent {
        AuditEvent::new(
            AuditKind::SvidIssue,
            Outcome::Success,
            format!("node:{}", node.name),
        )
        .agent(&a.name)
        .detail(serde_json::json!({
            "node": node.name,
            "svid": kind,
            "spiffe_id": a.spiffe_id,
            "selectors": selectors,
        }))
    }

    pub async fn issue_x509_svid(
        &self,
        node: &Node,
        req: X509SvidRequest,
    ) -> Result<X509SvidIssued, Error> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let a = self.entry_for(node, &req.agent, &req.selectors).await?;
        let key = WorkloadKey::parse(&req.public_key)?;
        let now = self.now();
        let (chain, expires_at) =
            self.spiffe
                .sign_x509(&a.spiffe_id, &key, now, self.settings.x509_svid_ttl)?;
        self.store
            .append_audit(
                now,
                vec![Self::svid_event(node, &a, &req.selectors, "x509")],
            )
            .await?;
        Ok(X509SvidIssued {
            spiffe_id: a.spiffe_id,
            chain: chain.iter().map(|c| b64.encode(c)).collect(),
            bundle: self
                .spiffe
                .x509_authorities(now)
                .iter()
                .map(|c| b64.encode(c))
                .collect(),
            expires_at,
        })
    }

    pub async fn issue_jwt_svid(
        &self,
        node: &Node,
        req: JwtSvidRequest,
    ) -> Result<JwtSvidIssued, Error> {
        if req.audience.is_empty()
            || req.audience.len() > 8
            || req.audience.iter().any(|a| a.is_empty() || a.len() > 512)
        {
            return Err(Error::Invalid(
                "a JWT-SVID needs 1 to 8 non-empty audiences".into(),
            ));
        }
        let a = self.entry_for(node, &req.agent, &req.selectors).await?;
        let now = self.now();
        let (token, expires_at) =
            self.spiffe
                .sign_jwt(&a.spiffe_id, &req.audience, now, self.settings.jwt_svid_ttl)?;
        let event = Self::svid_event(node, &a, &req.selectors, "jwt").detail(serde_json::json!({
            "node": node.name,
            "svid": "jwt",
            "spiffe_id": a.spiffe_id,
            "selectors": req.selectors,
            "audience": req.audience,
        }));
        self.store.append_audit(now, vec![event]).await?;
        Ok(JwtSvidIssued {
            spiffe_id: a.spiffe_id,
            token,
            expires_at,
        })
    }
}
