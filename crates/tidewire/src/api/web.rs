//! The chat page (`GET /`) and the browser client (`GET /tidewire.js`), built into
//! the binary: nothing to install or build beside tidewire itself.
//!
//! Every asset is sent with a content security policy that allows this origin's
//! scripts and styles only, so even a rendering mistake could not run script
//! that came with a model's answer.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");
const CLIENT_JS: &str = include_str!("../../assets/tidewire.js");

const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                      img-src 'self' data:; connect-src 'self'; object-src 'none'; \
                      base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Served from the binary: a new build is a new page, so revalidate.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (
                HeaderName::from_static("content-security-policy"),
                HeaderValue::from_static(POLICY),
            ),
        ],
        body,
    )
}

/// `GET /`: the chat page.
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /app.js`: the page's script.
pub async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /app.css`: the page's styles.
pub async fn app_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /tidewire.js`: the browser client, an ES module.
pub async fn client_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", CLIENT_JS)
}
