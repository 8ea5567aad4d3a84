//! Operators' sign-in from a browser (the console): the authorization
//! code flow with PKCE (RFC 6749 §4.1, RFC 7636, OIDC Core §3.1), writ the
//! OIDC client.
//!
//! Starting makes a `state` (ties the provider's answer to this browser:
//! no login CSRF), a `nonce` (ties the identity token to this sign-in: no
//! token substitution) and a PKCE verifier (ties the code to this
//! sign-in: a code stolen or injected is worth nothing without it). The
//! three travel sealed (AES-GCM under the master key, bound to their
//! purpose) in a short-lived cookie the HTTP edge sets: nothing is kept
//! server-side, so any replica can finish a sign-in another started. The
//! identity token the code buys is accepted by the very checks of
//! [`Broker::operator_sign_in`], its nonce included, once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use writ_core::api::OperatorSession;
use writ_core::random;

use super::login::{Claimed, Via};
use super::operators::Operators;
use crate::config::{OperatorSso, SsoBrowser};
use crate::error::Error;

/// Where a browser starts signing in (the HTTP edge serves it there).
pub const BROWSER_SIGN_IN_START: &str = "/ui/sso/start";
/// Where the provider sends the browser back (the path of
/// `operator_oidc_redirect_uri`).
pub const BROWSER_SIGN_IN_CALLBACK: &str = "/ui/sso/callback";

/// How long a browser has from the start of a sign-in to its callback.
pub const SIGN_IN_FLOW_SECS: i64 = 600;
/// What the sealed flow is bound to: a blob sealed for anything else
/// does not open as one.
const FLOW_PURPOSE: &str = "operator-sso-browser-flow";
/// A provider's error text is quoted at most this long.
const PROVIDER_TEXT_MAX: usize = 200;

/// A browser sign-in started: where to send the browser, and the sealed
/// flow to keep in its cookie until the callback.
#[derive(Debug)]
pub struct BrowserSignIn {
    pub location: String,
    pub flow: String,
    /// The callback is `https`: the cookie is `Secure`.
    pub secure: bool,
}

/// The query of the provider's redirect back (RFC 6749 §4.1.2, RFC 9207).
#[derive(Debug, Default, Deserialize)]
pub struct BrowserCallback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

/// What the cookie carries between start and callback.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
    /// Seconds; the cookie's own max-age is the browser's to honour, this
    /// is ours.
    exp: i64,
}

/// The token endpoint's answer: only the identity token is used (the
/// access token is the provider's, for its own APIs).
#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
}

impl Operators {
    fn sso_browser(&self) -> Result<(&OperatorSso, &SsoBrowser), Error> {
        let sso = self.config.operator_sso.as_ref().ok_or_else(|| {
            Error::NotFound("single sign-on for operators is not configured on this broker".into())
        })?;
        let browser = sso.browser.as_ref().ok_or_else(|| {
            Error::NotFound(
                "sign-in from a browser is not configured on this broker (operator_oidc_redirect_uri)"
                    .into(),
            )
        })?;
        Ok((sso, browser))
    }

    /// Whether browser sign-in cookies are `Secure` (the callback is
    /// `https`).
    pub fn browser_sign_in_secure(&self) -> bool {
        self.sso_browser()
            .is_ok_and(|(_, b)| b.redirect_uri.starts_with("https://"))
    }

