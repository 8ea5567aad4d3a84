//! How the gateway refuses: RFC 9457 problem details, with RFC 6750 /
//! RFC 9449 challenges on 401 and the protected resource's metadata URL.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use writ_core::api::Problem;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No token, or a token that does not verify here.
    #[error("{detail}")]
    Unauthorized {
        /// `invalid_token`, `invalid_dpop_proof` or none (no credential).
        error: Option<&'static str>,
        detail: String,
        /// The protected resource metadata URL for the challenge.
        metadata: String,
    },
    /// Policy (or the token's scopes) refused the request.
    #[error("{reason}")]
    Forbidden {
        reason: String,
        policy_version: Option<String>,
        determining_policies: Vec<String>,
        /// A call held for a person: the approval to ask for.
        approval_id: Option<writ_core::ApprovalId>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The gateway cannot decide safely now (stale revocations, no bundle).
    #[error("{0}")]
    Unavailable(String),
    /// The upstream failed.
    #[error("{0}")]
    BadGateway(String),
}

impl GatewayError {
    /// A request to `tool`'s upstream failed. The agent learns which tool
    /// and how, never where the upstream is: reqwest's message names the
    /// URL, and the errors under it can name the host (DNS, a certificate
    /// for another name), so the agent gets a fixed sentence and the
    /// operator's log gets the whole error.
    pub(crate) fn upstream(tool: &str, e: &reqwest::Error) -> Self {
        tracing::warn!(tool, error = %ErrorChain(e), "upstream request failed");
        let how = if e.is_timeout() {
            "did not answer in time"
        } else if e.is_connect() {
            "cannot be reached"
        } else if e.is_body() || e.is_decode() {
            "sent an answer that cannot be read"
        } else {
            "failed"
        };
        GatewayError::BadGateway(format!("the upstream of tool {tool} {how}"))
    }

    fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            GatewayError::Unavailable(c) | GatewayError::BadGateway(c) => {
                tracing::warn!(cause = %c, status = status.as_u16(), "gateway request failed")
            }
            _ => tracing::debug!(status = status.as_u16(), error = %self, "gateway refused"),
        }
        let mut problem = Problem {
            type_: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(self.to_string()),
            determining_policies: Vec::new(),
            policy_version: None,
            approval_id: None,
        };
        if let GatewayError::Forbidden {
            policy_version,
            determining_policies,
            approval_id,
            ..
        } = &self
        {
            problem.policy_version.clone_from(policy_version);
            problem
                .determining_policies
                .clone_from(determining_policies);
            problem.approval_id.clone_from(approval_id);
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let GatewayError::Unauthorized {
            error, metadata, ..
        } = &self
        {
            let err = error
                .map(|e| format!(", error=\"{e}\""))
                .unwrap_or_default();
            for scheme in ["Bearer", "DPoP"] {
                let algs = if scheme == "DPoP" {
                    ", algs=\"EdDSA ES256\""
                } else {
                    ""
                };
                let v = format!("{scheme} resource_metadata=\"{metadata}\"{err}{algs}");
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.append(header::WWW_AUTHENTICATE, v);
                }
            }
        }
        if let GatewayError::Unavailable(_) = &self {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// An error and its sources, one after the other (for the log only).
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    /// What reqwest says about a failed request names the URL; what the
    /// agent is told names the tool and the kind of failure only.
    #[tokio::test]
    async fn h13_upstream_errors_never_show_the_address() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        // Accepts and never answers.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(200))
            .build()
            .unwrap();
        for (addr, how) in [
            (closed, "cannot be reached"),
            (silent_addr, "did not answer in time"),
        ] {
            let url = format!("http://{addr}/internal/base");
            let e = client.get(&url).send().await.unwrap_err();
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
            let GatewayError::BadGateway(told) = GatewayError::upstream("crm", &e) else {
                panic!("not a 502")
            };
            assert_eq!(told, format!("the upstream of tool crm {how}"));
        }
        hold.abort();
    }
}
