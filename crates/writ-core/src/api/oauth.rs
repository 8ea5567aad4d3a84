//! The OAuth endpoints: token exchange, introspection, errors.

use super::*;

/// RFC 7662 introspection response.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Introspection {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<crate::token::Confirmation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<crate::token::Actor>,
}

/// RFC 9457 problem details, as every non-OAuth endpoint answers errors.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    #[serde(rename = "type", default = "about_blank")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The policies that decided a denial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub determining_policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// A request held for a person's approval: the approval to ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<crate::ids::ApprovalId>,
}

fn about_blank() -> String {
    "about:blank".into()
}

/// RFC 6749 §5.2 error, as OAuth endpoints answer errors.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OAuthErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// RFC 8693 §2.2.1 token exchange response, plus the child task's id on a
/// delegation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenExchanged {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
}

/// RFC 8693 token exchange grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 8693 token type of writ's access tokens.
pub const ACCESS_TOKEN_TYPE_URN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The form of `POST /oauth2/token` (RFC 8693).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    /// With a DPoP-bound `actor_token`: a DPoP proof the sub-agent made
    /// with its own key for `POST` to the token endpoint, with `ath` of the
    /// actor token: the sub-agent takes part in its delegation.
    pub actor_token_proof: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub requested_token_type: Option<String>,
}

/// Why a token request is refused before any token in it is looked at:
/// the RFC 6749 error code and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequestError {
    pub error: &'static str,
    pub description: String,
}

impl TokenRequest {
    /// The checks that need nothing but the form: the grant type, the token
    /// types, and `audience` and `resource` not both. Returns the subject
    /// token.
    pub fn check(&self) -> Result<&str, TokenRequestError> {
        let bad = |d: String| TokenRequestError {
            error: "invalid_request",
            description: d,
        };
        match self.grant_type.as_deref() {
            None => return Err(bad("grant_type is required".into())),
            Some(TOKEN_EXCHANGE_GRANT) => {}
            Some(g) => {
                return Err(TokenRequestError {
                    error: "unsupported_grant_type",
                    description: format!("grant type {g:?} is not supported"),
                });
            }
        }
        let subject = self
            .subject_token
            .as_deref()
            .ok_or_else(|| bad("subject_token is required".into()))?;
        if self.subject_token_type.as_deref() != Some(ACCESS_TOKEN_TYPE_URN) {
            return Err(bad(format!(
                "subject_token_type must be {ACCESS_TOKEN_TYPE_URN}"
            )));
        }
        if self
            .requested_token_type
            .as_deref()
            .is_some_and(|t| t != ACCESS_TOKEN_TYPE_URN)
        {
            return Err(bad(format!("only {ACCESS_TOKEN_TYPE_URN} can be issued")));
        }
        if self.actor_token.is_some()
            && self.actor_token_type.as_deref() != Some(ACCESS_TOKEN_TYPE_URN)
        {
            return Err(bad(format!(
                "actor_token_type must be {ACCESS_TOKEN_TYPE_URN}"
            )));
        }
        if self.audience.is_some() && self.resource.is_some() {
            return Err(bad("give audience or resource, not both".into()));
        }
        if self.actor_token_proof.is_some() && self.actor_token.is_none() {
            return Err(bad("actor_token_proof needs an actor_token".into()));
        }
        Ok(subject)
    }
}
