//! The runs API: status, attach (with `Last-Event-ID`), cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Version};
use axum::response::Response;
use serde::Deserialize;
use tidewire_protocol::api::RunView;

use super::AppState;
use super::error::ApiError;
use super::sse::{event_stream, sse_response};
use crate::hub::{CancelReason, Run, Subscription};

/// How long `POST .../cancel` waits for the run to store its partial answer.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// `?last_event_id=` of `GET /api/runs/{id}/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    last_event_id: Option<String>,
}

/// `GET /api/runs/{run_id}`.
pub async fn get_run(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RunView>, ApiError> {
    let run = find(&state, path).await?;
    Ok(Json(run.view()))
}

/// `GET /api/runs/{run_id}/events`: the events after `Last-Event-ID`, then live.
pub async fn run_events(
    State(state): State<AppState>,
    version: Version,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
    let after = last_event_id(&headers, query.last_event_id.as_deref())?;
    let run = find(&state, path).await?;
    let subscription = subscribe_after(&run, after)?;
    let body = Body::from_stream(event_stream(subscription, state.stream_settings()));
    Ok(sse_response(version, body))
}

/// `POST /api/runs/{run_id}/cancel`: stops the run and answers with its final state.
/// Cancelling a finished run changes nothing.
pub async fn cancel_run(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RunView>, ApiError> {
    let run = find(&state, path).await?;
    if !run.is_finished() {
        run.cancel(CancelReason::Requested);
        let finished = run.finished();
        if tokio::time::timeout(CANCEL_WAIT, finished).await.is_err() {
            tracing::warn!(
                run_id = run.id(),
                "run did not stop within {CANCEL_WAIT:?} of its cancel"
            );
        }
    }
    Ok(Json(run.view()))
}

/// The cursor a client asks for: the `Last-Event-ID` header (which an `EventSource`
/// sets when it reconnects, so it wins), else `?last_event_id=`, else the start.
pub fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Result<usize, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("\u{FFFD}"));
    let Some(text) = header.or(query) else {
        return Ok(0);
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_last_event_id",
            format!("Last-Event-ID must be an event id (a number), got {text:?}"),
        )
    })
}

/// A subscription after the first `after` events, refusing a cursor the run never
/// reached.
pub fn subscribe_after(run: &Arc<Run>, after: usize) -> Result<Subscription, ApiError> {
    let len = run.len();
    if after > len {
        let state = if run.is_finished() { "ended" } else { "is" };
        return Err(ApiError::bad_request(
            "last_event_id_out_of_range",
            format!(
                "Last-Event-ID {after} is beyond the end of the run, which {state} at event {len}"
            ),
        ));
    }
    Ok(run.subscribe(after))
}

async fn find(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
) -> Result<Arc<Run>, ApiError> {
    let Path(run_id) =
        path.map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))?;
    if let Some(run) = state.hub.get(&run_id) {
        return Ok(run);
    }
    match state.store.message_by_run(&run_id).await? {
        Some(message) => Err(ApiError::new(
            axum::http::StatusCode::GONE,
            "run_expired",
            format!(
                "run {run_id} ended more than {} ago and can no longer be attached; its answer is message {} of conversation {}",
                humantime::format_duration(state.config.retention),
                message.id,
                message.conversation_id
            ),
        )),
        None => Err(ApiError::not_found(
            "run_not_found",
            format!("run {run_id} does not exist"),
        )),
    }
}
