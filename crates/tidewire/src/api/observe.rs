//! `/metrics`, the middleware that measures the latency of the routes that answer
//! at once (a stream's latency is its length, not a useful number; streams are
//! counted where they are written, in `api::sse` and the hub), and the one that
//! gives each request its span and log lines.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tracing::Instrument;

use super::AppState;
use crate::metrics::RequestLabel;
#[allow(unused_imports)]
use tidewire_protocol::api::ErrorBody;

#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus metrics (OpenMetrics text)", content((String = "application/openmetrics-text"))),
        (status = 404, description = "Metrics are off", body = ErrorBody),
    )
)]
/// `GET /metrics`: every metric, in Prometheus' text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = state.hub.pipeline().metrics();
    if !metrics.enabled() {
        return super::error::ApiError::not_found(
            "not_found",
            "metrics are off ([metrics] enabled = false)",
        )
        .into_response();
    }
    let (subscribers, log_bytes) = state.hub.gauges();
    metrics.active_runs.set(gauge(state.hub.active_runs()));
    metrics.subscribers.set(gauge(subscribers));
    metrics.log_bytes.set(gauge(log_bytes));
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Measures one request (see the module's documentation).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let metrics = Arc::clone(state.hub.pipeline().metrics());
    if !metrics.enabled() {
        return next.run(request).await;
    }
    // Route templates only: a path with an id in it is not a label.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let streams = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|kind| kind.starts_with("text/event-stream"));
    // A stream's latency is its length; streams are counted where they are
    // written (`api::sse`).
    if !streams {
        let label = RequestLabel {
            route,
            method,
            status: response.status().as_u16().to_string(),
        };
        metrics.observe_in(&metrics.request_duration, label, started.elapsed());
    }
    response
}

/// Runs the request in its span (method, route, request id: every log line of the
/// request carries them) and logs its end, at `error` for a server error. What
/// tower-http's `TraceLayer` did, without wrapping the response body: that timed
/// every frame of every stream and entered the span for each (1.6 % of the
/// instructions of a paced stream's server, callgrind).
pub async fn trace(request: Request, next: Next) -> Response {
    let span = request_span(&request);
    let started = Instant::now();
    async move {
        tracing::debug!("started processing request");
        let response = next.run(request).await;
        let status = response.status();
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        if status.is_server_error() {
            tracing::error!(%status, latency_ms, "request failed");
        } else {
            tracing::debug!(%status, latency_ms, "finished processing request");
        }
        response
    }
    .instrument(span)
    .await
}

/// The span of a request: its method, route and id.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path(), |path| path.as_str());
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("request", method = %request.method(), route, request_id = id)
}
