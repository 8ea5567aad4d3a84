//! `writ serve`'s operator single sign-on settings, checked and completed
//! (the issuer's keys found through its discovery document).

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::{FileConfig, ServeArgs};

/// Operators' single sign-on, when an issuer is configured: its keys are
/// found through its discovery document unless named.
pub(super) async fn operator_sso(
    args: &ServeArgs,
    file: &FileConfig,
) -> anyhow::Result<Option<writ_broker::OperatorSso>> {
    let issuer = args
        .operator_oidc_issuer
        .clone()
        .or_else(|| file.operator_oidc_issuer.clone());
    let client_id = args
        .operator_oidc_client_id
        .clone()
        .or_else(|| file.operator_oidc_client_id.clone());
    let (issuer, client_id) = match (issuer, client_id) {
        (None, None) => return Ok(None),
        (Some(i), Some(c)) => (i, c),
        _ => bail!("--operator-oidc-issuer and --operator-oidc-client-id go together"),
    };
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        bail!("--operator-oidc-issuer must be an http(s) URL");
    }
    if client_id.is_empty() {
        bail!("--operator-oidc-client-id must not be empty");
    }
    if file.operator_oidc_roles.is_empty() {
        bail!(
            "--operator-oidc-issuer needs claim-to-role rules: [[operator_oidc_roles]] with claim, value and role in the config file"
        );
    }
    let session_ttl = args
        .operator_session_ttl
        .or(file.operator_session_ttl)
        .unwrap_or(3600);
    if !(60..=86_400).contains(&session_ttl) {
        bail!("--operator-session-ttl must be between 60 and 86400 seconds");
    }
    let max_token_age = file.operator_oidc_max_token_age.unwrap_or(600);
    if !(1..=86_400).contains(&max_token_age) {
        bail!("operator_oidc_max_token_age must be between 1 and 86400 seconds");
    }
    let algorithms = writ_broker::oidc::algorithms(
        &file
            .operator_oidc_algorithms
            .clone()
            .unwrap_or_else(|| vec!["RS256".into(), "ES256".into(), "EdDSA".into()]),
    )
    .map_err(|e| anyhow::anyhow!("operator_oidc_algorithms: {e}"))?;
    let discovery =
        if file.operator_oidc_jwks_uri.is_none() || file.operator_oidc_redirect_uri.is_some() {
            Some(discover(&issuer).await?)
        } else {
            None
        };
    let jwks_uri = match (&file.operator_oidc_jwks_uri, &discovery) {
        (Some(u), _) => u.clone(),
        (None, Some(d)) => {
            https_or_loopback("the discovered jwks_uri", &d.jwks_uri)?;
            d.jwks_uri.clone()
        }
        (None, None) => bail!("the issuer's jwks_uri is unknown"),
    };
    let browser = match &file.operator_oidc_redirect_uri {
        None if file.operator_oidc_console_client_id.is_some()
            || file.operator_oidc_client_secret_file.is_some()
            || file.operator_oidc_scopes.is_some() =>
        {
            bail!(
                "operator_oidc_console_client_id, operator_oidc_client_secret_file and operator_oidc_scopes are for browser sign-in: set operator_oidc_redirect_uri too"
            )
        }
        None => None,
        Some(redirect_uri) => Some(browser(file, &client_id, redirect_uri, discovery)?),
    };
    Ok(Some(writ_broker::OperatorSso {
        issuer,
        client_id,
        jwks_uri,
        algorithms,
        name_claim: file
            .operator_oidc_name_claim
            .clone()
            .unwrap_or_else(|| "email".into()),
        roles: file.operator_oidc_roles.clone(),
        session_ttl,
        max_token_age,
        browser,
    }))
}

/// What writ reads of the issuer's discovery document.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

async fn discover(issuer: &str) -> anyhow::Result<Discovery> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let http = writ_client::ClientOptions::default().http()?;
    let d: Discovery = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("reading {url}"))?
        .json()
        .await
        .with_context(|| format!("parsing {url}"))?;
    if d.issuer != issuer {
        bail!(
            "the discovery document of {issuer} names another issuer ({})",
            d.issuer
        );
    }
    Ok(d)
}

