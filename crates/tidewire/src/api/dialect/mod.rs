//! Dialects: the wire contracts of existing front ends, spoken over tidewire's runs.
//!
//! Each dialect owns, for its route, how the request body becomes a run request,
//! how each [`ChatEvent`](tidewire_protocol::ChatEvent) is rendered (or left out),
//! how an error before the stream is answered, what ends the stream, the keepalive
//! period, whether `id:` lines are written, and what a client disconnect means. The
//! hub, the pipeline and the store do not know dialects exist: a dialect is a
//! [`WireFormat`] plus a thin handler.
//!
//! | module | application (seed) | default route |
//! |---|---|---|
//! | [`rag`] | RAG chat (000) | `POST /api/chat/stream`, body with `message` |
//! | [`canvas`] | canvas agent chat (003) | `POST /api/chat/stream`, body with `user_message` |
//! | [`ask`] | ask pipeline (001) | `POST /api/ask/stream` |
//! | [`portfolio`] | portfolio assistant (002) | `POST /api/v1/chat/send` |
//! | [`chatbot`] | chatbot API (004) | `POST /api/v1/chat/` |
//! | [`ui`] | Vercel AI SDK `useChat` | `POST /api/ui/chat`, `GET /api/ui/chat/{id}/stream` |

pub mod ask;
pub mod canvas;
pub mod chatbot;
pub mod portfolio;
pub mod rag;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Version};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::chat::require_json;
use super::error::ApiError;
use super::sse::{StreamSettings, event_body, sse_response};
use crate::auth::Caller;
use crate::hub::{Started, WireFormat};
use crate::pipeline::{ConversationRef, RunRequest};
use crate::retrieval::{DEFAULT_COLLECTION, Scope};

/// The scope of the dialects whose clients name no collection.
pub fn default_scope() -> Scope {
    Scope::collection(DEFAULT_COLLECTION)
}

/// The longest conversation id a client may choose.
const MAX_CONVERSATION_ID: usize = 255;

/// Where a dialect is mounted and how its streams behave.
#[derive(Debug, Clone, PartialEq)]
pub struct DialectRoute {
    /// The path it answers on.
    pub path: String,
    /// Keepalive period on its streams (the configured default when `None`).
    pub keepalive: Option<Duration>,
    /// A client that goes away cancels its run after this long (these clients
    /// cannot resume); `None` lets runs finish.
    pub cancel_on_disconnect: Option<Duration>,
}

/// Appends one event block: `id:` and `event:` lines when given, then one `data:`
/// line of compact JSON, then the blank line.
pub fn frame(out: &mut Vec<u8>, id: Option<u64>, event: Option<&str>, data: &impl Serialize) {
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(itoa(id).as_bytes());
        out.push(b'\n');
    }
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    // Serializing plain data into memory cannot fail, and JSON escapes every line
    // break, so the data stays on one line.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

fn itoa(n: u64) -> String {
    n.to_string()
}

/// Reads a dialect's JSON body: declared JSON, within the size limit, valid JSON
/// (of any type: see [`string_field`]).
pub fn json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Value, ApiError> {
    require_json(headers)?;
    let body = super::chat::read_body(state, body)?;
    serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {error}"),
        )
    })
}

/// A string field of a JSON object: `Ok(None)` when absent or null, an error when
/// it has another type or the body is not an object.
pub fn string_field(body: &Value, name: &str) -> Result<Option<String>, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "the body must be a JSON object",
        ));
    };
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::unprocessable(
            "invalid_request",
            format!("{name} must be a string"),
        )),
    }
}

/// Checks a message, then makes the run request of a dialect's body, with the
/// default options.
pub fn run_request(
    state: &AppState,
    caller: &Caller,
    message: String,
    conversation: ConversationRef,
    scope: Scope,
) -> Result<RunRequest, ApiError> {
    super::chat::check_message(state, &message)?;
    if let ConversationRef::Named(id) | ConversationRef::Existing(id) = &conversation
        && (id.is_empty() || id.len() > MAX_CONVERSATION_ID)
    {
        return Err(ApiError::unprocessable(
            "invalid_conversation_id",
            format!("a conversation id must be 1 to {MAX_CONVERSATION_ID} bytes"),
        ));
    }
    let options = state
        .hub
        .pipeline()
        .options(&Default::default())
        .map_err(|invalid| ApiError::unprocessable(invalid.code, invalid.message))?;
    Ok(RunRequest {
        conversation,
        message,
        scope,
        options,
        attributes: None,
        user: caller.user_id.clone(),
    })
}

/// Starts a run.
pub async fn start(state: &AppState, request: RunRequest) -> Result<Started, ApiError> {
    Ok(state.hub.start(request, None).await?)
}

/// The response that streams a started run in `format`, from its first event.
pub fn stream(
    state: &AppState,
    route: &DialectRoute,
    version: Version,
    started: &Started,
    format: Arc<dyn WireFormat>,
    retry: bool,
) -> Response {
    let subscription = started.run.subscribe(0, format);
    let settings = StreamSettings {
        keepalive: route.keepalive.unwrap_or(state.config.keepalive),
        retry: retry.then_some(state.config.retry),
        cancel_on_disconnect: route.cancel_on_disconnect,
    };
    sse_response(version, event_body(subscription, settings))
}

/// `error`'s status (and `Retry-After`) with a body in a dialect's own shape.
pub fn error_with_body(error: &ApiError, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = error.status;
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    if let Some(seconds) = error.retry_after {
        headers.insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(seconds),
        );
    }
    response
}

/// `error`'s status with a JSON body in a dialect's own shape.
pub fn json_error(error: &ApiError, body: Value) -> Response {
    error_with_body(error, "application/json", body.to_string().into_bytes())
}

/// The ids a client that cannot resume may still use: where to follow the run
/// through the native API.
#[derive(Debug, Serialize)]
pub struct RunLink<'a> {
    /// The run.
    pub run_id: &'a str,
    /// Its native events URL.
    pub events_url: String,
}

impl<'a> RunLink<'a> {
    /// The link of `run_id`.
    pub fn new(run_id: &'a str) -> Self {
        Self {
            run_id,
            events_url: super::native::events_url(run_id),
        }
    }
}

/// `POST` on the path the RAG chat (000) and canvas (003) front ends share: the
/// body tells them apart (`user_message` is the canvas', `message` the RAG chat's).
pub async fn shared_chat_stream(
    axum::extract::State(state): axum::extract::State<AppState>,
    routes: Arc<(DialectRoute, DialectRoute)>,
    caller: Caller,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (rag_route, canvas_route) = routes.as_ref();
    let body = match json_body(&state, &headers, body) {
        Ok(body) => body,
        Err(error) => return neither(error),
    };
    if body.get("user_message").is_some() {
        canvas::respond(&state, canvas_route, &caller, version, &body).await
    } else if body.get("message").is_some() {
        rag::respond(&state, rag_route, &caller, version, &body).await
    } else {
        neither(ApiError::unprocessable(
            "unknown_body",
            "the body must be a JSON object with `message` (RAG chat) or `user_message` \
             (canvas chat)",
        ))
    }
}

/// An error on the shared path, readable by both clients: the status for one,
/// `{message}` for the other.
fn neither(error: ApiError) -> Response {
    json_error(
        &error,
        serde_json::json!({"message": error.message, "error": error.message, "code": error.code}),
    )
}
