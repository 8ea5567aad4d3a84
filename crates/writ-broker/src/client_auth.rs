//! Client authentication at the HTTP edge (RFC 6749 §2.3, RFC 7523 §2.2):
//! which method a request at introspection or revocation uses, read from
//! its `Authorization` header and form. Checking the credentials is
//! `writ-authority`'s (`service::clients`).

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::OAuthError;
use crate::service::clients::ClientCredentials;

/// RFC 7523 §2.2's `client_assertion_type`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client-authentication fields of a form.
#[derive(Debug, Default)]
pub struct FormFields<'a> {
    pub client_id: Option<&'a str>,
    pub client_assertion_type: Option<&'a str>,
    pub client_assertion: Option<&'a str>,
}

/// The client credentials of a request, if it uses one of the
/// [`METHODS`](crate::service::clients::METHODS):
/// `None` leaves the request to writ's bearer credentials. A request
/// that uses more than one method, or a malformed one, is refused.
pub fn credentials(
    headers: &HeaderMap,
    form: &FormFields<'_>,
) -> Result<Option<ClientCredentials>, OAuthError> {
    let basic = basic(headers)?;
    let assertion = match (form.client_assertion_type, form.client_assertion) {
        (None, None) => None,
        (Some(JWT_BEARER), Some(a)) if !a.is_empty() => Some(a),
        (Some(JWT_BEARER), _) => {
            return Err(OAuthError::invalid_request("client_assertion is missing"));
        }
        (Some(_), _) => {
            return Err(OAuthError::invalid_client(
                "unsupported client_assertion_type",
            ));
        }
        (None, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "client_assertion_type is missing",
            ));
        }
    };
    match (basic, assertion) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "a client may use only one authentication method",
        )),
        (Some((client_id, secret)), None) => {
            if form.client_id.is_some_and(|id| id != client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the authenticated client",
                ));
            }
            Ok(Some(ClientCredentials::Basic { client_id, secret }))
        }
        (None, Some(a)) => Ok(Some(ClientCredentials::Assertion {
            assertion: a.to_owned(),
            client_id: form.client_id.map(str::to_owned),
        })),
        (None, None) => Ok(None),
    }
}

/// `Authorization: Basic` (RFC 7617), its id and secret each
/// form-urlencoded first (RFC 6749 §2.3.1).
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let Some((scheme, rest)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let malformed = || OAuthError::invalid_client("malformed Basic credentials");
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    let (id, secret) = (form_decode(id), form_decode(secret));
    if id.is_empty() || secret.is_empty() {
        return Err(malformed());
    }
    Ok(Some((id, secret)))
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(s.as_bytes())
        .next()
        .map(|(k, v)| {
            if v.is_empty() {
                k.into_owned()
            } else {
                // A raw `=` in the value: keep it as sent.
                format!("{k}={v}")
            }
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic_header(raw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(raw)).parse().unwrap(),
        );
        h
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let got = credentials(&basic_header("rs%2E1:s%2Bx+y"), &FormFields::default()).unwrap();
        match got {
            Some(ClientCredentials::Basic { client_id, secret }) => {
                assert_eq!(client_id, "rs.1");
                assert_eq!(secret, "s+x y");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_methods_at_once_are_refused() {
        let form = FormFields {
            client_assertion_type: Some(JWT_BEARER),
            client_assertion: Some("a.b.c"),
            ..FormFields::default()
        };
        let e = credentials(&basic_header("rs:secret"), &form).unwrap_err();
        assert_eq!(e.error, "invalid_request");
        let e = credentials(&basic_header("nocolon"), &FormFields::default()).unwrap_err();
        assert_eq!(e.error, "invalid_client");
    }
}
