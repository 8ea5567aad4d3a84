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
    let jwks_uri = match &file.operator_oidc_jwks_uri {
        Some(u) => u.clone(),
        None => {
            #[derive(Deserialize)]
            struct Discovery {
                issuer: String,
                jwks_uri: String,
            }
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
            d.jwks_uri
        }
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
    }))
}
