//! A typed HTTP client for the writ API, used by the CLI, the tests and
//! Rust agents.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use writ_core::api::{
    Agent, AttestRequest, Attested, AuditPage, AuditVerified, CreateJoinToken, Introspection,
    JoinTokenCreated, KeyRotated, OAuthErrorBody, Problem, Quarantined, RegisterAgent,
    RegisterTool, StartTask, Task, TaskEnded, TaskToken, Tool,
};

use writ_core::api::TokenExchanged;
use writ_core::dpop::ProofKey;
use writ_core::{AgentName, Clock as _, Secret, SystemClock, TaskId};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach writ at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("{}", problem_text(.0))]
    Api(Box<Problem>),
    #[error("{status}: {}{}", .body.error, .body.error_description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    OAuth { status: u16, body: OAuthErrorBody },
    #[error("unexpected response ({status}): {message}")]
    Unexpected { status: u16, message: String },
    #[error("reading the CA file {path}: {message}")]
    CaFile { path: String, message: String },
    /// The client certificate or its key could not be used.
    #[error("client certificate {path}: {message}")]
    ClientCertificate { path: String, message: String },
    #[error("invalid address {0:?}")]
    Address(String),
    /// The task waits for a person's approval (HTTP 202).
    #[error("task {} is waiting for approval {}", .0.task_id, .0.approval_id)]
    Pending(Box<writ_core::api::TaskPending>),
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api(p) => Some(p.status),
            ClientError::OAuth { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            ClientError::Pending(_) => Some(202),
            _ => None,
        }
    }
}

fn problem_text(p: &Problem) -> String {
    let mut s = format!("{} {}", p.status, p.title);
    if let Some(d) = &p.detail {
        s.push_str(": ");
        s.push_str(d);
    }
    if let Some(v) = &p.policy_version {
        s.push_str(&format!(" [policy {v}]"));
    }
    s
}

pub type Result<T> = std::result::Result<T, ClientError>;

mod gateway;
mod node;
mod sinks;

mod options;
pub use options::{ClientOptions, TlsClientConfig, present_client_certificate, trust_ca_file};

/// A client bound to one writ address and (optionally) one bearer credential.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
    /// With a key, the token is presented as `DPoP` with a fresh proof.
    dpop: Option<Arc<ProofKey>>,
    /// The last server nonce (RFC 9449 §8), shared by clones.
    nonce: Arc<std::sync::Mutex<Option<String>>>,
}

/// RFC 8693 token type of every token writ exchanges.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

impl Client {
    pub fn new(addr: &str, token: Option<Secret>) -> Result<Self> {
        Self::with_options(addr, token, ClientOptions::default())
    }

    /// A client whose HTTP timeouts and redirect policy are `options`.
    pub fn with_options(addr: &str, token: Option<Secret>, options: ClientOptions) -> Result<Self> {
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(ClientError::Address(addr.to_owned()));
        }
        let http = options.http().map_err(|e| ClientError::Connect {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self::with_http(addr, token, http))
    }

    /// A client over an HTTP client built with [`ClientOptions::http`]. The
    /// address is not checked: a bad one fails each request instead.
    pub fn with_http(addr: &str, token: Option<Secret>, http: reqwest::Client) -> Self {
        Self {
            http,
            base: addr.trim_end_matches('/').to_owned(),
            token,
            dpop: None,
            nonce: Arc::default(),
        }
    }

