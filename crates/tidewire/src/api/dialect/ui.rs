//! The Vercel AI SDK's `useChat` with `DefaultChatTransport`: `POST /api/ui/chat`
//! answered with the UI message stream, and `GET /api/ui/chat/{chat_id}/stream`,
//! where `useChat({ resume: true })` reconnects.
//!
//! The request is `{id, messages, trigger, messageId?}` plus the transport's `body`
//! fields at the top level; `id` is the chat, stored as the conversation of that
//! id, and the last user message's text parts are the question. `options` works
//! as on the native API.
//!
//! The stream is `data: {json}` blocks with the header
//! `x-vercel-ai-ui-message-stream: v1`: `start` (the assistant message's id, and
//! the run's ids as message metadata), `start-step`, `text-start` /
//! `text-delta` / `text-end` of one text part, sources as `source-document`
//! parts, tool calls as dynamic tool parts, stages, full sources, the quality
//! score and follow-ups as `data-*` parts (the client rejects an unknown part
//! type, so nothing else is sent), `message-metadata` with model and usage,
//! `finish-step`, `finish`, then `data: [DONE]`. A failure is an `error` part,
//! then `finish`.
//!
//! `stop()` only drops the connection: the run is cancelled after the route's
//! grace unless a reconnect follows it by then. A reconnect gets the active run
//! of the chat from its start (the client replaces the message it was
//! building), or 204 when the chat has no active run.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tidewire_protocol::api::ChatOptions;
use tidewire_protocol::{ChatEvent, MessageStatus};

use super::{DialectRoute, frame, json_body, json_error};
use crate::api::AppState;
use crate::api::chat::check_message;
use crate::api::error::ApiError;
use crate::api::sse::{StreamSettings, event_body, sse_response};
use crate::auth::Caller;
use crate::hub::{EventEncoder, Run, RunIdentity, WireFormat};
use crate::pipeline::{ConversationRef, RunRequest};
use crate::retrieval::{DEFAULT_COLLECTION, Scope};

/// The longest chat id.
const MAX_CHAT_ID: usize = 255;

/// What `DefaultChatTransport` posts (the fields tidewire reads).
#[derive(Debug, Deserialize)]
struct UiRequest {
    id: String,
    messages: Vec<UiMessage>,
    #[serde(default)]
    options: Option<ChatOptions>,
}

#[derive(Debug, Deserialize)]
struct UiMessage {
    role: String,
    #[serde(default)]
    parts: Vec<Value>,
}

/// The UI message stream format.
#[derive(Debug, Clone, Copy, Default)]
pub struct UiStream;

impl WireFormat for UiStream {
    fn name(&self) -> &'static str {
        "ui-message-stream"
    }

    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder> {
        Box::new(UiEncoder {
            identity: run.clone(),
            text_open: false,
            failed: false,
            finish_reason: None,
        })
    }
}

struct UiEncoder {
    identity: RunIdentity,
    text_open: bool,
    failed: bool,
    finish_reason: Option<String>,
}

/// The id of the answer's one text part.
const TEXT_ID: &str = "text-1";

impl UiEncoder {
    fn part(out: &mut Vec<u8>, part: &Value) {
        frame(out, None, None, part);
    }

    fn close_text(&mut self, out: &mut Vec<u8>) {
        if self.text_open {
            self.text_open = false;
            Self::part(out, &json!({"type": "text-end", "id": TEXT_ID}));
        }
    }
}

