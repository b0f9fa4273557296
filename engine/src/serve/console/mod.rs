//! The web console at `/`: one page, its script and its style sheet, compiled into
//! the binary (`include_str!`), with no build step and nothing loaded from elsewhere.
//!
//! The page holds no data: it reads `GET /status` and `GET /views` and runs `POST
//! /sql` from the browser, so those answer behind the token guard as for any other
//! client, while the assets themselves are served without a token (a browser cannot
//! send one when it opens a page). Behind `auth:` the page asks for a query token
//! and sends it as `Authorization: Bearer`.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `(name, media type, text)` of each asset under `/console/`.
const ASSETS: [(&str, &str, &str); 2] = [
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console.css"),
    ),
];

/// The page (`GET /`).
const INDEX: &str = include_str!("index.html");

/// Whether the guard lets `path` through without a token: the console's assets.
pub(crate) fn is_asset(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

/// `GET /`: the console's page.
pub(crate) async fn index() -> Response {
    asset_response("text/html; charset=utf-8", INDEX)
}

/// `GET /console/FILE`: its script or style sheet.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, media, text)) => asset_response(media, text),
        None => crate::serve::http::error_response(
            StatusCode::NOT_FOUND,
            "http.not_found",
            &format!("the console has no file {file}"),
        ),
    }
}

/// An asset with headers that keep it to this origin: scripts, styles and requests
/// from this instance only, and no framing by other sites.
fn asset_response(media: &'static str, text: &'static str) -> Response {
    let mut r = text.into_response();
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    // A new binary may bring new assets: browsers ask again each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