    /// The same client with another credential.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self {
            token: Some(Secret::new(token.into())),
            ..self.clone()
        }
    }

    /// The same client, proving possession of `key` with every request.
    pub fn with_dpop(&self, key: Arc<ProofKey>) -> Self {
        Self {
            dpop: Some(key),
            ..self.clone()
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The bearer credential this client presents, if any.
    pub fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    /// A DPoP proof for `method path`, bound to `token` when given.
    fn proof(&self, method: &Method, path: &str, token: Option<&str>) -> Option<String> {
        self.proof_for(method.as_str(), &format!("{}{}", self.base, path), token)
    }

    fn proof_for(&self, method: &str, url: &str, token: Option<&str>) -> Option<String> {
        let key = self.dpop.as_ref()?;
        let nonce = self.nonce.lock().ok().and_then(|n| n.clone());
        key.proof(method, url, token, nonce.as_deref(), SystemClock.now())
            .ok()
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path));
        match (&self.token, &self.dpop) {
            (Some(t), Some(_)) => {
                let r = r.header("authorization", format!("DPoP {}", t.expose()));
                match self.proof(&method, path, Some(t.expose())) {
                    Some(p) => r.header("dpop", p),
                    None => r,
                }
            }
            (Some(t), None) => r.bearer_auth(t.expose()),
            (None, _) => r,
        }
    }

    /// Sends; when the server asks for a DPoP nonce, remembers it and
    /// retries once with a fresh proof that carries it.
    async fn send(&self, r: RequestBuilder) -> Result<Response> {
        let connect = |e: reqwest::Error| ClientError::Connect {
            addr: self.base.clone(),
            message: e.without_url().to_string(),
        };
        let retry = if self.dpop.is_some() {
            r.try_clone()
        } else {
            None
        };
        let resp = r.send().await.map_err(connect)?;
        let nonce = resp
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (Some(retry), Some(nonce)) = (retry, nonce) else {
            return Ok(resp);
        };
        if !matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST
        ) {
            return Ok(resp);
        }
        if let Ok(mut n) = self.nonce.lock() {
            *n = Some(nonce);
        }
        let mut req = retry.build().map_err(connect)?;
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.strip_prefix("DPoP "))
            .map(str::to_owned);
        let mut url = req.url().clone();
        url.set_query(None);
        let Some(proof) = self.proof_for(req.method().as_str(), url.as_str(), token.as_deref())
        else {
            return Ok(resp);
        };
        let Ok(value) = reqwest::header::HeaderValue::from_str(&proof) else {
            return Ok(resp);
        };
        req.headers_mut().insert("dpop", value);
        self.http.execute(req).await.map_err(connect)
    }

    async fn call<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T> {
        let resp = self.send(r).await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ClientError::Connect {
            addr: self.base.clone(),
            message: e.to_string(),
        })?;
        if status == StatusCode::ACCEPTED
            && let Ok(p) = serde_json::from_slice::<writ_core::api::TaskPending>(&body)
        {
            return Err(ClientError::Pending(Box::new(p)));
        }
        if status.is_success() {
            let body: &[u8] = if body.is_empty() { b"null" } else { &body };
            return serde_json::from_slice(body).map_err(|e| ClientError::Unexpected {
                status: status.as_u16(),
                message: e.to_string(),
            });
        }
        Err(error_from(status, &body))
    }

    /// A call whose success carries nothing to read (whatever its body).
    async fn call_no_body(&self, r: RequestBuilder) -> Result<()> {
        let resp = self.send(r).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(error_from(status, &body))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.req(Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(self.req(Method::POST, path).json(body)).await
    }

    async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.req(Method::POST, path)).await
    }

    // --- admin ---

    /// Who this client's operator credential names (any role):
    /// `{"name", "role"}`.
    pub async fn whoami(&self) -> Result<serde_json::Value> {
        self.get("/v1/admin/whoami").await
    }

    /// Where operators sign in (`GET /v1/login/oidc`).
    pub async fn operator_sso_info(&self) -> Result<writ_core::api::OperatorSsoInfo> {
        self.get("/v1/login/oidc").await
    }

    /// An identity token from the operators' OIDC provider for an
    /// operator session (`POST /v1/login/oidc`).
    pub async fn operator_sign_in(
        &self,
        id_token: &str,
    ) -> Result<writ_core::api::OperatorSession> {
        self.post(
            "/v1/login/oidc",
            &writ_core::api::OperatorSignIn {
                id_token: id_token.to_owned(),
            },
        )
        .await
    }

    pub async fn register_agent(&self, req: &RegisterAgent) -> Result<Agent> {
        self.post("/v1/agents", req).await
    }
    pub async fn agents(&self) -> Result<Vec<Agent>> {
        self.get("/v1/agents").await
    }
    pub async fn agent(&self, name: &AgentName) -> Result<Agent> {
        self.get(&format!("/v1/agents/{name}")).await
    }
    pub async fn join_token(&self, name: &AgentName, ttl: u64) -> Result<JoinTokenCreated> {
        self.post(
            &format!("/v1/agents/{name}/join-tokens"),
            &CreateJoinToken { ttl },
        )
        .await
    }
    pub async fn quarantine(&self, name: &AgentName) -> Result<Quarantined> {
        self.post_empty(&format!("/v1/agents/{name}/quarantine"))
            .await
    }
    pub async fn release(&self, name: &AgentName) -> Result<Quarantined> {
        self.post_empty(&format!("/v1/agents/{name}/release")).await
    }
    pub async fn register_tool(&self, req: &RegisterTool) -> Result<Tool> {
        self.post("/v1/tools", req).await
    }
    pub async fn tools(&self) -> Result<Vec<Tool>> {
        self.get("/v1/tools").await
    }
    /// Sets the upstream secret a gateway injects for a tool.
    pub async fn set_tool_secret(
        &self,
        tool: &str,
        req: &writ_core::api::SetToolSecret,
    ) -> Result<writ_core::api::ToolSecretSet> {
        self.call(
            self.req(Method::PUT, &format!("/v1/tools/{tool}/secret"))
                .json(req),
        )
        .await
    }
    /// Serves a tool from the gateway named `gateway` (`None`: the one
    /// inside `writ serve`).
    pub async fn bind_tool(&self, tool: &str, gateway: Option<&str>) -> Result<Tool> {
        let req = writ_core::api::BindTool {
            gateway: gateway.map(str::to_owned),
        };
        self.call(
            self.req(Method::PUT, &format!("/v1/tools/{tool}/gateway"))
                .json(&req),
        )
        .await
    }
    /// Revokes a gateway's credential.
    pub async fn revoke_gateway(&self, name: &str) -> Result<()> {
        self.call(self.req(Method::DELETE, &format!("/v1/gateways/{name}")))
            .await
    }
    /// Registers an OAuth client of introspection and revocation.
    pub async fn register_client(
        &self,
        req: &writ_core::api::RegisterClient,
    ) -> Result<writ_core::api::ClientRegistered> {
        self.post("/v1/clients", req).await
    }
    pub async fn list_clients(&self) -> Result<Vec<writ_core::api::OAuthClientInfo>> {
        self.get("/v1/clients").await
    }
    pub async fn revoke_client(&self, id: &str) -> Result<()> {
        self.call(self.req(Method::DELETE, &format!("/v1/clients/{id}")))
            .await
    }
    /// Registers a node (a host running `writ node`).
    pub async fn register_node(&self, name: &str) -> Result<writ_core::api::Node> {
        self.post(
            "/v1/nodes",
            &writ_core::api::RegisterNode {
                name: name.to_owned(),
                attestation: writ_core::api::Attestation::JoinToken,
            },
        )
        .await
    }
    pub async fn nodes(&self) -> Result<Vec<writ_core::api::Node>> {
        self.get("/v1/nodes").await
    }
    pub async fn node_join_token(&self, name: &str, ttl: u64) -> Result<JoinTokenCreated> {
        self.post(
            &format!("/v1/nodes/{name}/join-tokens"),
            &writ_core::api::CreateJoinToken { ttl },
        )
        .await
    }
    pub async fn quarantine_node(&self, name: &str) -> Result<writ_core::api::Node> {
        self.post_empty(&format!("/v1/nodes/{name}/quarantine"))
            .await
    }
    pub async fn release_node(&self, name: &str) -> Result<writ_core::api::Node> {
        self.post_empty(&format!("/v1/nodes/{name}/release")).await
    }
    /// The trust domain's SPIFFE bundle.
    pub async fn spiffe_bundle(&self) -> Result<serde_json::Value> {
        self.get("/v1/bundle").await
    }
    /// A credential for a standalone gateway.
    pub async fn register_gateway(&self, name: &str) -> Result<writ_core::api::GatewayRegistered> {
        self.post(
            "/v1/gateways",
            &writ_core::api::RegisterGateway {
                name: name.to_owned(),
            },
        )
        .await
    }
    /// A new X.509 authority and JWT-SVID key for the trust domain.
    pub async fn rotate_spiffe_keys(&self) -> Result<serde_json::Value> {
        self.post_empty("/v1/keys/rotate-spiffe").await
    }
    pub async fn update_agent(
        &self,
        name: &str,
        req: &writ_core::api::UpdateAgent,
    ) -> Result<writ_core::api::Agent> {
        self.call(
            self.req(Method::PATCH, &format!("/v1/agents/{name}"))
                .json(req),
        )
        .await
    }
    pub async fn delete_agent(&self, name: &str) -> Result<writ_core::api::Removed> {
        self.call(self.req(Method::DELETE, &format!("/v1/agents/{name}")))
            .await
    }
    pub async fn update_tool(
        &self,
        name: &str,
        req: &writ_core::api::UpdateTool,
    ) -> Result<writ_core::api::Tool> {
        self.call(
            self.req(Method::PATCH, &format!("/v1/tools/{name}"))
                .json(req),
        )
        .await
    }
    pub async fn delete_tool(&self, name: &str) -> Result<writ_core::api::Removed> {
        self.call(self.req(Method::DELETE, &format!("/v1/tools/{name}")))
            .await
    }
    /// Every admin credential (names, never values).
    pub async fn admin_tokens(&self) -> Result<Vec<writ_core::api::AdminCredential>> {
        self.get("/v1/admin/tokens").await
    }
    /// A new named operator credential of `role` (its secret is in the
    /// answer only).
    pub async fn create_admin_token(
        &self,
        name: &str,
        role: writ_core::api::Role,
    ) -> Result<writ_core::api::AdminCredentialIssued> {
        self.post(
            "/v1/admin/tokens",
            &writ_core::api::CreateAdminCredential {
                name: name.to_owned(),
                role,
            },
        )
        .await
    }
    /// A new secret for the credential `name`; the old one dies at once.
    pub async fn rotate_admin_token(
        &self,
        name: &str,
    ) -> Result<writ_core::api::AdminCredentialIssued> {
        self.post_empty(&format!("/v1/admin/tokens/{name}/rotate"))
            .await
    }
    /// Revokes the admin credential `name`.
    pub async fn revoke_admin_token(&self, name: &str) -> Result<()> {
        self.call(self.req(Method::DELETE, &format!("/v1/admin/tokens/{name}")))
            .await
    }
    pub async fn rotate_keys(&self) -> Result<KeyRotated> {
        self.post_empty("/v1/keys/rotate").await
    }
    pub async fn audit(&self, after: u64, limit: u32) -> Result<AuditPage> {
        self.get(&format!("/v1/audit?after={after}&limit={limit}"))
            .await
    }
    /// `GET /v1/reports/least-privilege`: the document as the broker wrote
    /// it (`format`: json, table, markdown or html).
    pub async fn least_privilege_report(
        &self,
        since: Option<&str>,
        agent: Option<&str>,
        format: &str,
    ) -> Result<String> {
        let mut q: Vec<(&str, &str)> = vec![("format", format)];
        if let Some(s) = since {
            q.push(("since", s));
        }
        if let Some(a) = agent {
            q.push(("agent", a));
        }
        let resp = self
            .send(
                self.req(Method::GET, "/v1/reports/least-privilege")
                    .query(&q),
            )
            .await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ClientError::Connect {
            addr: self.base.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(error_from(status, &body));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
    /// `GET /v1/reports/evidence`: the document as the broker wrote it.
    pub async fn evidence_report(&self, framework: &str, format: &str) -> Result<String> {
        let q = [("framework", framework), ("format", format)];
        let resp = self
            .send(self.req(Method::GET, "/v1/reports/evidence").query(&q))
            .await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ClientError::Connect {
            addr: self.base.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(error_from(status, &body));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
    pub async fn audit_last(&self, n: u32) -> Result<AuditPage> {
        self.get(&format!("/v1/audit?last={n}")).await
    }
    pub async fn policies(&self) -> Result<writ_core::api::PolicyInfo> {
        self.get("/v1/policies").await
    }
    pub async fn push_policies(
        &self,
        req: &writ_core::api::PushPolicies,
    ) -> Result<writ_core::api::PolicyInfo> {
        self.call(self.req(Method::PUT, "/v1/policies").json(req))
            .await
    }
    pub async fn push_shadow(
        &self,
        req: &writ_core::api::PushPolicies,
    ) -> Result<writ_core::api::PolicyInfo> {
        self.call(self.req(Method::PUT, "/v1/policies/shadow").json(req))
            .await
    }
    pub async fn clear_shadow(&self) -> Result<()> {
        self.call_no_body(self.req(Method::DELETE, "/v1/policies/shadow"))
            .await
    }
    pub async fn policy_history(&self) -> Result<Vec<writ_core::api::PolicyVersion>> {
        self.get("/v1/policies/history").await
    }
    pub async fn approvals(&self, all: bool) -> Result<Vec<writ_core::api::Approval>> {
        self.get(&format!("/v1/approvals?all={all}")).await
    }
    pub async fn decide_approval(
        &self,
        id: &writ_core::ApprovalId,
        approve: bool,
        reason: &str,
    ) -> Result<writ_core::api::Approval> {
        let verb = if approve { "approve" } else { "deny" };
        self.post(
            &format!("/v1/approvals/{id}/{verb}"),
            &writ_core::api::DecideApproval {
                reason: reason.to_owned(),
            },
        )
        .await
    }
    /// Live exceptions: expiry, owner, justification, approver, uses.
    pub async fn exceptions(&self) -> Result<Vec<writ_core::api::ExceptionTask>> {
        self.get("/v1/exceptions").await
    }

    pub async fn tasks(&self, exceptions: bool) -> Result<Vec<Task>> {
        self.get(&format!("/v1/tasks?exceptions={exceptions}"))
            .await
    }
    /// The revocation feed after `after`, waiting up to `wait` seconds.
    pub async fn revocations(
        &self,
        after: u64,
        wait: u64,
    ) -> Result<writ_core::api::RevocationPage> {
        self.get(&format!("/v1/revocations?after={after}&wait={wait}"))
            .await
    }
    pub async fn audit_verify(&self) -> Result<AuditVerified> {
        self.get("/v1/audit/verify").await
    }
    /// The audit checkpoints the broker signed and kept.
    pub async fn audit_checkpoints(&self) -> Result<Vec<String>> {
        self.get("/v1/audit/checkpoints").await
    }
    /// Every key that signed for this issuer (public halves, retired ones
    /// included), as a JWKS.
    pub async fn audit_keys(&self) -> Result<serde_json::Value> {
        self.get("/v1/audit/keys").await
    }

    // --- agents ---

    /// Attests; with a DPoP key, binds the instance token to it.
    pub async fn attest(&self, req: &AttestRequest) -> Result<Attested> {
        let mut r = self.http.post(format!("{}/v1/attest", self.base)).json(req);
        if let Some(p) = self.proof(&Method::POST, "/v1/attest", None) {
            r = r.header("dpop", p);
        }
        self.call(r).await
    }
    pub async fn task_tree(&self, id: &TaskId) -> Result<Vec<Task>> {
        self.get(&format!("/v1/tasks/{id}/tree")).await
    }

    /// RFC 8693: exchanges `subject_token` for a token for one tool
    /// (`actor_token` None), or delegates its task to the sub-agent whose
    /// instance token is `actor_token`.
    pub async fn exchange(
        &self,
        subject_token: &str,
        actor_token: Option<&str>,
        audience: Option<&str>,
        scope: Option<&str>,
    ) -> Result<TokenExchanged> {
        self.exchange_with(
            subject_token,
            actor_token.map(|a| (a, None)),
            audience,
            scope,
        )
        .await
    }

    /// RFC 8693 delegation to the sub-agent whose instance token is
    /// `actor_token`; `actor_proof` is the proof it made with its own key
    /// ([`Client::actor_proof`]), needed when its token is DPoP-bound.
    pub async fn delegate(
        &self,
        subject_token: &str,
        actor_token: &str,
        actor_proof: Option<&str>,
        audience: Option<&str>,
        scope: Option<&str>,
    ) -> Result<TokenExchanged> {
        self.exchange_with(
            subject_token,
            Some((actor_token, actor_proof)),
            audience,
            scope,
        )
        .await
    }

    /// What a sub-agent gives the planner that delegates to it: a proof,
    /// by this client's DPoP key, for the token endpoint and its instance
    /// token `actor_token` (`None` without a key).
    pub fn actor_proof(&self, actor_token: &str) -> Option<String> {
        self.proof(&Method::POST, "/oauth2/token", Some(actor_token))
    }

    async fn exchange_with(
        &self,
        subject_token: &str,
        actor: Option<(&str, Option<&str>)>,
        audience: Option<&str>,
        scope: Option<&str>,
    ) -> Result<TokenExchanged> {
        let mut form: Vec<(&str, &str)> = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ];
        if let Some((a, proof)) = actor {
            form.push(("actor_token", a));
            form.push(("actor_token_type", ACCESS_TOKEN_TYPE));
            if let Some(p) = proof {
                form.push(("actor_token_proof", p));
            }
        }
        if let Some(a) = audience {
            form.push(("audience", a));
        }
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let mut r = self
            .http
            .post(format!("{}/oauth2/token", self.base))
            .form(&form);
        if let Some(p) = self.proof(&Method::POST, "/oauth2/token", None) {
            r = r.header("dpop", p);
        }
        self.call(r).await
    }
    pub async fn start_task(&self, req: &StartTask) -> Result<TaskToken> {
        self.post("/v1/tasks", req).await
    }
    pub async fn heartbeat(&self, id: &TaskId) -> Result<TaskToken> {
        self.post_empty(&format!("/v1/tasks/{id}/heartbeat")).await
    }
    /// A database role of the task's own for a postgres tool (shown once).
    pub async fn db_credential(
        &self,
        id: &TaskId,
        tool: &writ_core::ToolName,
    ) -> Result<writ_core::api::DbCredential> {
        self.post_empty(&format!("/v1/tasks/{id}/credentials/{tool}"))
            .await
    }
    pub async fn complete(&self, id: &TaskId) -> Result<TaskEnded> {
        self.post_empty(&format!("/v1/tasks/{id}/complete")).await
    }
    pub async fn task(&self, id: &TaskId) -> Result<Task> {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    // --- OAuth ---

    pub async fn introspect(&self, token: &str) -> Result<Introspection> {
        self.call(
            self.req(Method::POST, "/oauth2/introspect")
                .form(&[("token", token)]),
        )
        .await
    }
    pub async fn revoke(&self, token: &str) -> Result<()> {
        self.call_no_body(
            self.req(Method::POST, "/oauth2/revoke")
                .form(&[("token", token)]),
        )
        .await
    }
    pub async fn jwks(&self) -> Result<serde_json::Value> {
        self.get("/.well-known/jwks.json").await
    }
    pub async fn metadata(&self) -> Result<serde_json::Value> {
        self.get("/.well-known/oauth-authorization-server").await
    }
}

fn error_from(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(p) = serde_json::from_slice::<Problem>(body)
        && p.status != 0
    {
        return ClientError::Api(Box::new(p));
    }
    if let Ok(o) = serde_json::from_slice::<OAuthErrorBody>(body) {
        return ClientError::OAuth {
            status: status.as_u16(),
            body: o,
        };
    }
    ClientError::Unexpected {
        status: status.as_u16(),
        message: String::from_utf8_lossy(body).chars().take(512).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_client_never_shows_its_credential() {
        let options = ClientOptions::service(
            Some(std::time::Duration::from_secs(2)),
            std::time::Duration::from_secs(40),
        );
        let c = Client::with_options(
            "http://127.0.0.1:1/",
            Some(Secret::new("writ_gw_secret")),
            options.clone(),
        )
        .unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:1");
        assert!(!format!("{c:?}").contains("writ_gw_secret"));
        assert_eq!(c.token().map(Secret::expose), Some("writ_gw_secret"));
        assert!(matches!(
            Client::with_options("127.0.0.1:1", None, options),
            Err(ClientError::Address(_))
        ));
    }
}
