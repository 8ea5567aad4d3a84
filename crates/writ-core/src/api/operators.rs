//! Operator credentials (`/v1/admin/tokens`): named, each with one role.

use super::*;

/// What an operator credential may do. Roles are not ranked: each one is
/// a set of duties, and `admin` holds them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, credentials and keys included.
    Admin,
    /// Agents, tools, tasks, quarantine, gateways and nodes.
    Operator,
    /// Approvals only.
    Approver,
    /// Read-only: audit, decisions, reports, metrics.
    Auditor,
    /// Policies and shadow sets.
    PolicyAuthor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Approver,
        Role::Auditor,
        Role::PolicyAuthor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::PolicyAuthor => "policy-author",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a credential of this role may create (or rotate) one of
    /// role `other`: only `admin` manages credentials, and it may make any.
    pub fn may_grant(self, other: Role) -> bool {
        let _ = other;
        self == Role::Admin
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::parse(s).ok_or_else(|| {
            format!("unknown role {s:?}: one of admin, operator, approver, auditor, policy-author")
        })
    }
}

/// What a route needs of an operator credential, and the roles that hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duty {
    /// Credentials, signing keys, AuthZEN and the revocation feed for
    /// outside enforcement points.
    Administer,
    /// Agents, tools, tasks, quarantine, gateways and nodes.
    Operate,
    /// Deciding approvals (and seeing them).
    Approve,
    /// Reading the audit, decisions and reports.
    Audit,
    /// Pushing policies, entity data and shadow sets.
    AuthorPolicy,
    /// Reading the policy set and its history.
    ReadPolicy,
    /// Reading one task (what an approver, an operator and an auditor see).
    ReadTask,
}

impl Duty {
    /// The roles that hold this duty, `admin` first.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Duty::Administer => &[Role::Admin],
            Duty::Operate => &[Role::Admin, Role::Operator],
            Duty::Approve => &[Role::Admin, Role::Approver],
            Duty::Audit => &[Role::Admin, Role::Auditor],
            Duty::AuthorPolicy => &[Role::Admin, Role::PolicyAuthor],
            Duty::ReadPolicy => &[Role::Admin, Role::PolicyAuthor, Role::Auditor],
            Duty::ReadTask => &[Role::Admin, Role::Operator, Role::Approver, Role::Auditor],
        }
    }

    /// The roles that hold it, as a person reads them: `operator or admin`.
    pub fn needed(self) -> String {
        let mut names: Vec<&str> = self
            .roles()
            .iter()
            .filter(|r| **r != Role::Admin)
            .map(|r| r.as_str())
            .collect();
        names.push("admin");
        names.join(" or ")
    }
}

impl Role {
    pub fn holds(self, duty: Duty) -> bool {
        duty.roles().contains(&self)
    }
}

/// Whether `name` can name an operator credential: 1 to 64 characters of
/// `[a-z0-9._@-]`, starting with a letter or digit.
pub fn valid_operator_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-' | b'@')
        })
}

/// The cookies writ sets in an operator's browser: the console session
/// (plain and `__Host-`) and the single sign-on flow. A gateway on the same
/// site never forwards them upstream.
pub const BROWSER_COOKIES: [&str; 4] = [
    "writ_console",
    "__Host-writ_console",
    "writ-sso-flow",
    "__Host-writ-sso-flow",
];

/// `GET /v1/admin/tokens`: one operator credential (never its value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCredential {
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
    /// Made by `writ serve --dev`: refused by a start without `--dev`.
    pub dev: bool,
    /// A single sign-on session's end: refused from then on. Credentials
    /// made with `writ admin token create` have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// A console session made from the credential `name` (ended with it,
    /// by sign-out, or by revoking `name`), not a credential itself.
    #[serde(default, skip_serializing_if = "is_false")]
    pub console_session: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `POST /v1/admin/tokens`: a new named credential (role `admin` unless
/// said).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminCredential {
    pub name: String,
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::Admin
}

/// The answer to a create or a rotate: the only time the secret is shown.
#[derive(Clone, Serialize, Deserialize)]
pub struct AdminCredentialIssued {
    pub name: String,
    pub role: Role,
    pub token: String,
}

impl std::fmt::Debug for AdminCredentialIssued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentialIssued")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_only_admin_grants() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(r.may_grant(Role::Admin), r == Role::Admin);
        }
        assert!(Role::parse("root").is_none());
    }

    #[test]
    fn admin_holds_every_duty_and_others_only_theirs() {
        use Duty::*;
        let all = [
            Administer,
            Operate,
            Approve,
            Audit,
            AuthorPolicy,
            ReadPolicy,
            ReadTask,
        ];
        for d in all {
            assert!(Role::Admin.holds(d));
        }
        assert!(!Role::Approver.holds(Operate) && Role::Approver.holds(Approve));
        assert!(!Role::Auditor.holds(Operate) && Role::Auditor.holds(Audit));
        assert!(!Role::Operator.holds(Approve) && !Role::Operator.holds(Administer));
        assert!(!Role::PolicyAuthor.holds(Audit) && Role::PolicyAuthor.holds(AuthorPolicy));
        assert_eq!(Operate.needed(), "operator or admin");
        assert_eq!(Administer.needed(), "admin");
    }

    #[test]
    fn operator_names_are_validated() {
        for ok in ["bootstrap", "alice@corp", "ci-bot.1", "a"] {
            assert!(valid_operator_name(ok), "{ok}");
        }
        for bad in ["", "Alice", "-x", "a b", "a/b", "x\n", &"a".repeat(65)] {
            assert!(!valid_operator_name(bad), "{bad:?}");
        }
    }
}

/// `PATCH /v1/agents/{name}`: what changes (absent: unchanged).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    /// Replaces every attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
}

/// `PATCH /v1/tools/{name}`: what changes (absent: unchanged). The
/// audience cannot change: tokens already name it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTool {
    /// Replaces the scopes; tasks that declared a removed one end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    /// Replaces every attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
}

/// The answer to a delete of an agent or a tool (or an update that ended
/// tasks): what died with it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Removed {
    pub name: String,
    pub revoked_tokens: u64,
    pub ended_tasks: u64,
}

/// `GET /v1/login/oidc`: where operators sign in (the CLI runs the device
/// flow against this issuer as this client, then hands writ the identity
/// token).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OperatorSsoInfo {
    pub issuer: String,
    pub client_id: String,
    /// Where a browser starts signing in (`/ui/sso/start`), when the
    /// broker signs browsers in (the console shows a link to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_start: Option<String>,
}

/// `POST /v1/login/oidc`: an identity token from the operators' OIDC
/// provider, to exchange for a session.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSignIn {
    pub id_token: String,
}

impl std::fmt::Debug for OperatorSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorSignIn { id_token: <redacted> }")
    }
}

/// The answer to a sign-in: a short-lived operator credential, used like
/// any other (shown only here).
#[derive(Clone, Serialize, Deserialize)]
pub struct OperatorSession {
    pub name: String,
    pub role: Role,
    pub token: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for OperatorSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSession")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
