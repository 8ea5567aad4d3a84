//! The console's files, embedded in the binary at build time: plain ES
//! modules and CSS from `crates/writ-broker/console/`, no bundler, no
//! Node.js to build.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Every file served under `/ui/`: its name, type and bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/dom.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/pages.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../console/favicon.svg"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/style.css"),
    ),
];

fn serve(name: &str) -> Result<Response, ApiError> {
    let (_, ty, bytes) = FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::NotFound("no such console file".into()))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(ty)),
            // Revalidated on every load: a new binary's files at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        *bytes,
    )
        .into_response())
}

pub(super) async fn index() -> Result<Response, ApiError> {
    serve("index.html")
}

pub(super) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    serve(&file)
}
