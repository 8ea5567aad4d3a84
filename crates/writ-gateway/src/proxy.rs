//! Plain HTTP: decide on method, path and query, then forward with the
//! upstream secret injected and the agent's credentials stripped.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;
use futures_util::TryStreamExt as _;
use writ_core::api::Tool;
use writ_policy::CallRequest;

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::state::Bundle;
use crate::txn::Asked;

/// Never forwarded in either direction (RFC 9110 §7.6.1), plus what names
/// the agent or claims to: the gateway alone says who is calling.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers the agent may not pass upstream.
fn stripped_request_header(name: &str, secret_header: Option<&HeaderName>) -> bool {
    HOP_BY_HOP.contains(&name)
        || matches!(
            name,
            "host" | "authorization" | "dpop" | "forwarded" | "x-real-ip"
        )
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-writ-")
        || name == writ_core::txn::TXN_TOKEN_HEADER
        // Method and URL overrides would make the upstream do something
        // else than what was decided; names with `_` are aliases of `-` ones
        // on some servers (CGI/WSGI).
        || matches!(
            name,
            "x-http-method-override" | "x-http-method" | "x-method-override" | "x-original-url"
                | "x-rewrite-url" | "x-original-method"
        )
        || name.contains('_')
        || secret_header.is_some_and(|h| h.as_str() == name)
}

/// A `Cookie` header without writ's own cookies (an operator's console
/// session, a sign-on flow: a browser on the same site sends them to the
/// gateway too); `None` when nothing else is left. A value that is not
/// text is dropped whole (it cannot be checked).
fn without_writ_cookies(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let kept: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(k, _)| k).trim();
            !writ_core::api::BROWSER_COOKIES.contains(&name)
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// The headers an upstream receives: the agent's, filtered, then the
/// gateway's own: the signed transaction token of the call (`Txn-Token`)
/// and, unless the tool takes the token only, the informational
/// `X-Writ-Agent` and `X-Writ-Task`; when the gateway traces, its own
/// `traceparent` in place of the agent's trace context headers.
pub(crate) fn upstream_headers(
    incoming: &HeaderMap,
    caller: &Caller,
    tool: &Tool,
    gw: &Gateway,
    peer: SocketAddr,
    asked: Asked<'_>,
) -> Result<HeaderMap, GatewayError> {
    let secret = gw.view.secret_of(tool)?;
    // Headers the agent's `Connection` header names are hop-by-hop too.
    let connection_named: Vec<String> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        let n = name.as_str();
        if stripped_request_header(n, secret.as_ref().map(|s| &s.header))
            || connection_named.iter().any(|c| c == n)
        {
            continue;
        }
        if *name == header::COOKIE {
            if let Some(v) = without_writ_cookies(value) {
                out.append(header::COOKIE, v);
            }
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
        out.insert("x-forwarded-for", v);
    }
    if let Some((proto, host)) = &gw.view.forwarded {
        out.insert("x-forwarded-proto", proto.clone());
        out.insert("x-forwarded-host", host.clone());
    }
    out.insert(
        writ_core::txn::TXN_TOKEN_HEADER,
        crate::txn::header(gw, caller, tool, asked, peer)?,
    );
    let token_only = tool
        .upstream
        .as_ref()
        .is_some_and(writ_core::api::Upstream::txn_token_only);
    if !token_only {
        if let Ok(v) = HeaderValue::from_str(caller.agent.name.as_str()) {
            out.insert("x-writ-agent", v);
        }
        if let Some(Ok(v)) = caller.claims.task.as_deref().map(HeaderValue::from_str) {
            out.insert("x-writ-task", v);
        }
    }
    // Tracing on, the upstream's parent is the gateway's span of this
    // request (itself a child of the agent's context, if it sent one).
    writ_listen::trace::inject(&mut out);
    if let Some(s) = secret {
        out.insert(s.header, s.value);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments, reason = "one request's context")]
