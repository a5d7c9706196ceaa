//! The portfolio assistant front end (seed 002): `POST /api/v1/chat/send` with a
//! Bearer token and `{conversation_id, text}`, which its client sends
//! double-encoded (a JSON string holding the JSON object) and also as a request
//! header named `body`.
//!
//! Its client reads lines, keeps the last `event:` name and parses each `data:`
//! line as JSON for it, so every event has an `event:` line and one `data:` line:
//! `start`, `message` `{delta, role}`, `tool_started` `{tool_name, ...}`,
//! `tool_finished` `{tool_name, duration_ms, result}`, `done` and `error`
//! `{message}`. `id:` lines keep the native sequence numbers; the run's id travels
//! in `start`, the usage and model in `done`. Stages, sources, scores and follow-ups
//! have no place in this client and are left out. HTTP errors are `{detail}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Version};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use tidewire_protocol::{ChatEvent, Usage};

use super::{
    DialectRoute, RunLink, frame, json_body, json_error, run_request, start, string_field,
};
use crate::api::AppState;
use crate::api::chat::parse;
use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::hub::{EventEncoder, RunIdentity, WireFormat};
use crate::pipeline::ConversationRef;

/// The portfolio assistant wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Portfolio;

impl WireFormat for Portfolio {
    fn name(&self) -> &'static str {
        "portfolio"
    }

    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder> {
        Box::new(PortfolioEncoder {
            message_id: run.message_id.clone(),
            tool_calls: 0,
            model: None,
            usage: None,
        })
    }
}

struct PortfolioEncoder {
    message_id: String,
    tool_calls: u64,
    model: Option<String>,
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Start<'a> {
    conversation_id: &'a str,
    message_id: &'a str,
    mode: &'static str,
    #[serde(flatten)]
    link: RunLink<'a>,
}

#[derive(Serialize)]
struct Delta<'a> {
    delta: &'a str,
    role: &'static str,
}

#[derive(Serialize)]
struct Done<'a> {
    status: &'a str,
    message_id: &'a str,
    tool_calls_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Error<'a> {
    message: &'a str,
    code: &'a str,
    retryable: bool,
}

impl EventEncoder for PortfolioEncoder {
    fn encode(&mut self, seq: u64, event: &ChatEvent, out: &mut Vec<u8>) {
        let id = Some(seq);
        match event {
            ChatEvent::Run(run) => {
                let start = Start {
                    conversation_id: &run.conversation_id,
                    message_id: &run.message_id,
                    mode: "chat",
                    link: RunLink::new(&run.run_id),
                };
                frame(out, id, Some("start"), &start);
            }
            ChatEvent::Token(token) => {
                let delta = Delta {
                    delta: &token.token,
                    role: "assistant",
                };
                frame(out, id, Some("message"), &delta);
            }
            ChatEvent::ToolStarted(call) => {
                self.tool_calls += 1;
                frame(out, id, Some("tool_started"), call);
            }
            ChatEvent::ToolFinished(call) => frame(out, id, Some("tool_finished"), call),
            ChatEvent::Metadata(metadata) => {
                self.model = Some(metadata.model.clone());
                self.usage = Some(metadata.usage);
            }
            ChatEvent::Error(error) => {
                let error = Error {
                    message: &error.error,
                    code: &error.code,
                    retryable: error.retryable,
                };
                frame(out, id, Some("error"), &error);
            }
            ChatEvent::Done(done) => {
                let done = Done {
                    status: done.status.as_str(),
                    message_id: &self.message_id,
                    tool_calls_count: self.tool_calls,
                    model: self.model.as_deref(),
                    usage: self.usage,
                };
                frame(out, id, Some("done"), &done);
            }
            ChatEvent::Stage(_)
            | ChatEvent::Sources(_)
            | ChatEvent::QualityScore(_)
            | ChatEvent::FollowUpQuestions(_)
            | ChatEvent::ToolCall(_) => {}
        }
    }
}

/// `POST /api/v1/chat/send`.
pub async fn handle(
    State(state): State<AppState>,
    route: Arc<DialectRoute>,
    caller: Caller,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = async {
        let mut body = json_body(&state, &headers, body)?;
        // Its client sends `JSON.stringify` of an already stringified object.
        if let Value::String(inner) = &body {
            body = parse::<Value>(inner.as_bytes())?;
        }
        let text = string_field(&body, "text")?.unwrap_or_default();
        let conversation = match string_field(&body, "conversation_id")? {
            Some(id) => ConversationRef::Named(id),
            None => ConversationRef::New,
        };
        let request = run_request(&state, &caller, text, conversation, super::default_scope())?;
        start(&state, request).await
    };
    match started.await {
        Ok(started) => super::stream(&state, &route, version, &started, Arc::new(Portfolio), true),
        Err(error) => error_response(error),
    }
}

/// An error as its client reads it: the status, and `{detail}`.
pub fn error_response(error: ApiError) -> Response {
    json_error(&error, json!({"detail": error.message, "code": error.code}))
}
