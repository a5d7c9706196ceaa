//! The runs API: status, attach (with `Last-Event-ID`), cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
#[allow(unused_imports)]
use tidewire_protocol::api::ErrorBody;
use tidewire_protocol::api::RunView;

use super::error::ApiError;
use super::native::events_url;
use super::sse::{event_body, sse_response};
use super::{AppState, Refusal};
use crate::auth::{AuthError, Caller};
use crate::hub::{CancelReason, LogError, Run, Subscription, WireFormat};

/// How long `POST .../cancel` waits for the run to store its partial answer.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// How long a cursor ahead of a mirrored run waits for the shared log to reach it.
const AHEAD_WAIT: Duration = Duration::from_secs(5);

/// `?last_event_id=` and `?access_token=` of `GET /api/runs/{id}/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    last_event_id: Option<String>,
    access_token: Option<String>,
}

#[utoipa::path(
    get, path = "/api/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run's state", body = RunView),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
/// `GET /api/runs/{run_id}`.
pub async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RunView>, ApiError> {
    let run = find(&state, path, &caller.user_id).await?;
    Ok(Json(view(&run)))
}

/// The run as `GET /api/runs/{id}` shows it.
pub fn view(run: &Run) -> RunView {
    let answer = run.answer();
    RunView {
        run_id: run.id().to_owned(),
        conversation_id: run.conversation_id().to_owned(),
        message_id: run.message_id().to_owned(),
        status: answer.status,
        last_event_id: run.len() as u64,
        events_url: events_url(run.id()),
        content: answer.content,
        subscribers: run.subscribers(),
    }
}

#[utoipa::path(
    get, path = "/api/runs/{run_id}/events", tag = "runs",
    params(
        ("run_id" = String, Path, description = "The run's id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Only the events after this one"),
        ("last_event_id" = Option<String>, Query, description = "The same, for clients that cannot set headers"),
        ("access_token" = Option<String>, Query, description = "The token of the run's `events_url`"),
    ),
    responses(
        (status = 200, description = "The run's events after `Last-Event-ID`, then live until `done` (`text/event-stream`; see `ChatEvent`)", content((crate::api::openapi::WireEvent = "text/event-stream"))),
        (status = 204, description = "Nothing after `Last-Event-ID`: the run is finished"),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
/// `GET /api/runs/{run_id}/events`: the events after `Last-Event-ID`, then live.
/// A client that already has the last event of a finished run gets 204 No Content,
/// which tells a browser's `EventSource` to stop reconnecting.
pub async fn run_events(
    State(state): State<AppState>,
    caller: Result<Caller, Refusal>,
    version: Version,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, Response> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request("invalid_query", rejection.body_text()).into_response()
    })?;
    let after = last_event_id(&headers, query.last_event_id.as_deref())
        .map_err(IntoResponse::into_response)?;
    // The token of the run's `events_url` opens that run, for an `EventSource`
    // that cannot send headers; without one, the caller must own the run.
    let run = match (&query.access_token, caller) {
        (Some(token), _) => {
            let Path(run_id) = path.map_err(|rejection| {
                ApiError::bad_request("invalid_path", rejection.body_text()).into_response()
            })?;
            match lookup(&state, &run_id)
                .await
                .map_err(IntoResponse::into_response)?
            {
                Some(run)
                    if state
                        .auth
                        .streams
                        .check(token, &run_id, &run.identity().user_id) =>
                {
                    run
                }
                _ => {
                    return Err(Refusal::Unauthenticated(AuthError::Invalid(
                        "this events_url token is not valid for this run, or has expired".into(),
                    ))
                    .into_response());
                }
            }
        }
        (None, Ok(caller)) => find(&state, path, &caller.user_id)
            .await
            .map_err(IntoResponse::into_response)?,
        (None, Err(refusal)) => return Err(refusal.into_response()),
    };
    if after > 0 && after == run.len() && run.is_finished() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let subscription = subscribe_after(&run, after, state.native())
        .await
        .map_err(IntoResponse::into_response)?;
    let body = event_body(subscription, state.stream_settings());
    Ok(sse_response(version, body))
}

#[utoipa::path(
    post, path = "/api/runs/{run_id}/cancel", tag = "runs",
    params(("run_id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "Cancelled (or already finished): the run's state", body = RunView),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
/// `POST /api/runs/{run_id}/cancel`: stops the run and answers with its final state.
/// Cancelling a finished run changes nothing.
pub async fn cancel_run(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RunView>, ApiError> {
    let run = find(&state, path, &caller.user_id).await?;
    if !run.is_finished() {
        state
            .hub
            .cancel(&run, CancelReason::Requested)
            .await
            .map_err(log_unavailable)?;
        let finished = run.finished();
        if tokio::time::timeout(CANCEL_WAIT, finished).await.is_err() {
            tracing::warn!(
                run_id = run.id(),
                "run did not stop within {CANCEL_WAIT:?} of its cancel"
            );
        }
    }
    Ok(Json(view(&run)))
}

/// A run held here or, among nodes, by another node.
pub async fn lookup(state: &AppState, run_id: &str) -> Result<Option<Arc<Run>>, ApiError> {
    state.hub.find(run_id).await.map_err(log_unavailable)
}

/// The answer when the shared run log cannot be reached.
pub fn log_unavailable(error: LogError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "run_log_unavailable",
        format!("the shared run log cannot be reached ({error}); try again shortly"),
    )
    .retry_after(2)
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
pub async fn subscribe_after(
    run: &Arc<Run>,
    after: usize,
    format: Arc<dyn WireFormat>,
) -> Result<Subscription, ApiError> {
    if run.is_remote() && after > run.len() {
        // The client comes from a node that has seen more of this run than this
        // one yet: wait for the log to catch up rather than refuse the cursor.
        let _ = tokio::time::timeout(AHEAD_WAIT, run.reached(after)).await;
    }
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
    Ok(run.subscribe(after, format))
}

/// The run of `user_id` at `path`: another user's run is not found, exactly as
/// a run that never was.
async fn find(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
    user_id: &str,
) -> Result<Arc<Run>, ApiError> {
    let Path(run_id) =
        path.map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))?;
    if let Some(run) = lookup(state, &run_id).await?
        && run.identity().user_id == user_id
    {
        return Ok(run);
    }
    match state.store.message_by_run(&run_id, user_id).await? {
        Some(message) => Err(ApiError::new(
            StatusCode::GONE,
            "run_expired",
            format!(
                "run {run_id} ended {} ago ({}) and is no longer held in memory: finished runs \
                 are kept for {} (the oldest go sooner when the memory limits are reached), \
                 and not across restarts; its answer ({}) is message {} of conversation {}",
                humantime::format_duration(Duration::from_secs(
                    message.updated_at.elapsed().as_secs()
                )),
                message.updated_at.rfc3339(),
                humantime::format_duration(state.config.retention),
                message.status,
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