/// The console's sign-in (authorization code with PKCE), checked: the
/// callback is ours, the provider's endpoints are known and it does S256.
fn browser(
    file: &FileConfig,
    client_id: &str,
    redirect_uri: &str,
    discovery: Option<Discovery>,
) -> anyhow::Result<writ_broker::SsoBrowser> {
    let Some(d) = discovery else {
        bail!("operator_oidc_redirect_uri needs the issuer's discovery document");
    };
    let parsed = reqwest::Url::parse(redirect_uri)
        .with_context(|| format!("operator_oidc_redirect_uri {redirect_uri:?}"))?;
    https_or_loopback("operator_oidc_redirect_uri", redirect_uri)?;
    if !matches!(parsed.scheme(), "https" | "http")
        || parsed.path() != writ_broker::service::BROWSER_SIGN_IN_CALLBACK
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        bail!(
            "operator_oidc_redirect_uri must be this broker's https://HOST/ui/sso/callback, nothing after it"
        );
    }
    let (Some(authorization_endpoint), Some(token_endpoint)) =
        (d.authorization_endpoint, d.token_endpoint)
    else {
        bail!(
            "the identity provider's discovery document names no authorization or token endpoint"
        );
    };
    https_or_loopback(
        "the discovered authorization_endpoint",
        &authorization_endpoint,
    )?;
    https_or_loopback("the discovered token_endpoint", &token_endpoint)?;
    if let Some(methods) = &d.code_challenge_methods_supported
        && !methods.iter().any(|m| m == "S256")
    {
        bail!("the identity provider does not support PKCE with S256");
    }
    let client_secret = match &file.operator_oidc_client_secret_file {
        None => None,
        Some(path) => {
            let s = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let s = s.trim();
            if s.is_empty() {
                bail!("{} is empty", path.display());
            }
            Some(writ_core::Secret::new(s))
        }
    };
    let scopes = file
        .operator_oidc_scopes
        .clone()
        .unwrap_or_else(|| "openid email profile".into());
    if !scopes.split(' ').any(|s| s == "openid") {
        bail!("operator_oidc_scopes must include openid");
    }
    Ok(writ_broker::SsoBrowser {
        client_id: file
            .operator_oidc_console_client_id
            .clone()
            .unwrap_or_else(|| client_id.to_owned()),
        client_secret,
        redirect_uri: redirect_uri.to_owned(),
        authorization_endpoint,
        token_endpoint,
        scopes,
    })
}

/// `url` is https, or http to this machine only (a loopback address or
/// `localhost`): codes, verifiers, secrets and session cookies never cross
/// a network in the clear.
fn https_or_loopback(what: &str, url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{what} {url:?}"))?;
    let host = parsed
        .host_str()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => bail!("{what} must be https (plain http only to a loopback address): {url}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn discovery(endpoints: &str) -> Discovery {
        Discovery {
            issuer: format!("{endpoints}/"),
            jwks_uri: format!("{endpoints}/jwks"),
            authorization_endpoint: Some(format!("{endpoints}/auth")),
            token_endpoint: Some(format!("{endpoints}/token")),
            code_challenge_methods_supported: None,
        }
    }

    #[test]
    fn sso_refuses_plain_http_redirect_uris_and_endpoints_unless_loopback() {
        let file = FileConfig::default();
        let ok = [
            (
                "https://writ.example/ui/sso/callback",
                "https://idp.example",
            ),
            (
                "http://127.0.0.1:8080/ui/sso/callback",
                "http://127.0.0.1:9000",
            ),
            ("http://localhost:8080/ui/sso/callback", "http://[::1]:9000"),
        ];
        for (redirect, idp) in ok {
            assert!(
                browser(&file, "c", redirect, Some(discovery(idp))).is_ok(),
                "{redirect} {idp}"
            );
        }
        let refused = [
            ("http://writ.example/ui/sso/callback", "https://idp.example"),
            ("http://10.0.0.5/ui/sso/callback", "https://idp.example"),
            ("https://writ.example/ui/sso/callback", "http://idp.example"),
            (
                "https://writ.example/ui/sso/callback",
                "http://127.0.0.1.evil.example",
            ),
        ];
        for (redirect, idp) in refused {
            let e = browser(&file, "c", redirect, Some(discovery(idp))).unwrap_err();
            assert!(e.to_string().contains("https"), "{redirect} {idp}: {e}");
        }
        assert!(https_or_loopback("x", "http://idp.example/jwks").is_err());
        assert!(https_or_loopback("x", "ftp://127.0.0.1/jwks").is_err());
    }
}