impl EventEncoder for UiEncoder {
    fn encode(&mut self, _seq: u64, event: &ChatEvent, out: &mut Vec<u8>) {
        // The text part ends with the generation: whatever comes next closes it.
        if !matches!(event, ChatEvent::Token(_)) {
            self.close_text(out);
        }
        match event {
            ChatEvent::Run(run) => {
                let start = json!({
                    "type": "start",
                    "messageId": run.message_id,
                    "messageMetadata": {
                        "run_id": run.run_id,
                        "conversation_id": run.conversation_id,
                    },
                });
                Self::part(out, &start);
                Self::part(out, &json!({"type": "start-step"}));
            }
            ChatEvent::Stage(stage) => Self::part(
                out,
                &json!({"type": "data-stage", "id": "stage", "data": {"stage": stage.stage}}),
            ),
            ChatEvent::Sources(sources) => {
                for source in &sources.sources {
                    let part = json!({
                        "type": "source-document",
                        "sourceId": source.chunk_id,
                        "mediaType": "text/plain",
                        "title": source.document_name,
                        "filename": source.document_name,
                    });
                    Self::part(out, &part);
                }
                // The excerpts and scores, which source parts have no field for.
                Self::part(
                    out,
                    &json!({"type": "data-sources", "id": "sources", "data": sources.sources}),
                );
            }
            ChatEvent::Token(token) => {
                if !self.text_open {
                    self.text_open = true;
                    Self::part(out, &json!({"type": "text-start", "id": TEXT_ID}));
                }
                Self::part(
                    out,
                    &json!({"type": "text-delta", "id": TEXT_ID, "delta": token.token}),
                );
            }
            ChatEvent::QualityScore(score) => Self::part(
                out,
                &json!({"type": "data-quality-score", "id": "quality_score",
                        "data": {"quality_score": score.quality_score}}),
            ),
            ChatEvent::FollowUpQuestions(questions) => Self::part(
                out,
                &json!({"type": "data-follow-up-questions", "id": "follow_up_questions",
                        "data": {"follow_up_questions": questions.follow_up_questions}}),
            ),
            // The server runs these tools: `providerExecuted`, so the client does
            // not try to run them itself.
            ChatEvent::ToolStarted(call) => {
                Self::part(
                    out,
                    &json!({"type": "tool-input-start", "toolCallId": call.tool_call_id,
                            "toolName": call.tool_name, "dynamic": true,
                            "providerExecuted": true}),
                );
                Self::part(
                    out,
                    &json!({"type": "tool-input-available", "toolCallId": call.tool_call_id,
                            "toolName": call.tool_name, "input": call.arguments, "dynamic": true,
                            "providerExecuted": true}),
                );
            }
            ChatEvent::ToolFinished(call) if call.is_error => {
                let text = call.result["error"]
                    .as_str()
                    .map_or_else(|| call.result.to_string(), str::to_owned);
                Self::part(
                    out,
                    &json!({"type": "tool-output-error", "toolCallId": call.tool_call_id,
                            "errorText": text, "dynamic": true, "providerExecuted": true}),
                );
            }
            ChatEvent::ToolFinished(call) => Self::part(
                out,
                &json!({"type": "tool-output-available", "toolCallId": call.tool_call_id,
                        "output": call.result, "dynamic": true, "providerExecuted": true}),
            ),
            // Only the OpenAI routes take client tools; nothing to show here.
            ChatEvent::ToolCall(_) => {}
            ChatEvent::Metadata(metadata) => {
                self.finish_reason.clone_from(&metadata.finish_reason);
                let part = json!({
                    "type": "message-metadata",
                    "messageMetadata": {
                        "run_id": self.identity.run_id,
                        "conversation_id": self.identity.conversation_id,
                        "model": metadata.model,
                        "usage": metadata.usage,
                        "timing": metadata.timing,
                    },
                });
                Self::part(out, &part);
            }
            ChatEvent::Error(error) => {
                self.failed = true;
                Self::part(out, &json!({"type": "error", "errorText": error.error}));
            }
            ChatEvent::Done(done) => {
                Self::part(out, &json!({"type": "finish-step"}));
                let reason = match done.status {
                    _ if self.failed => "error",
                    MessageStatus::Complete if self.finish_reason.as_deref() == Some("length") => {
                        "length"
                    }
                    MessageStatus::Complete => "stop",
                    MessageStatus::Cancelled => "other",
                    _ => "error",
                };
                Self::part(out, &json!({"type": "finish", "finishReason": reason}));
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
        }
    }
}

/// `POST {path}`.
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
        let request: UiRequest = serde_json::from_value(body).map_err(|error| {
            ApiError::unprocessable("invalid_request", format!("not a useChat request: {error}"))
        })?;
        let run_request = run_request(&state, &caller, request)?;
        Ok::<_, ApiError>(state.hub.start(run_request, None).await?.run)
    };
    match started.await {
        Ok(run) => stream(&state, &route, version, &run),
        // The client shows the body's text as the error's message.
        Err(error) => json_error(&error, json!({"error": error.message, "code": error.code})),
    }
}