    /// Starts a browser sign-in: the provider's authorization URL with a
    /// fresh state, nonce and S256 code challenge, and the sealed flow.
    pub fn operator_browser_start(&self) -> Result<BrowserSignIn, Error> {
        let (_, browser) = self.sso_browser()?;
        let flow = Flow {
            state: random::token_256()?,
            nonce: random::token_256()?,
            verifier: random::token_256()?,
            exp: self.now().secs().saturating_add(SIGN_IN_FLOW_SECS),
        };
        let challenge = URL_SAFE_NO_PAD.encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, flow.verifier.as_bytes())
                .as_ref(),
        );
        let location = url::Url::parse_with_params(
            &browser.authorization_endpoint,
            [
                ("response_type", "code"),
                ("client_id", browser.client_id.as_str()),
                ("redirect_uri", browser.redirect_uri.as_str()),
                ("scope", browser.scopes.as_str()),
                ("state", flow.state.as_str()),
                ("nonce", flow.nonce.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .map_err(|e| Error::Internal(format!("the authorization endpoint: {e}")))?
        .to_string();
        let plain = serde_json::to_vec(&flow).map_err(|e| Error::Internal(e.to_string()))?;
        let sealed = self
            .master()
            .seal(FLOW_PURPOSE, &plain)
            .map_err(|e| Error::Internal(format!("sealing a sign-in flow: {e}")))?;
        Ok(BrowserSignIn {
            location,
            flow: URL_SAFE_NO_PAD.encode(sealed),
            secure: browser.redirect_uri.starts_with("https://"),
        })
    }

    /// Finishes a browser sign-in: the provider's answer must belong to
    /// the flow this browser started (`state`), come from our provider
    /// (`iss`, when it says), and carry a code the token endpoint redeems
    /// for an identity token with this flow's verifier; that token is then
    /// accepted as [`Broker::operator_sign_in`] accepts one, with this
    /// flow's nonce. Every refusal is audited, and none leaves a session.
    pub async fn operator_browser_finish(
        &self,
        flow: Option<&str>,
        cb: &BrowserCallback,
    ) -> Result<OperatorSession, Error> {
        let (sso, browser) = self.sso_browser()?;
        // Refused before any identity is involved (no or a bad flow
        // cookie, another state, too old; anyone can send these): counted,
        // not audited.
        let flow = match self.this_browsers_flow(flow, cb) {
            Ok(f) => f,
            Err(e) => {
                crate::metrics::inc(&self.metrics.sign_in_refused_early);
                return Err(e);
            }
        };
        if let Err(e) = checked_answer(sso, cb) {
            self.audit_refused_sign_in(Via::Browser, &Claimed::default(), &e.to_string())
                .await?;
            return Err(e);
        }
        let id_token = match self.redeem(browser, &flow, cb).await {
            Ok(t) => t,
            Err(e) => {
                if !matches!(e, Error::Unavailable(_)) {
                    self.audit_refused_sign_in(Via::Browser, &Claimed::default(), &e.to_string())
                        .await?;
                }
                return Err(e);
            }
        };
        self.sign_in(
            &id_token,
            &browser.client_id,
            Some(&flow.nonce),
            Via::Browser,
        )
        .await
    }

    /// The flow of this browser, the provider's answer belonging to it
    /// (`state`).
    fn this_browsers_flow(
        &self,
        sealed: Option<&str>,
        cb: &BrowserCallback,
    ) -> Result<Flow, Error> {
        let again = "start the sign-in again";
        let flow = sealed
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .and_then(|b| self.master().open(FLOW_PURPOSE, &b).ok())
            .and_then(|plain| serde_json::from_slice::<Flow>(&plain).ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "no sign-in was started in this browser (or its cookie was refused): {again}"
                ))
            })?;
        if self.now().secs() > flow.exp {
            return Err(Error::Invalid(format!(
                "the sign-in took longer than {SIGN_IN_FLOW_SECS} s: {again}"
            )));
        }
        let state_ok = cb.state.as_deref().is_some_and(|s| {
            aws_lc_rs::constant_time::verify_slices_are_equal(s.as_bytes(), flow.state.as_bytes())
                .is_ok()
        });
        if !state_ok {
            return Err(Error::Invalid(format!(
                "the answer does not belong to the sign-in this browser started (state): {again}"
            )));
        }
        Ok(flow)
    }
}

/// The provider's answer to a flow of this browser, up to the code.
fn checked_answer(sso: &OperatorSso, cb: &BrowserCallback) -> Result<(), Error> {
    // RFC 9207: a provider that names itself must be ours (an answer
    // from another provider, mixed up, is refused before any exchange).
    if let Some(iss) = cb.iss.as_deref()
        && iss != sso.issuer
    {
        return Err(Error::Unauthenticated(format!(
            "the answer names another identity provider ({})",
            quoted(iss)
        )));
    }
    if let Some(error) = cb.error.as_deref() {
        let detail = cb
            .error_description
            .as_deref()
            .map(|d| format!(": {}", quoted(d)))
            .unwrap_or_default();
        return Err(Error::Unauthenticated(format!(
            "the identity provider did not sign you in ({}){detail}",
            quoted(error)
        )));
    }
    if cb.code.as_deref().is_none_or(str::is_empty) {
        return Err(Error::Invalid(
            "the identity provider's answer has no code".into(),
        ));
    }
    Ok(())
}

impl Operators {
    /// Redeems the code at the token endpoint with this flow's verifier:
    /// the identity token.
    async fn redeem(
        &self,
        browser: &SsoBrowser,
        flow: &Flow,
        cb: &BrowserCallback,
    ) -> Result<String, Error> {
        let code = cb.code.as_deref().unwrap_or_default();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", browser.redirect_uri.as_str()),
            ("code_verifier", flow.verifier.as_str()),
        ];
        // No redirect followed: a 307 would resend the code and its
        // verifier (and the client secret) to wherever it points.
        let mut req = self.oidc.http_no_redirects().post(&browser.token_endpoint);
        match &browser.client_secret {
            // client_secret_basic: both halves form-encoded first (RFC 6749 §2.3.1).
            Some(secret) => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                req = req.basic_auth(enc(&browser.client_id), Some(enc(secret.expose())));
            }
            None => form.push(("client_id", browser.client_id.as_str())),
        }
        let resp = req
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot reach the identity provider's token endpoint");
                Error::Unavailable(format!("the token endpoint: {e}"))
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::Unavailable(format!("reading the token endpoint's answer: {e}")))?;
        if !status.is_success() {
            let why = serde_json::from_slice::<TokenError>(&body)
                .ok()
                .and_then(|e| e.error)
                .map_or_else(|| status.to_string(), |e| quoted(&e));
            return Err(Error::Unauthenticated(format!(
                "the identity provider refused the code ({why})"
            )));
        }
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(|t| t.id_token)
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "the identity provider's token endpoint gave no identity token".into(),
                )
            })
    }
}

/// A provider's text, as told back: printable ASCII, bounded (it comes in
/// a URL anyone can make).
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(PROVIDER_TEXT_MAX)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_is_bounded_and_printable() {
        assert_eq!(quoted("access_denied"), "access_denied");
        assert_eq!(quoted("a\r\nb<\u{7}c"), "ab<c");
        assert_eq!(quoted(&"x".repeat(1000)).len(), PROVIDER_TEXT_MAX);
    }
}
