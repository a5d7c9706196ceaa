//! The chatbot API front end (seed 004): `POST /api/v1/chat/` (and without the
//! slash) with a Bearer token and `{conversation_id, message, stream}`.
//!
//! Unnamed `data: {json}` events: `{"type":"content","content"}`, then
//! `{"type":"metadata","message_id","conversation_id","usage",...}`, which its
//! clients treat as the end; `{"type":"error","error"}`. No `[DONE]`: its clients
//! parse every `data:` line as JSON. Its fetch client splits each network read on
//! newlines without buffering, so each event goes out whole in one write and every
//! character past ASCII is written as a `\uXXXX` escape (a read that splits a
//! multi-byte character would otherwise garble it). Its httpx example keeps a 5 s
//! read timeout, so keepalive here defaults to 4 s, from the first byte on. Its
//! clients do not check the HTTP status, so an error before the stream has the
//! right 4xx status and a body that is itself a one-event stream. `stream: false`
//! answers one JSON object. `id:` lines keep the native sequence numbers; the run's
//! id, sources, score and follow-ups ride in `metadata`. Stages and tool calls have
//! no place here.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Version};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tidewire_protocol::{ChatEvent, MessageStatus, Source, Usage};

use super::{DialectRoute, error_with_body, json_body, run_request, start, string_field};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::hub::{EventEncoder, RunIdentity, WireFormat};
use crate::pipeline::ConversationRef;

/// The chatbot API wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chatbot;

impl WireFormat for Chatbot {
    fn name(&self) -> &'static str {
        "chatbot"
    }

    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder> {
        Box::new(ChatbotEncoder {
            run_id: run.run_id.clone(),
            conversation_id: run.conversation_id.clone(),
            sources: Vec::new(),
            quality_score: None,
            follow_up_questions: Vec::new(),
            scratch: Vec::with_capacity(128),
        })
    }
}

struct ChatbotEncoder {
    run_id: String,
    conversation_id: String,
    sources: Vec<Source>,
    quality_score: Option<f64>,
    follow_up_questions: Vec<String>,
    scratch: Vec<u8>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Out<'a> {
    Content {
        content: &'a str,
    },
    Metadata {
        message_id: &'a str,
        conversation_id: &'a str,
        usage: Usage,
        model: &'a str,
        run_id: &'a str,
        sources: &'a [Source],
        #[serde(skip_serializing_if = "Option::is_none")]
        quality_score: Option<f64>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        follow_up_questions: &'a [String],
    },
    Error {
        error: &'a str,
        code: &'a str,
    },
}

impl EventEncoder for ChatbotEncoder {
    fn encode(&mut self, seq: u64, event: &ChatEvent, out: &mut Vec<u8>) {
        let data = match event {
            ChatEvent::Token(token) => Out::Content {
                content: &token.token,
            },
            ChatEvent::Sources(sources) => {
                self.sources.clone_from(&sources.sources);
                return;
            }
            ChatEvent::QualityScore(score) => {
                self.quality_score = Some(score.quality_score);
                return;
            }
            ChatEvent::FollowUpQuestions(questions) => {
                self.follow_up_questions
                    .clone_from(&questions.follow_up_questions);
                return;
            }
            ChatEvent::Metadata(metadata) => Out::Metadata {
                message_id: &metadata.message_id,
                conversation_id: &self.conversation_id,
                usage: metadata.usage,
                model: &metadata.model,
                run_id: &self.run_id,
                sources: &self.sources,
                quality_score: self.quality_score,
                follow_up_questions: &self.follow_up_questions,
            },
            ChatEvent::Error(error) => Out::Error {
                error: &error.error,
                code: &error.code,
            },
            ChatEvent::Run(_)
            | ChatEvent::Stage(_)
            | ChatEvent::ToolStarted(_)
            | ChatEvent::ToolFinished(_)
            | ChatEvent::ToolCall(_)
            | ChatEvent::Done(_) => return,
        };
        self.scratch.clear();
        // Serializing plain data into memory cannot fail.
        let _ = serde_json::to_writer(&mut self.scratch, &data);
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(seq.to_string().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        ascii_json(&self.scratch, out);
        out.extend_from_slice(b"\n\n");
    }
}

/// Copies JSON text to `out` with every character past ASCII as `\uXXXX` (UTF-16
/// code units, as JSON escapes are). Outside strings JSON is ASCII, so only string
/// contents change, and they mean the same.
fn ascii_json(json: &[u8], out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(json);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c as u8);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
            }
        }
    }
}

/// The answer of `stream: false`.
#[derive(Serialize)]
struct Whole {
    message_id: String,
    conversation_id: String,
    run_id: String,
    content: String,
    status: MessageStatus,
    usage: Option<Usage>,
    model: Option<String>,
    sources: Vec<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quality_score: Option<f64>,
    follow_up_questions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `POST /api/v1/chat/`.
pub async fn handle(
    State(state): State<AppState>,
    route: Arc<DialectRoute>,
    caller: Caller,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = async {
        let body = json_body(&state, &headers, body)?;
        let message = string_field(&body, "message")?.unwrap_or_default();
        let stream = match body.get("stream") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(stream)) => *stream,
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "invalid_request",
                    "stream must be true or false",
                ));
            }
        };
        let conversation = match string_field(&body, "conversation_id")? {
            Some(id) => ConversationRef::Named(id),
            None => ConversationRef::New,
        };
        let request = run_request(
            &state,
            &caller,
            message,
            conversation,
            super::default_scope(),
        )?;
        Ok((start(&state, request).await?, stream))
    };
    match started.await {
        Ok((started, true)) => {
            super::stream(&state, &route, version, &started, Arc::new(Chatbot), false)
        }
        Ok((started, false)) => {
            let run = &started.run;
            run.finished().await;
            let answer = run.answer();
            Json(Whole {
                message_id: run.message_id().to_owned(),
                conversation_id: run.conversation_id().to_owned(),
                run_id: run.id().to_owned(),
                content: answer.content,
                status: answer.status,
                usage: answer.usage,
                model: answer.model,
                sources: answer.sources,
                quality_score: answer.quality_score,
                follow_up_questions: answer.follow_up_questions,
                error: answer.error.map(|e| e.error),
            })
            .into_response()
        }
        Err(error) => error_response(error),
    }
}

/// A request refused before the handler (unauthenticated, over a limit), the way
/// its clients read errors: a one-event stream with the right status.
pub fn refused(refusal: crate::api::Refusal) -> Response {
    refusal.challenge(error_response(refusal.api_error()))
}

/// An error before the stream: its status, and a body that is itself a one-event
/// stream, which these clients read whatever the status.
pub fn error_response(error: ApiError) -> Response {
    let data = json!({"type": "error", "error": error.message, "code": error.code});
    let mut body = b"data: ".to_vec();
    ascii_json(data.to_string().as_bytes(), &mut body);
    body.extend_from_slice(b"\n\n");
    error_with_body(&error, "text/event-stream", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_becomes_escapes_that_mean_the_same() {
        let json = serde_json::to_vec(&json!({"content": "é → 😀"})).unwrap();
        let mut out = Vec::new();
        ascii_json(&json, &mut out);
        assert!(out.is_ascii());
        let back: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back["content"], "é → 😀");
    }
}