/// `GET {path}/{chat_id}/stream`: the chat's running answer from its start, or 204.
pub async fn reconnect(
    State(state): State<AppState>,
    route: Arc<DialectRoute>,
    caller: Caller,
    version: Version,
    Path(chat_id): Path<String>,
) -> Response {
    // Another user's chat has, as far as this caller can tell, nothing running.
    let running = match state.hub.running_in(&chat_id) {
        Some(run) => Some(run),
        None => running_elsewhere(&state, &chat_id, &caller.user_id).await,
    }
    .filter(|run| run.identity().user_id == caller.user_id);
    match running {
        Some(run) => stream(&state, &route, version, &run),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Among nodes, the run another node produces for the chat's answer still
/// streaming, as the store tells it.
async fn running_elsewhere(state: &AppState, chat_id: &str, user_id: &str) -> Option<Arc<Run>> {
    state.hub.cluster()?;
    let messages = state
        .store
        .list_messages(chat_id, user_id)
        .await
        .ok()
        .flatten()?;
    let run_id = messages
        .iter()
        .rev()
        .find(|message| message.status == MessageStatus::Streaming)?
        .run_id
        .clone()?;
    state
        .hub
        .find(&run_id)
        .await
        .ok()
        .flatten()
        .filter(|run| !run.is_finished())
}

fn stream(state: &AppState, route: &DialectRoute, version: Version, run: &Arc<Run>) -> Response {
    let settings = StreamSettings {
        keepalive: route.keepalive.unwrap_or(state.config.keepalive),
        retry: None,
        cancel_on_disconnect: route.cancel_on_disconnect,
    };
    let subscription = run.subscribe(0, Arc::new(UiStream));
    let mut response = sse_response(version, event_body(subscription, settings));
    response.headers_mut().insert(
        "x-vercel-ai-ui-message-stream",
        HeaderValue::from_static("v1"),
    );
    response
}

/// The run request of a `useChat` body.
fn run_request(
    state: &AppState,
    caller: &Caller,
    request: UiRequest,
) -> Result<RunRequest, ApiError> {
    if request.id.is_empty() || request.id.len() > MAX_CHAT_ID {
        return Err(ApiError::unprocessable(
            "invalid_conversation_id",
            format!("the chat id must be 1 to {MAX_CHAT_ID} bytes"),
        ));
    }
    let question = request
        .messages
        .last()
        .filter(|message| message.role == "user")
        .map(|message| {
            message
                .parts
                .iter()
                .filter(|part| part["type"] == "text")
                .filter_map(|part| part["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_messages",
                "the last message must be the user's, with a text part",
            )
        })?;
    check_message(state, &question)?;
    let given = request.options.unwrap_or_default();
    let options = state
        .hub
        .pipeline()
        .options(&given)
        .map_err(|invalid| ApiError::unprocessable(invalid.code, invalid.message))?;
    Ok(RunRequest {
        // The chat's history is the stored conversation of that id.
        conversation: ConversationRef::Named(request.id),
        message: question,
        scope: Scope {
            collection: given
                .collection
                .unwrap_or_else(|| DEFAULT_COLLECTION.to_owned()),
            documents: given.documents,
        },
        options,
        attributes: None,
        user: caller.user_id.clone(),
    })
}
