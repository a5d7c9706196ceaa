//! `POST /api/chat`: parse, validate, start (or, with an `Idempotency-Key`,
//! re-attach to) a run, then render it as a stream or as one answer.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
#[allow(unused_imports)]
use tidewire_protocol::api::ErrorBody;
use tidewire_protocol::api::{ChatRequest, ChatResponse};

use super::error::ApiError;
use super::runs::{last_event_id, subscribe_after};
use super::sse::{event_body, sse_response};
use super::{AppState, Asker};
use crate::auth::Caller;
use crate::pipeline::{ConversationRef, RunRequest};
use crate::retrieval::{DEFAULT_COLLECTION, Scope};

/// The longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

#[utoipa::path(
    post, path = "/api/chat", tag = "chat",
    request_body = ChatRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and request give the same run")),
    responses(
        (status = 200, description = "The run's events as a stream (`text/event-stream`, see the `ChatEvent` schema for each event's data), or, with `stream: false`, the whole answer", content(
            (crate::api::openapi::WireEvent = "text/event-stream"),
            (ChatResponse = "application/json"),
        )),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid option", body = ErrorBody),
        (status = 429, description = "Over a per-user limit", body = ErrorBody),
        (status = 503, description = "At capacity or shutting down", body = ErrorBody),
    )
)]
/// `POST /api/chat`.
pub async fn chat(
    State(state): State<AppState>,
    Asker(caller): Asker,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = read_body(&state, body)?;
    let request: ChatRequest = parse(&body)?;
    let stream = request.stream != Some(false);
    let run_request = validate(&state, request, caller)?;
    let key = idempotency_key(&headers)?;
    let resume_after = if key.is_some() {
        last_event_id(&headers, None)?
    } else {
        0
    };
    let started = state.hub.start(run_request, key).await?;
    let run = started.run;
    if !started.created {
        tracing::debug!(run_id = run.id(), "retried POST attached to its run");
    }

    if !stream {
        run.finished().await;
        let answer = run.answer();
        return Ok(Json(ChatResponse {
            run_id: run.id().to_owned(),
            conversation_id: run.conversation_id().to_owned(),
            message_id: run.message_id().to_owned(),
            status: answer.status,
            content: answer.content,
            sources: answer.sources,
            quality_score: answer.quality_score,
            follow_up_questions: answer.follow_up_questions,
            tool_calls: answer.tool_calls,
            usage: answer.usage,
            error: answer.error,
        })
        .into_response());
    }
    let subscription = subscribe_after(&run, resume_after, state.native()).await?;
    let body = event_body(subscription, state.stream_settings());
    Ok(sse_response(version, body))
}

/// The body, or the error of a body that could not be read.
pub fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body is over the limit of {} bytes",
                    state.config.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

/// The body must be declared JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected Content-Type: application/json, got {content_type:?}"),
        ))
    }
}

/// Malformed JSON is a 400; JSON of the wrong shape is a 422.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde would read a struct from an array too; only an object is a request.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => {
                    ApiError::unprocessable("invalid_request", "the body must be a JSON object")
                }
                Err(error) => ApiError::bad_request(
                    "invalid_json",
                    format!("the body is not valid JSON: {error}"),
                ),
            },
        );
    }
    serde_json::from_slice(body).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable("invalid_request", error.to_string())
        }
        _ => ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {error}"),
        ),
    })
}

/// Checks the message and the options, and turns the body into a run request.
fn validate(
    state: &AppState,
    request: ChatRequest,
    caller: Caller,
) -> Result<RunRequest, ApiError> {
    check_message(state, &request.message)?;
    let given = request.options.unwrap_or_default();
    let options = state
        .hub
        .pipeline()
        .options(&given)
        .map_err(|invalid| ApiError::unprocessable(invalid.code, invalid.message))?;
    Ok(RunRequest {
        conversation: request
            .conversation_id
            .map_or(ConversationRef::New, ConversationRef::Existing),
        message: request.message,
        scope: Scope {
            collection: given
                .collection
                .unwrap_or_else(|| DEFAULT_COLLECTION.to_owned()),
            documents: given.documents,
        },
        options,
        attributes: None,
        user: caller.user_id,
    })
}

/// A message must have text and fit the limit: 422, or 413, on every route.
pub fn check_message(state: &AppState, message: &str) -> Result<(), ApiError> {
    if message.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "empty_message",
            "the message must not be empty",
        ));
    }
    let limit = state.config.max_message_bytes;
    if message.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_long",
            format!(
                "the message is {} bytes; the limit is {limit} bytes",
                message.len()
            ),
        ));
    }
    Ok(())
}

/// The `Idempotency-Key` header, if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|key| !key.is_empty() && key.len() <= MAX_KEY_LEN)
        .map(|key| Some(key.to_owned()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
        })
}