pub(crate) async fn forward(
    gw: &Gateway,
    bundle: &Bundle,
    caller: &Caller,
    tool: &Tool,
    upstream: &str,
    rest: &str,
    peer: SocketAddr,
    req: Request,
) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or_default();
    let path = if rest.is_empty() { "/" } else { rest };
    let out = gw
        .enforce(
            bundle,
            caller,
            tool,
            CallRequest {
                method: parts.method.as_str(),
                path,
                query,
                ..CallRequest::default()
            },
        )
        .await;
    if let Some(refusal) = out.refusal() {
        return Err(refusal);
    }
    let url = forwarded_url(tool.name.as_str(), upstream, rest, query)?;
    let asked = Asked {
        method: parts.method.as_str(),
        path,
    };
    let headers = upstream_headers(&parts.headers, caller, tool, gw, peer, asked)?;
    // A request without a body is sent without one (an empty streamed
    // body would go out chunked, in a second write).
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut out = gw
        .upstream
        .request(parts.method.clone(), url)
        .headers(headers);
    if has_body {
        out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let resp = out
        .send()
        .await
        .map_err(|e| GatewayError::upstream(tool.name.as_str(), &e))?;
    Ok(relay(resp, upstream, &public_base(gw, tool)))
}

/// The URL a request is forwarded to: the upstream's base, then the path
/// policy decided on, exactly. URL parsing resolves dot segments and some
/// escapes on its own; should it make the path anything else than the
/// base and `rest` side by side, the request is refused, so what reaches
/// the upstream is never a path policy did not see.
fn forwarded_url(
    tool: &str,
    upstream: &str,
    rest: &str,
    query: &str,
) -> Result<url::Url, GatewayError> {
    let mut text = format!("{}{rest}", upstream.trim_end_matches('/'));
    if !query.is_empty() {
        text.push('?');
        text.push_str(query);
    }
    let base = url::Url::parse(upstream)
        .map_err(|_| GatewayError::BadGateway(format!("tool {tool} has an unusable upstream")))?;
    let url = url::Url::parse(&text)
        .map_err(|_| GatewayError::BadRequest("the path cannot be forwarded".into()))?;
    let mut expected = format!("{}{rest}", base.path().trim_end_matches('/'));
    if expected.is_empty() {
        expected.push('/');
    }
    if url.path() != expected {
        return Err(GatewayError::BadRequest(
            "the path would reach the upstream as another path than the one decided on \
             (send characters such as {, } and \" percent-encoded)"
                .into(),
        ));
    }
    Ok(url)
}

/// Where agents reach `tool` on this gateway.
pub(crate) fn public_base(gw: &Gateway, tool: &Tool) -> String {
    format!(
        "{}/{}",
        gw.view.cfg.public_url.trim_end_matches('/'),
        tool.name
    )
}

/// A redirect into the upstream's own base URL, pointed at the gateway's
/// path for the tool instead, as nginx's `proxy_redirect default` does:
/// agents see where the tool is on the gateway, not where it runs. A
/// relative reference that does not start at the root already resolves
/// below the tool on the gateway, and is left alone.
fn rewrite_location(value: &HeaderValue, upstream: &str, public: &str) -> Option<HeaderValue> {
    let location = value.to_str().ok()?;
    let relative_path = !location.starts_with('/') && !location.contains("://");
    if relative_path {
        return None;
    }
    let base = url::Url::parse(upstream).ok()?;
    let target = base.join(location).ok()?;
    let same_origin = target.scheme() == base.scheme()
        && target.host_str() == base.host_str()
        && target.port_or_known_default() == base.port_or_known_default();
    let base_path = base.path().trim_end_matches('/');
    let below = target.path().strip_prefix(base_path)?;
    if !same_origin || !(below.is_empty() || below.starts_with('/')) {
        return None;
    }
    let mut out = format!("{public}{below}");
    if let Some(q) = target.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = target.fragment() {
        out.push('#');
        out.push_str(f);
    }
    HeaderValue::from_str(&out).ok()
}

