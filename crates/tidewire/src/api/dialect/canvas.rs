//! The canvas agent chat front end (seed 003): `POST /api/chat/stream` with
//! `{user_message, context_node_ids, project_id, chat_node_id, conversation_id?}`
//! and a Bearer token.
//!
//! Named events with one `data:` line each: `stream_start` `{status}`,
//! `conversation_id` `{conversation_id}` when the request started a conversation,
//! `message` `{token}`, `stream_end` `{message_id, status}` and `error` `{error}`.
//! `stream_end` comes after the answer is stored, so the client's refetch of the
//! conversation's messages (`GET /api/conversations/{id}/messages`) finds it.
//! `id:` lines keep the native sequence numbers; the run's id travels in
//! `stream_start`. Stages, sources, scores, follow-ups and tool calls have no place
//! in this client and are left out. Its client reads only the HTTP status of an
//! error; the body is `{error, detail}` for people reading it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Version};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use tidewire_protocol::ChatEvent;

use super::{
    DialectRoute, RunLink, frame, json_body, json_error, run_request, start, string_field,
};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::hub::{EventEncoder, RunIdentity, WireFormat};
use crate::pipeline::ConversationRef;

/// The canvas wire format; `announce_conversation` adds the `conversation_id`
/// event for a request that started a conversation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Canvas {
    /// Whether the request started the conversation.
    pub announce_conversation: bool,
}

impl WireFormat for Canvas {
    fn name(&self) -> &'static str {
        if self.announce_conversation {
            "canvas-new"
        } else {
            "canvas"
        }
    }

    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder> {
        Box::new(CanvasEncoder {
            announce_conversation: self.announce_conversation,
            message_id: run.message_id.clone(),
            conversation_id: run.conversation_id.clone(),
        })
    }
}

struct CanvasEncoder {
    announce_conversation: bool,
    message_id: String,
    conversation_id: String,
}

#[derive(Serialize)]
struct StreamStart<'a> {
    status: &'static str,
    message_id: &'a str,
    #[serde(flatten)]
    link: RunLink<'a>,
}

#[derive(Serialize)]
struct StreamEnd<'a> {
    message_id: &'a str,
    conversation_id: &'a str,
    status: &'a str,
}

#[derive(Serialize)]
struct Token<'a> {
    token: &'a str,
}

#[derive(Serialize)]
struct Error<'a> {
    error: &'a str,
    code: &'a str,
}

impl EventEncoder for CanvasEncoder {
    fn encode(&mut self, seq: u64, event: &ChatEvent, out: &mut Vec<u8>) {
        match event {
            ChatEvent::Run(run) => {
                let start = StreamStart {
                    status: "streaming",
                    message_id: &run.message_id,
                    link: RunLink::new(&run.run_id),
                };
                if self.announce_conversation {
                    // The id goes on the last block of the event, so a client that
                    // has it has all of it.
                    frame(out, None, Some("stream_start"), &start);
                    let id = json!({"conversation_id": run.conversation_id});
                    frame(out, Some(seq), Some("conversation_id"), &id);
                } else {
                    frame(out, Some(seq), Some("stream_start"), &start);
                }
            }
            ChatEvent::Token(token) => frame(
                out,
                Some(seq),
                Some("message"),
                &Token {
                    token: &token.token,
                },
            ),
            ChatEvent::Error(error) => frame(
                out,
                Some(seq),
                Some("error"),
                &Error {
                    error: &error.error,
                    code: &error.code,
                },
            ),
            ChatEvent::Done(done) => frame(
                out,
                Some(seq),
                Some("stream_end"),
                &StreamEnd {
                    message_id: &self.message_id,
                    conversation_id: &self.conversation_id,
                    status: done.status.as_str(),
                },
            ),
            _ => {}
        }
    }
}

/// `POST /api/chat/stream` for the canvas client.
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
        let message = string_field(body, "user_message")?.unwrap_or_default();
        string_field(body, "chat_node_id")?;
        // A project is a collection of documents, and the nodes in context are the
        // documents the answer may draw on (all of the project's when none).
        let collection = string_field(body, "project_id")?
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| crate::retrieval::DEFAULT_COLLECTION.to_owned());
        let documents = match body.get("context_node_ids") {
            None | Some(Value::Null) => None,
            Some(Value::Array(ids)) if ids.iter().all(Value::is_string) => Some(
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect::<Vec<_>>(),
            )
            .filter(|ids| !ids.is_empty()),
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "invalid_request",
                    "context_node_ids must be an array of strings",
                ));
            }
        };
        let scope = crate::retrieval::Scope {
            collection,
            documents,
        };
        let conversation = match string_field(body, "conversation_id")? {
            Some(id) => ConversationRef::Existing(id),
            None => ConversationRef::New,
        };
        let announce = conversation == ConversationRef::New;
        let request = run_request(state, caller, message, conversation, scope)?;
        Ok((start(state, request).await?, announce))
    };
    match started.await {
        Ok((started, announce)) => super::stream(
            state,
            route,
            version,
            &started,
            Arc::new(Canvas {
                announce_conversation: announce,
            }),
            true,
        ),
        Err(error) => error_response(error),
    }
}

/// An error: its status, and `{error, detail}`.
pub fn error_response(error: ApiError) -> Response {
    json_error(
        &error,
        json!({"error": error.message, "detail": error.message, "code": error.code}),
    )
}
