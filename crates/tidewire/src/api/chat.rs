//! `POST /api/chat`: validates the request, starts (or, with an `Idempotency-Key`,
//! re-attaches to) a run, and streams it or answers once it is finished.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use tidewire_protocol::api::{ChatRequest, ChatResponse};

use super::AppState;
use super::error::ApiError;
use super::runs::{last_event_id, subscribe_after};
use super::sse::{event_stream, sse_response};
use crate::hub::{IdempotencyKey, RunRequest};
use crate::llm::{Backend, GenerationRequest};
use crate::pipeline::{AnswerJob, HistoryLimits, build_prompt};

/// The longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// `POST /api/chat`.
pub async fn chat(
    State(state): State<AppState>,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = body.map_err(|rejection| {
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
    })?;
    let request = parse(&body)?;
    let valid = validate(&state, &request)?;
    let key = idempotency_key(&headers, &request)?;
    let resume_after = if key.is_some() {
        last_event_id(&headers, None)?
    } else {
        0
    };

    // The conversation so far goes with the question (a retried POST that attaches
    // to its run never generates, but reading is cheap and keeps this simple).
    let history = match &request.conversation_id {
        Some(id) => state.store.list_messages(id).await?.ok_or_else(|| {
            ApiError::not_found(
                "conversation_not_found",
                format!("conversation {id} does not exist"),
            )
        })?,
        None => Vec::new(),
    };
    let llm = &state.config.llm;
    let messages = build_prompt(
        llm.system_prompt.as_deref(),
        &history,
        &request.message,
        HistoryLimits {
            messages: llm.history_messages,
            chars: llm.history_chars,
        },
    );
    let backend = valid.backend;
    let run_request = RunRequest {
        conversation_id: request.conversation_id.clone(),
        message: request.message.clone(),
        job: Box::new(move |message_id: &str| AnswerJob {
            backend,
            request: GenerationRequest {
                messages,
                max_tokens: valid.max_tokens,
                tokens_per_second: valid.tokens_per_second,
            },
            message_id: message_id.to_owned(),
        }),
    };
    let (run, created) = state.hub.start(run_request, key).await?;
    if !created {
        tracing::debug!(run_id = run.id(), "retried POST attached to its run");
    }

    if request.stream == Some(false) {
        let subscription = run.subscribe(run.len());
        subscription.finished().await;
        let summary = run.summary();
        return Ok(Json(ChatResponse {
            run_id: run.id().to_owned(),
            conversation_id: run.conversation_id().to_owned(),
            message_id: run.message_id().to_owned(),
            status: summary.status,
            content: summary.content,
            sources: summary.sources,
            quality_score: summary.quality_score,
            follow_up_questions: summary.follow_up_questions,
            usage: summary.usage,
            error: summary.error,
        })
        .into_response());
    }
    let subscription = subscribe_after(&run, resume_after)?;
    let body = Body::from_stream(event_stream(subscription, state.stream_settings()));
    Ok(sse_response(version, body))
}

/// The body must be declared JSON.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
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
fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
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

/// Options after validation and defaults.
struct Valid {
    max_tokens: u32,
    tokens_per_second: f64,
    backend: Arc<dyn Backend>,
}

fn validate(state: &AppState, request: &ChatRequest) -> Result<Valid, ApiError> {
    let config = &state.config;
    if request.message.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "empty_message",
            "message must not be empty",
        ));
    }
    if request.message.len() > config.max_message_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_long",
            format!(
                "message is {} bytes; the limit is {} bytes",
                request.message.len(),
                config.max_message_bytes
            ),
        ));
    }
    let options = request.options.clone().unwrap_or_default();
    let max_tokens = options.max_tokens.unwrap_or(config.default_max_tokens);
    if max_tokens == 0 || max_tokens > config.max_tokens_limit {
        return Err(ApiError::unprocessable(
            "invalid_max_tokens",
            format!(
                "options.max_tokens must be from 1 to {}",
                config.max_tokens_limit
            ),
        ));
    }
    let tokens_per_second = options
        .tokens_per_second
        .unwrap_or(config.default_tokens_per_second);
    if !tokens_per_second.is_finite() || tokens_per_second < 0.0 {
        return Err(ApiError::unprocessable(
            "invalid_tokens_per_second",
            "options.tokens_per_second must be 0 (as fast as possible) or more",
        ));
    }
    let backend = state
        .backends
        .select(options.backend.as_deref())
        .map_err(|unknown| ApiError::unprocessable("unknown_backend", unknown.to_string()))?;
    Ok(Valid {
        max_tokens,
        tokens_per_second,
        backend,
    })
}

fn idempotency_key(
    headers: &HeaderMap,
    request: &ChatRequest,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| !key.is_empty() && key.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
        })?;
    // Whether the client streams or not does not change the run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    request.message.hash(&mut hasher);
    request.conversation_id.hash(&mut hasher);
    serde_json::to_string(&request.options)
        .unwrap_or_default()
        .hash(&mut hasher);
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        fingerprint: hasher.finish(),
    }))
}