/// The upstream's answer, streamed back without hop-by-hop headers, its
/// redirects into `upstream` pointed at `public` (the tool on the gateway).
pub(crate) fn relay(resp: reqwest::Response, upstream: &str, public: &str) -> Response {
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if matches!(*name, header::LOCATION | header::CONTENT_LOCATION)
            && let Some(v) = rewrite_location(value, upstream, public)
        {
            headers.append(name.clone(), v);
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    let mut out = Response::new(Body::from_stream(stream));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h8_the_upstream_gets_exactly_the_path_policy_saw() {
        let url = |base: &str, rest: &str, q: &str| {
            forwarded_url("crm", base, rest, q).map(|u| u.to_string())
        };
        assert_eq!(
            url("http://crm.internal/api", "/customers/42", "a=1").unwrap(),
            "http://crm.internal/api/customers/42?a=1"
        );
        assert_eq!(
            url("http://crm.internal/api/", "", "").unwrap(),
            "http://crm.internal/api"
        );
        assert_eq!(
            url("http://crm.internal", "", "").unwrap(),
            "http://crm.internal/"
        );
        // Anything URL parsing would resolve is refused, even past check_path.
        for rest in [
            "/../admin",
            "/a/%2e%2e/admin",
            "/a\\..\\admin",
            "/a/./b",
            // Escaped by URL parsing: forwarded as %7B, decided as {.
            "/a{b}",
        ] {
            assert!(url("http://crm.internal/api", rest, "").is_err(), "{rest}");
        }
    }

    #[test]
    fn h13_redirects_into_the_upstream_name_the_tool_on_the_gateway() {
        let up = "http://crm.internal:8080/api";
        let public = "https://gw.example/crm";
        let rewrite = |l: &str| {
            rewrite_location(&HeaderValue::from_str(l).unwrap(), up, public)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            rewrite("http://crm.internal:8080/api/customers/43?x=1#top").as_deref(),
            Some("https://gw.example/crm/customers/43?x=1#top")
        );
        assert_eq!(
            rewrite("HTTP://CRM.internal:8080/api").as_deref(),
            Some("https://gw.example/crm")
        );
        assert_eq!(
            rewrite("/api/login").as_deref(),
            Some("https://gw.example/crm/login")
        );
        // Elsewhere, or a relative path (already right on the gateway).
        assert_eq!(rewrite("https://sso.example/login"), None);
        assert_eq!(rewrite("http://crm.internal:8080/apix"), None);
        assert_eq!(rewrite("customers/43"), None);
    }

    #[test]
    fn writs_own_cookies_are_never_forwarded_upstream() {
        let strip = |v: &str| {
            without_writ_cookies(&HeaderValue::from_str(v).unwrap())
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            strip("a=1; writ_console=s3cret; __Host-writ_console=x; b=2").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(
            strip("writ-sso-flow=f; __Host-writ-sso-flow=g").as_deref(),
            None
        );
        assert_eq!(strip("session=abc").as_deref(), Some("session=abc"));
        assert_eq!(strip(" writ_console = s ; c=3").as_deref(), Some("c=3"));
    }

    #[test]
    fn g1_g2_agent_credentials_and_identity_headers_are_stripped() {
        let secret = HeaderName::from_static("x-api-key");
        for h in [
            "authorization",
            "dpop",
            "host",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-real-ip",
            "x-writ-agent",
            "connection",
            "transfer-encoding",
            "x-api-key",
            "x_forwarded_for",
            "x_writ_agent",
            "x-http-method-override",
            "x-original-url",
        ] {
            assert!(stripped_request_header(h, Some(&secret)), "{h}");
        }
        for h in [
            "accept",
            "content-type",
            "content-length",
            "cookie",
            "x-request-id",
        ] {
            assert!(!stripped_request_header(h, Some(&secret)), "{h}");
        }
    }
}
