//! CORS: which browser origins may call the API. The seeds' front ends run in
//! browsers on another origin than the API (002 posts to http://localhost:8000
//! from its dev server, 003 to 127.0.0.1:8000), so the default allowlist is the
//! machine's own origins, on any port: a page served from elsewhere (any website
//! the user visits) gets no CORS headers and cannot read the answers. Other
//! origins are listed in `[auth] cors_origins`; `"*"` allows any.
//!
//! Preflights get the methods and whatever headers the client asks for
//! (`Authorization`, `Last-Event-ID`, `Idempotency-Key`, 002's header named
//! `body`, the SDKs' own); the headers a client must read are exposed.

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// The origins allowed when the configuration names none.
pub const DEFAULT_ORIGINS: [&str; 3] = ["http://localhost", "http://127.0.0.1", "http://[::1]"];

/// The CORS layer for `origins` (an origin without a port allows every port).
pub fn layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<String> = origins
        .iter()
        .map(|origin| origin.trim_end_matches('/').to_ascii_lowercase())
        .collect();
    let any = origins.iter().any(|origin| origin == "*");
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            any || origin
                .to_str()
                .is_ok_and(|origin| allowed(&origins, &origin.to_ascii_lowercase()))
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(AllowHeaders::mirror_request())
        // No `Vary` on every response: nothing here is cached by origin (streams
        // and per-user JSON), and every byte of a response's head counts for a
        // client that reconnects through a flaky network.
        .vary(Vec::<HeaderName>::new())
}

/// The headers a browser client must read, exposed on responses to allowed
/// origins only (the CORS layer would add them to every response).
const EXPOSED: &str = "x-tidewire-run-id, x-tidewire-conversation-id, \
x-vercel-ai-ui-message-stream, retry-after, www-authenticate";

/// Adds `Access-Control-Expose-Headers` where the CORS layer allowed the origin.
pub async fn expose(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    if headers.contains_key(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        headers.insert(
            axum::http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }
    response
}

/// Whether `origin` is listed, exactly or (for a listed origin without a port)
/// on any port.
fn allowed(origins: &[String], origin: &str) -> bool {
    origins.iter().any(|listed| {
        origin == listed
            || origin
                .strip_prefix(listed.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_origins_match_exactly_or_on_any_port_when_listed_without_one() {
        let origins: Vec<String> = ["http://localhost", "https://app.example:8443"]
            .map(String::from)
            .to_vec();
        assert!(allowed(&origins, "http://localhost"));
        assert!(allowed(&origins, "http://localhost:3000"));
        assert!(allowed(&origins, "https://app.example:8443"));
        assert!(!allowed(&origins, "https://app.example"));
        assert!(!allowed(&origins, "http://localhost.evil.example"));
        assert!(!allowed(&origins, "http://localhost:3000.evil.example"));
        assert!(!allowed(&origins, "https://localhost:3000"));
    }
}
