//! Tools, their upstreams and the secrets gateways add.

use super::*;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterTool {
    pub name: ToolName,
    pub audience: String,
    pub scopes: Vec<Scope>,
    /// Free-form attributes, visible to policy as tags (e.g. `data: user`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Where a gateway forwards the tool's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// The gateway that serves it (and alone gets its upstream secret);
    /// none: the gateway inside `writ serve` ([`EMBEDDED_GATEWAY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// `PUT /v1/tools/{name}/gateway`: serve a tool from another gateway
/// (none: the gateway inside `writ serve`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindTool {
    #[serde(default)]
    pub gateway: Option<String>,
}

/// The name of the gateway inside `writ serve`: it serves every tool not
/// bound to another gateway.
pub const EMBEDDED_GATEWAY: &str = "embedded";

/// Whether `name` can name a gateway: 1 to 64 characters of
/// `[A-Za-z0-9._-]`.
pub fn valid_gateway_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    pub name: ToolName,
    pub audience: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// The header a gateway injects upstream, when a secret is set (never
    /// the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_header: Option<String>,
    /// The gateway that serves it; none: [`EMBEDDED_GATEWAY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub created_at: Timestamp,
}

impl Tool {
    /// The gateway that serves it.
    pub fn gateway_name(&self) -> &str {
        self.gateway.as_deref().unwrap_or(EMBEDDED_GATEWAY)
    }

    /// Whether the gateway named `gateway` serves it: its upstream is
    /// reached through a gateway, and that gateway is the one it is bound
    /// to.
    pub fn served_by(&self, gateway: &str) -> bool {
        self.upstream.as_ref().is_some_and(Upstream::is_gateway) && self.gateway_name() == gateway
    }

    /// Whether a gateway must refuse to call its upstream without the
    /// secret: one was set (its header is known), or the tool asks for it.
    pub fn requires_secret(&self) -> bool {
        self.secret_header.is_some()
            || self
                .upstream
                .as_ref()
                .is_some_and(Upstream::requires_secret)
    }
}

/// A tool's upstream, as a gateway reaches it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Upstream {
    /// A plain HTTP API: `/{tool}/rest` is forwarded to `url` + `/rest`.
    Http {
        url: String,
        /// Refuse to forward (fail closed) while no secret is set.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        require_secret: bool,
        /// Send who calls only in the signed transaction token
        /// (`Txn-Token`), not in the informational `X-Writ-*` headers.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        txn_token_only: bool,
    },
    /// An MCP server on streamable HTTP at `url`.
    Mcp {
        url: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        require_secret: bool,
        /// Browser origins (`scheme://host[:port]`) whose pages may call
        /// the tool; a request with any other `Origin` is refused (the MCP
        /// transport's defence against DNS rebinding). Empty: none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        origins: Vec<String>,
        /// As for [`Upstream::Http`].
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        txn_token_only: bool,
    },
    /// A local MCP server on stdio, spawned by the gateway (one process per
    /// MCP session).
    McpStdio {
        command: Vec<String>,
        /// As for [`Upstream::Mcp`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        origins: Vec<String>,
        /// Start no server (fail closed) while no secret is set: the key
        /// it reads from its environment comes from writ.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        require_secret: bool,
    },
    /// A PostgreSQL database: no gateway in between; a task granted the tool
    /// gets a role of its own (`POST /v1/tasks/{id}/credentials/{tool}`)
    /// that lives as long as the task. The admin connection is the tool's
    /// secret (`PUT /v1/tools/{name}/secret` with only a `value`).
    Postgres {
        /// Statements run as the admin after the role is created, with
        /// `{role}` standing for the new role's quoted name, e.g.
        /// `GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO {role}`.
        grants: Vec<String>,
    },
}

/// Whether `origin` is a serialised web origin: `http(s)://host[:port]`,
/// lower case, nothing after the authority.
pub fn valid_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && origin.len() <= 255
        && authority
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:[]".contains(&b))
}

impl Upstream {
    /// The browser origins allowed to call an MCP tool (none for others).
    pub fn origins(&self) -> &[String] {
        match self {
            Upstream::Mcp { origins, .. } | Upstream::McpStdio { origins, .. } => origins,
            Upstream::Http { .. } | Upstream::Postgres { .. } => &[],
        }
    }

    pub fn is_mcp(&self) -> bool {
        matches!(self, Upstream::Mcp { .. } | Upstream::McpStdio { .. })
    }

    /// Whether a gateway serves it (a database is reached directly, with a
    /// credential of the task's own).
    pub fn is_gateway(&self) -> bool {
        !matches!(self, Upstream::Postgres { .. })
    }

    /// Whether the tool takes who calls from the transaction token only.
    pub fn txn_token_only(&self) -> bool {
        match self {
            Upstream::Http { txn_token_only, .. } | Upstream::Mcp { txn_token_only, .. } => {
                *txn_token_only
            }
            Upstream::McpStdio { .. } | Upstream::Postgres { .. } => false,
        }
    }

    /// Whether the gateway must refuse to forward without a secret.
    pub fn requires_secret(&self) -> bool {
        match self {
            Upstream::Http { require_secret, .. }
            | Upstream::Mcp { require_secret, .. }
            | Upstream::McpStdio { require_secret, .. } => *require_secret,
            Upstream::Postgres { .. } => false,
        }
    }
}

/// `PUT /v1/tools/{name}/secret`: the credential a gateway adds to every
/// upstream request of the tool, or for a `postgres` tool (no `header`)
/// the admin connection URL that creates and drops task roles.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetToolSecret {
    #[serde(default)]
    pub header: String,
    pub value: String,
}

/// `POST /v1/tasks/{id}/credentials/{tool}`: a database role of the task's
/// own, shown once. It stops working when the task ends (the role is
/// dropped and its sessions ended) and at the task's hard end at the latest
/// (`VALID UNTIL`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbCredential {
    pub tool: ToolName,
    pub task_id: TaskId,
    pub username: String,
    pub password: String,
    /// Where to connect, with this credential in it.
    pub url: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for DbCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCredential")
            .field("tool", &self.tool)
            .field("task_id", &self.task_id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SetToolSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetToolSecret")
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// The answer to setting a tool secret: never the value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToolSecretSet {
    pub tool: ToolName,
    pub header: String,
    pub updated_at: Timestamp,
}

/// A tool secret as delivered to a gateway (and to nothing else).
#[derive(Clone, Serialize, Deserialize)]
pub struct GatewaySecret {
    pub tool: ToolName,
    pub header: String,
    pub value: String,
}

impl std::fmt::Debug for GatewaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySecret")
            .field("tool", &self.tool)
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}
