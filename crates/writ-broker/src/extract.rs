//! Extractors whose rejections speak our error forms.

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, OAuthError};

/// Largest request body accepted anywhere.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `axum::Json`, answering bad bodies with problem details.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

/// A JSON body on the AuthZEN endpoints, where the specification answers a
/// body that is not JSON, or not sent as JSON, with 400.
pub struct AuthzenJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AuthzenJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(AuthzenJson(v)),
            Err(rej) => Err(match json_rejection(rej) {
                ApiError::UnsupportedMediaType(m) => ApiError::BadRequest(m),
                other => other,
            }),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    let text = rej.body_text();
    match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(format!(
            "request body is larger than {MAX_BODY_BYTES} bytes"
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
            "expected a request body with Content-Type: application/json".into(),
        ),
        _ => ApiError::BadRequest(clean(&text)),
    }
}

/// Shortens axum's rejection text to the useful part.
fn clean(text: &str) -> String {
    let t = text
        .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        .trim_start_matches("Failed to parse the request body as JSON: ");
    format!("invalid request body: {t}")
}

/// `axum::Form`, answering bad bodies in the OAuth error form.
pub struct Form<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Form<T> {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OAuthError> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(Form(v)),
            Err(rej) => Err(form_rejection(rej)),
        }
    }
}

fn form_rejection(rej: FormRejection) -> OAuthError {
    match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => OAuthError::invalid_request(format!(
            "request body is larger than {MAX_BODY_BYTES} bytes"
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            OAuthError::invalid_request("expected Content-Type: application/x-www-form-urlencoded")
        }
        _ => OAuthError::invalid_request(format!("invalid form body: {}", rej.body_text())),
    }
}

pub use crate::service::Presented;

/// The `DPoP` header, if there is exactly one (RFC 9449 §4.3 check 1).
pub fn dpop_proof(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all("dpop").iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    let refused = |d: &str| ApiError::Dpop {
        error: "invalid_dpop_proof",
        detail: d.to_owned(),
        nonce: None,
    };
    if values.next().is_some() {
        return Err(refused("more than one DPoP header"));
    }
    v.to_str()
        .map(Some)
        .map_err(|_| refused("malformed DPoP header"))
}

/// The credential of the `Authorization` header (`Bearer` or `DPoP`).
pub fn presented(headers: &HeaderMap) -> Result<Option<Presented<'_>>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "more than one Authorization header".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let dpop = if scheme.eq_ignore_ascii_case("bearer") {
        false
    } else if scheme.eq_ignore_ascii_case("dpop") {
        true
    } else {
        return Err(ApiError::Unauthorized(format!(
            "unsupported authorization scheme {scheme:?}"
        )));
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized("empty access token".into()));
    }
    Ok(Some(Presented {
        token,
        dpop,
        proof: dpop_proof(headers)?,
    }))
}

/// The bearer token of the `Authorization` header, if there is exactly one
/// (admin credentials are always `Bearer`).
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match presented(headers)? {
        None => Ok(None),
        Some(p) if p.dpop => Err(ApiError::Unauthorized(
            "this credential uses the Bearer scheme".into(),
        )),
        Some(p) => Ok(Some(p.token)),
    }
}
