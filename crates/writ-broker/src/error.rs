//! The one place errors become HTTP responses.
//!
//! `ApiError` answers RFC 9457 problem details; `OAuthError` answers the
//! RFC 6749 §5.2 form on `/oauth2/*`. The broker's logic answers
//! [`writ_authority::Error`]: the route chooses the form (by the error type
//! its handler returns), the variant chooses the status and the code.
//! Internal causes are logged here and never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use writ_authority::error::store_cause;
use writ_authority::{Binding, Error, GrantError};
use writ_core::api::{OAuthErrorBody, Problem};
use writ_policy::Decision;
use writ_store::StoreError;

/// An error on a writ (non-OAuth) endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{}", .0.reason())]
    Denied(Decision),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A bound on how much one caller may have open at once was reached.
    #[error("{0}")]
    TooManyRequests(String),
    /// A client asked more often than its rate allows; it may try again
    /// after `retry_after` seconds (sent as `Retry-After`).
    #[error("{detail}")]
    RateLimited { detail: String, retry_after: u64 },
    /// A DPoP proof was refused (`invalid_dpop_proof`) or needs a server
    /// nonce (`use_dpop_nonce`, with a fresh one to use).
    #[error("{detail}")]
    Dpop {
        error: &'static str,
        detail: String,
        nonce: Option<String>,
    },
    /// A dependency (the store, the disk) cannot serve now; the cause is logged.
    #[error("service unavailable")]
    Unavailable(String),
    /// A bug or corrupt data; the cause is logged.
    #[error("internal error")]
    Internal(String),
}

/// The one mapping of the broker's errors to problem details: the variant
/// chooses the status.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(d) => ApiError::BadRequest(d),
            Error::Unauthenticated(d) | Error::InvalidClient(d) => ApiError::Unauthorized(d),
            Error::Forbidden(d) | Error::Quarantined(d) | Error::ApprovalRefused(d) => {
                ApiError::Forbidden(d)
            }
            Error::Denied(decision) => ApiError::Denied(decision),
            Error::NotFound(d) => ApiError::NotFound(d),
            Error::Conflict(d) | Error::TaskEnded(d) => ApiError::Conflict(d),
            Error::TooMany(d) => ApiError::TooManyRequests(d),
            Error::RateLimited {
                detail,
                retry_after,
            } => ApiError::RateLimited {
                detail,
                retry_after,
            },
            Error::Binding(b) => {
                let detail = b.to_string();
                match b {
                    Binding::UseNonce { nonce } => ApiError::Dpop {
                        error: "use_dpop_nonce",
                        detail,
                        nonce: Some(nonce),
                    },
                    Binding::ProofMissing | Binding::Proof(_) => ApiError::Dpop {
                        error: "invalid_dpop_proof",
                        detail,
                        nonce: None,
                    },
                }
            }
            Error::Grant(GrantError::Denied(d)) => ApiError::Forbidden(d),
            Error::Grant(g) => ApiError::BadRequest(g.to_string()),
            Error::Store(e @ StoreError::Corrupt(_)) => ApiError::Internal(store_cause(&e)),
            Error::Store(e @ (StoreError::Unavailable(_) | StoreError::Closed)) => {
                ApiError::Unavailable(store_cause(&e))
            }
            Error::Store(answer) => Error::from(answer).into(),
            Error::Unavailable(cause) => ApiError::Unavailable(cause),
            Error::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Error::from(e).into()
    }
}

impl ApiError {
    /// The whole story, internal causes included: for the operator (a
    /// startup failure, a log line), never for an HTTP client.
    pub fn cause(&self) -> String {
        match self {
            ApiError::Unavailable(cause) => format!("service unavailable: {cause}"),
            ApiError::Internal(cause) => format!("internal error: {cause}"),
            other => other.to_string(),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::Dpop { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Denied(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Unavailable(cause) => {
                tracing::error!(%cause, "request failed: dependency unavailable")
            }
            ApiError::Internal(cause) => tracing::error!(%cause, "request failed: internal error"),
            _ => tracing::debug!(status = status.as_u16(), error = %self, "request refused"),
        }
        let mut problem = Problem {
            type_: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(self.to_string()),
            ..Problem::default()
        };
        if let ApiError::Denied(d) = &self {
            problem.determining_policies = d.determining_policies().to_vec();
            problem.policy_version = Some(d.policy_version().to_owned());
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::RateLimited { retry_after, .. } = &self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            // Refused before its body was read: the connection cannot carry
            // another request, and the client is told so rather than finding
            // out on its next write.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::Dpop { error, nonce, .. } = &self {
            let challenge = format!("DPoP error=\"{error}\", algs=\"EdDSA Ed25519 ES256\"");
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
            if let Some(v) = nonce.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
                h.insert("dpop-nonce", v);
            }
        } else if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"writ\", DPoP algs=\"EdDSA Ed25519 ES256\"",
                ),
            );
        }
        resp
    }
}

