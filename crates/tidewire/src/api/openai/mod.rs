//! The OpenAI wire format, so the official `openai` SDKs (and anything built on
//! them) talk to tidewire by changing their base URL to `http://HOST/v1`.
//!
//! | route | module |
//! |---|---|
//! | `POST /v1/chat/completions` | [`chat`] |
//! | `POST /v1/responses`, `GET /v1/responses/{id}`, `POST /v1/responses/{id}/cancel` | [`responses`] |
//! | `GET /v1/models` | here |
//!
//! An answer is a run like any other: stored, with its run id in the
//! `x-tidewire-run-id` header, so it can be followed or cancelled through the
//! native API. Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`,
//! and a request's mistakes are 400s, as OpenAI answers them.

pub mod chat;
pub mod responses;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::hub::Run;
use crate::llm::{PromptRole, Sampling};
use crate::pipeline::RunOptions;
use tidewire_protocol::api::ChatOptions;

/// An error in OpenAI's shape, with the parameter at fault when there is one.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    /// The error as tidewire words it.
    pub error: ApiError,
    /// The request field at fault.
    pub param: Option<&'static str>,
}

impl OpenAiError {
    /// 400 about `param`.
    pub fn invalid(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            error: ApiError::bad_request(code, message),
            param: Some(param),
        }
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self { error, param: None }
    }
}

/// The `error` object of OpenAI's error bodies and of an error in a stream.
#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    /// What happened.
    pub message: &'a str,
    /// OpenAI's error class.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<&'a str>,
    /// tidewire's code.
    pub code: &'a str,
}

/// OpenAI's error class of an HTTP status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut error = self.error;
        // OpenAI answers a well-formed request with bad values with 400, and so
        // do its clients' tests; tidewire's 422 means the same.
        if error.status == StatusCode::UNPROCESSABLE_ENTITY {
            error.status = StatusCode::BAD_REQUEST;
        }
        let body = json!({"error": ErrorObject {
            message: &error.message,
            kind: error_type(error.status),
            param: self.param,
            code: error.code,
        }});
        super::dialect::json_error(&error, body)
    }
}

/// A model must be a configured backend: 404 `model_not_found` naming those there are.
pub fn check_model(state: &AppState, model: &str) -> Result<(), OpenAiError> {
    let backends = state.hub.pipeline().backends();
    if backends.names().any(|name| name == model) {
        return Ok(());
    }
    Err(OpenAiError {
        error: ApiError::not_found(
            "model_not_found",
            format!(
                "the model {model:?} does not exist; GET /v1/models lists the models: {}",
                backends.names().collect::<Vec<_>>().join(", ")
            ),
        ),
        param: Some("model"),
    })
}

/// `value` when it is within `low..=high`; a 400 about `param` otherwise.
pub fn within(
    param: &'static str,
    value: Option<f64>,
    low: f64,
    high: f64,
) -> Result<Option<f64>, OpenAiError> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(OpenAiError::invalid(
            param,
            "invalid_value",
            format!("{param} must be from {low} to {high}"),
        )),
        _ => Ok(value),
    }
}

/// The run options of an OpenAI request: `model`'s backend, the token limit
/// (named `max_tokens_param` in errors, as the request calls it) and `sampling`.
pub fn run_options(
    state: &AppState,
    model: &str,
    max_tokens: Option<u32>,
    max_tokens_param: &'static str,
    sampling: Sampling,
) -> Result<RunOptions, OpenAiError> {
    let given = ChatOptions {
        max_tokens,
        backend: Some(model.to_owned()),
        // Server tools only where the configuration says so.
        tools: (!state.config.openai.server_tools).then(Vec::new),
        ..ChatOptions::default()
    };
    let mut options = state
        .hub
        .pipeline()
        .options(&given)
        .map_err(|invalid| OpenAiError {
            param: (invalid.code == "invalid_max_tokens").then_some(max_tokens_param),
            error: ApiError::unprocessable(invalid.code, invalid.message),
        })?;
    options.sampling = sampling;
    Ok(options)
}

/// The role of an input message (`at` names it in errors).
pub fn prompt_role(role: &str, param: &'static str, at: &str) -> Result<PromptRole, OpenAiError> {
    match role {
        "system" | "developer" => Ok(PromptRole::System),
        "user" => Ok(PromptRole::User),
        "assistant" => Ok(PromptRole::Assistant),
        "tool" | "function" => Err(OpenAiError::invalid(
            param,
            "unsupported_parameter",
            format!("{at}: tool results are not supported by tidewire"),
        )),
        other => Err(OpenAiError::invalid(
            param,
            "invalid_messages",
            format!("{at}.role {other:?} is not one of system, developer, user, assistant"),
        )),
    }
}

/// Adds the run's ids as headers, so a client can reach it through the native API.
pub fn with_run_headers(mut response: Response, run: &Run) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-tidewire-run-id", run.id()),
        ("x-tidewire-conversation-id", run.conversation_id()),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

/// `GET /v1/models`: the configured backends, each a model a request may name.
pub async fn models(
    State(state): State<AppState>,
    _caller: crate::auth::Caller,
) -> Json<serde_json::Value> {
    let data: Vec<_> = state
        .hub
        .pipeline()
        .backends()
        .names()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "tidewire"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}
