//! The HTTP API: axum routes, thin handlers over the hub and the store, errors as
//! JSON, runs as SSE streams.
//!
//! Streaming routes carry no compression or timeout layer: either would turn a
//! stream into one buffered response.

mod chat;
mod conversations;
mod error;
pub mod native;
mod runs;
pub mod sse;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

pub use error::ApiError;

use crate::config::Config;
use crate::hub::Hub;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The runs.
    pub hub: Arc<Hub>,
    /// The conversations.
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Arc<Config>,
}

impl AppState {
    /// Keepalive and retry settings of streams.
    pub fn stream_settings(&self) -> sse::StreamSettings {
        sse::StreamSettings {
            keepalive: self.config.keepalive,
            retry: self.config.retry,
        }
    }
}

/// The router of the whole API.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/api/chat", post(chat::chat))
        .route("/api/runs/{run_id}", get(runs::get_run))
        .route("/api/runs/{run_id}/events", get(runs::run_events))
        .route("/api/runs/{run_id}/cancel", post(runs::cancel_run))
        .route("/api/conversations", get(conversations::list))
        .route(
            "/api/conversations/{id}",
            axum::routing::delete(conversations::delete),
        )
        .route(
            "/api/conversations/{id}/messages",
            get(conversations::messages),
        )
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "active_runs": state.hub.active_runs()}))
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