/// An error on an OAuth endpoint (RFC 6749 §5.2, RFC 7009, RFC 7662).
#[derive(Debug, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// Logged, never sent.
    pub cause: Option<String>,
    /// A fresh server nonce to send in `DPoP-Nonce`.
    pub nonce: Option<String>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            cause: None,
            nonce: None,
        }
    }

    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }

    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }

    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", d)
    }

    pub fn access_denied(d: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "access_denied", d)
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }

    /// The caller's own credential is missing or bad.
    pub fn invalid_token(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", d)
    }

    /// Client authentication failed (RFC 6749 §5.2).
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }

    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
    }

    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", d)
    }

    pub fn unavailable(cause: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the service cannot handle the request now",
        );
        e.cause = Some(cause.into());
        e
    }

    pub fn server_error(cause: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        );
        e.cause = Some(cause.into());
        e
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unauthorized(d) => OAuthError::invalid_token(d),
            ApiError::Forbidden(d) | ApiError::NotFound(d) | ApiError::Conflict(d) => {
                OAuthError::unauthorized_client(d)
            }
            ApiError::Denied(d) => OAuthError::unauthorized_client(d.reason()),
            ApiError::BadRequest(d)
            | ApiError::PayloadTooLarge(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::TooManyRequests(d)
            | ApiError::RateLimited { detail: d, .. } => OAuthError::invalid_request(d),
            ApiError::MethodNotAllowed => OAuthError::invalid_request("method not allowed"),
            ApiError::Dpop {
                error,
                detail,
                nonce,
            } => {
                let mut e = OAuthError::new(StatusCode::BAD_REQUEST, error, detail);
                e.nonce = nonce;
                e
            }
            ApiError::Unavailable(c) => OAuthError::unavailable(c),
            ApiError::Internal(c) => OAuthError::server_error(c),
        }
    }
}

/// The one mapping of the broker's errors to RFC 6749 §5.2 errors on
/// `/oauth2/*`: a refused exchange says which of its parts was wrong;
/// anything else answers as it would elsewhere, in this form.
impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        match e {
            Error::Grant(g) => match g {
                GrantError::Invalid(d) => OAuthError::invalid_grant(d),
                GrantError::Scope(d) => OAuthError::invalid_scope(d),
                GrantError::Target(d) => OAuthError::invalid_target(d),
                GrantError::Denied(d) => OAuthError::access_denied(d),
                GrantError::UnsupportedType(d) => OAuthError::unsupported_grant_type(d),
            },
            Error::InvalidClient(d) => OAuthError::invalid_client(d),
            other => ApiError::from(other).into(),
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        Error::from(e).into()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(%cause, error = self.error, "oauth request failed");
        }
        let body = OAuthErrorBody {
            error: self.error.to_owned(),
            error_description: Some(self.description.clone()),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = self
            .nonce
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            h.insert("dpop-nonce", v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // A client that failed to authenticate is told the scheme to
            // use (RFC 6749 §5.2); a bad bearer credential, RFC 6750's.
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(if self.error == "invalid_client" {
                    "Basic realm=\"writ\""
                } else {
                    "Bearer realm=\"writ\", error=\"invalid_token\""
                }),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_fails_to_authenticate_is_told_invalid_client() {
        let e = OAuthError::from(Error::InvalidClient("client authentication failed".into()));
        assert_eq!(e.error, "invalid_client");
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let resp = e.into_response();
        assert_eq!(
            resp.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Basic realm=\"writ\""
        );
        // Elsewhere it is an authentication failure like any other.
        let api = ApiError::from(Error::InvalidClient("no".into()));
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn a_token_outside_the_clients_audiences_is_unauthorized_client() {
        let e = OAuthError::from(Error::Forbidden(
            "the token was not issued for this client's audiences".into(),
        ));
        assert_eq!(e.error, "unauthorized_client");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
