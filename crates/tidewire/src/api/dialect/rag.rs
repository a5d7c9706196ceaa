//! The RAG chat front end (seed 000): `POST /api/chat/stream` with
//! `{message, session_id?, conversation_id?}`.
//!
//! Its client splits on blank lines, reads `data: ` lines and routes each JSON
//! object by its top-level key, so every event carries exactly one of `stage`,
//! `sources`, `token`, `quality_score`, `follow_up_questions`, `metadata` (an
//! object) or `error` (a string). The stream ends with `data: [DONE]`. `id:` lines
//! (ignored by the client) keep the native sequence numbers, and the `run` event
//! becomes a `metadata` object with the run's id and events URL, so the run can be
//! resumed through the native API. Tool calls have no place in this client and are
//! left out. An HTTP error body is `{message}`, which its client shows.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Version};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use tidewire_protocol::{ChatEvent, Metadata, Source};

use super::{
    DialectRoute, RunLink, frame, json_body, json_error, run_request, start, string_field,
};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::hub::{EventEncoder, RunIdentity, WireFormat};
use crate::pipeline::ConversationRef;

/// The RAG chat wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rag;

impl WireFormat for Rag {
    fn name(&self) -> &'static str {
        "rag"
    }

    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder> {
        Box::new(RagEncoder {
            run_id: run.run_id.clone(),
        })
    }
}

struct RagEncoder {
    run_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Out<'a> {
    Stage(&'a str),
    Sources(&'a [Source]),
    Token(&'a str),
    QualityScore(f64),
    FollowUpQuestions(&'a [String]),
    Metadata(MetadataOut<'a>),
    Error(&'a str),
}

#[derive(Serialize)]
#[serde(untagged)]
enum MetadataOut<'a> {
    Run {
        #[serde(flatten)]
        link: RunLink<'a>,
        conversation_id: &'a str,
        message_id: &'a str,
    },
    Answer {
        run_id: &'a str,
        #[serde(flatten)]
        metadata: &'a Metadata,
    },
}

impl EventEncoder for RagEncoder {
    fn encode(&mut self, seq: u64, event: &ChatEvent, out: &mut Vec<u8>) {
        let data = match event {
            ChatEvent::Run(run) => Out::Metadata(MetadataOut::Run {
                link: RunLink::new(&run.run_id),
                conversation_id: &run.conversation_id,
                message_id: &run.message_id,
            }),
            ChatEvent::Stage(stage) => Out::Stage(&stage.stage),
            ChatEvent::Sources(sources) => Out::Sources(&sources.sources),
            ChatEvent::Token(token) => Out::Token(&token.token),
            ChatEvent::QualityScore(score) => Out::QualityScore(score.quality_score),
            ChatEvent::FollowUpQuestions(questions) => {
                Out::FollowUpQuestions(&questions.follow_up_questions)
            }
            ChatEvent::Metadata(metadata) => Out::Metadata(MetadataOut::Answer {
                run_id: &self.run_id,
                metadata,
            }),
            ChatEvent::Error(error) => Out::Error(&error.error),
            ChatEvent::Done(_) => {
                out.extend_from_slice(b"id: ");
                out.extend_from_slice(seq.to_string().as_bytes());
                out.extend_from_slice(b"\ndata: [DONE]\n\n");
                return;
            }
            ChatEvent::ToolStarted(_) | ChatEvent::ToolFinished(_) | ChatEvent::ToolCall(_) => {
                return;
            }
        };
        frame(out, Some(seq), None, &data);
    }
}

/// `POST /api/chat/stream` for the RAG chat client.
pub async fn handle(
    State(state): State<AppState>,
    route: Arc<DialectRoute>,
    caller: Caller,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match json_body(&state, &headers, body) {
        Ok(body) => respond(&state, &route, &caller, version, &body).await,
        Err(error) => error_response(error),
    }
}

/// Answers a body already read (the route may be shared with another dialect).
pub async fn respond(
    state: &AppState,
    route: &DialectRoute,
    caller: &Caller,
    version: Version,
    body: &Value,
) -> Response {
    let started = async {
        let message = string_field(body, "message")?.unwrap_or_default();
        let conversation = match (
            string_field(body, "conversation_id")?,
            string_field(body, "session_id")?,
        ) {
            (Some(id), _) => ConversationRef::Existing(id),
            (None, Some(session)) => ConversationRef::Named(session),
            (None, None) => ConversationRef::New,
        };
        let request = run_request(state, caller, message, conversation, super::default_scope())?;
        start(state, request).await
    };
    match started.await {
        Ok(started) => super::stream(state, route, version, &started, Arc::new(Rag), true),
        Err(error) => error_response(error),
    }
}

/// An error as its client reads it: the status, and `{message}`.
pub fn error_response(error: ApiError) -> Response {
    json_error(
        &error,
        json!({"message": error.message, "code": error.code}),
    )
}
