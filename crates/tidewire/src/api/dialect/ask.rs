//! The ask pipeline front end (seed 001): `POST /api/ask/stream` with `{query}`.
//!
//! Its client parses every blank-line-separated block as exactly one `data: ` line
//! of JSON, so nothing else is written in an event's block: no `id:`, `event:` or
//! `retry:` line (keepalive comments go in blocks of their own). Events:
//! `{"type":"start","query","timestamp"}`, `{"type":"chunk","content"}`,
//! `{"type":"metadata","confidence","sources",...}`, `{"type":"complete","success"}`
//! and `{"type":"error","code","message","retryable"}`. The client treats the end
//! of the body as the end: the stream closes right after `complete`. A missing or
//! empty `query` is the in-stream error "Query required", as the application's own
//! server answers it. Stages and tool calls have no place here; the quality score is
//! the `confidence`, and follow-ups ride in the last `metadata`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Version};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use tidewire_protocol::{ChatEvent, MessageStatus, Source, Usage};

use super::{DialectRoute, frame, json_body, json_error, run_request, start, string_field};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::sse::sse_response;
use crate::auth::Caller;
use crate::hub::{EventEncoder, RunIdentity, WireFormat};
use crate::pipeline::ConversationRef;

/// The ask wire format, for one question (its `start` event repeats the query).
#[derive(Debug, Clone)]
pub struct Ask {
    /// The question, as asked.
    pub query: String,
}

impl WireFormat for Ask {
    fn name(&self) -> &'static str {
        "ask"
    }

    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder> {
        let created = std::time::UNIX_EPOCH + std::time::Duration::from_secs(run.created);
        Box::new(AskEncoder {
            query: self.query.clone(),
            timestamp: humantime::format_rfc3339_seconds(created).to_string(),
            run_id: run.run_id.clone(),
            message_id: run.message_id.clone(),
            sources: Vec::new(),
            confidence: None,
            follow_up_questions: Vec::new(),
        })
    }
}

struct AskEncoder {
    query: String,
    timestamp: String,
    run_id: String,
    message_id: String,
    sources: Vec<Source>,
    confidence: Option<f64>,
    follow_up_questions: Vec<String>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Out<'a> {
    Start {
        query: &'a str,
        timestamp: &'a str,
        run_id: &'a str,
    },
    Chunk {
        content: &'a str,
    },
    Metadata {
        confidence: Option<f64>,
        sources: &'a [Source],
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        follow_up_questions: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        run_id: &'a str,
        message_id: &'a str,
    },
    Complete {
        success: bool,
        status: MessageStatus,
    },
    Error {
        code: &'a str,
        message: &'a str,
        retryable: bool,
    },
}

impl EventEncoder for AskEncoder {
    fn encode(&mut self, _: u64, event: &ChatEvent, out: &mut Vec<u8>) {
        let data = match event {
            ChatEvent::Run(_) => Out::Start {
                query: &self.query,
                timestamp: &self.timestamp,
                run_id: &self.run_id,
            },
            ChatEvent::Token(token) => Out::Chunk {
                content: &token.token,
            },
            ChatEvent::Sources(sources) => {
                self.sources.clone_from(&sources.sources);
                self.metadata(None, None)
            }
            ChatEvent::QualityScore(score) => {
                self.confidence = Some(score.quality_score);
                return;
            }
            ChatEvent::FollowUpQuestions(questions) => {
                self.follow_up_questions
                    .clone_from(&questions.follow_up_questions);
                return;
            }
            ChatEvent::Metadata(metadata) => {
                self.metadata(Some(&metadata.model), Some(metadata.usage))
            }
            ChatEvent::Error(error) => Out::Error {
                code: &error.code,
                message: &error.error,
                retryable: error.retryable,
            },
            ChatEvent::Done(done) => Out::Complete {
                success: done.status == MessageStatus::Complete,
                status: done.status,
            },
            ChatEvent::Stage(_)
            | ChatEvent::ToolStarted(_)
            | ChatEvent::ToolFinished(_)
            | ChatEvent::ToolCall(_) => {
                return;
            }
        };
        frame(out, None, None, &data);
    }
}

impl AskEncoder {
    fn metadata<'a>(&'a self, model: Option<&'a str>, usage: Option<Usage>) -> Out<'a> {
        Out::Metadata {
            confidence: self.confidence,
            sources: &self.sources,
            follow_up_questions: &self.follow_up_questions,
            model,
            usage,
            run_id: &self.run_id,
            message_id: &self.message_id,
        }
    }
}

/// `POST /api/ask/stream`.
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
        let query = string_field(&body, "query")?.unwrap_or_default();
        if query.trim().is_empty() {
            return Ok(None);
        }
        let request = run_request(
            &state,
            &caller,
            query.clone(),
            ConversationRef::New,
            super::default_scope(),
        )?;
        Ok(Some((start(&state, request).await?, query)))
    };
    match started.await {
        Ok(Some((started, query))) => super::stream(
            &state,
            &route,
            version,
            &started,
            Arc::new(Ask { query }),
            false,
        ),
        Ok(None) => query_required(version),
        Err(error) => error_response(error),
    }
}

/// The application's own answer to a missing query: an in-stream error, then the
/// end.
fn query_required(version: Version) -> Response {
    let mut body = Vec::new();
    frame(
        &mut body,
        None,
        None,
        &Out::Error {
            code: "query_required",
            message: "Query required",
            retryable: false,
        },
    );
    sse_response(version, Body::from(body))
}

/// An error before the stream: its status (the client shows `HTTP <status>`), and a
/// JSON body for people.
pub fn error_response(error: ApiError) -> Response {
    json_error(
        &error,
        json!({"type": "error", "code": error.code, "message": error.message, "retryable": false}),
    )
}
