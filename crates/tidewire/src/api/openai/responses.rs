//! `/v1/responses`: the part of OpenAI's Responses API that is exactly a run.
//!
//! A response is a run (`resp_{run_id}`): `background: true` is what every run is
//! (independent of its connection), `GET /v1/responses/{id}` its state,
//! `?stream=true&starting_after=N` its events after sequence number N then live,
//! `POST .../cancel` its cancel. Without `background`, a client that goes away
//! cancels its response after the `[openai]` grace, as OpenAI does.
//!
//! The stream is the Responses event sequence for one text message:
//! `response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`...,
//! `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done`, then `response.completed`, `response.incomplete`
//! (cut by `max_output_tokens`, or cancelled) or `response.failed`. Each carries
//! its `sequence_number`. The encoder is deterministic, so every reader of a run,
//! live or resuming, sees the same numbers.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Version};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tidewire_protocol::{Answer, ChatEvent, ErrorEvent, MessageStatus, Usage};

use super::chat::Content;
use super::{OpenAiError, check_model, prompt_role, run_options, with_run_headers, within};
use crate::api::chat::{check_message, parse, read_body, require_json};
use crate::api::dialect::{default_scope, frame};
use crate::api::error::ApiError;
use crate::api::runs::{log_unavailable, lookup};
use crate::api::sse::{EventBody, StreamSettings, event_body, event_stream, sse_response};
use crate::api::{AppState, Asker};
use crate::auth::Caller;
use crate::hub::{CancelReason, EventEncoder, Run, RunIdentity, WireFormat};
use crate::llm::{PromptMessage, PromptRole, Sampling};
use crate::pipeline::{ConversationRef, RunRequest};

/// How long a cancel waits for the run to store its partial answer.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The body of `POST /v1/responses`.
#[derive(Debug, Deserialize)]
pub struct CreateResponse {
    model: String,
    input: Input,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<InputItem>),
}

#[derive(Debug, Deserialize)]
struct InputItem {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<Content>,
}

/// `?stream=&starting_after=` of `GET /v1/responses/{id}`.
#[derive(Debug, Deserialize)]
pub struct RetrieveQuery {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    starting_after: Option<u64>,
}

/// What a response echoes of its request, kept with its run.
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
struct Echo {
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    background: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    previous_response_id: Option<String>,
    metadata: Value,
}

impl Echo {
    fn of(identity: &RunIdentity) -> Self {
        identity
            .attributes
            .as_deref()
            .and_then(|value| serde_json::from_value(value.clone()).ok())
            .unwrap_or_default()
    }
}

/// `POST /v1/responses`.
pub async fn create(
    State(state): State<AppState>,
    Asker(caller): Asker,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    require_json(&headers)?;
    let body = read_body(&state, body)?;
    let body: CreateResponse = parse(&body)?;
    let stream = body.stream == Some(true);
    let background = body.background == Some(true);
    if let Some(run_id) = body
        .previous_response_id
        .as_deref()
        .and_then(|id| id.strip_prefix("resp_"))
    {
        // A response another node produced becomes held here too, for `accept`.
        lookup(&state, run_id).await.map_err(OpenAiError::from)?;
    }
    let request = accept(&state, body, &caller)?;
    let run = state
        .hub
        .start(request, None)
        .await
        .map_err(ApiError::from)?
        .run;
    if stream {
        let settings = stream_settings(&state, background);
        let subscription = run.subscribe(0, Arc::new(Responses));
        let body = event_body(subscription, settings);
        return Ok(with_run_headers(sse_response(version, body), &run));
    }
    if !background {
        run.finished().await;
    }
    let object = response_object(run.identity(), &run.answer());
    Ok(with_run_headers(Json(object).into_response(), &run))
}

/// `GET /v1/responses/{id}`: the response now, or with `stream=true` its events
/// after `starting_after`, then live.
pub async fn retrieve(
    State(state): State<AppState>,
    caller: Caller,
    version: Version,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RetrieveQuery>, QueryRejection>,
) -> Result<Response, OpenAiError> {
    let Query(query) = query.map_err(|rejection| {
        OpenAiError::invalid("starting_after", "invalid_query", rejection.body_text())
    })?;
    let run = find(&state, path, &caller).await?;
    if query.stream != Some(true) {
        return Ok(Json(response_object(run.identity(), &run.answer())).into_response());
    }
    let after = query
        .starting_after
        .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let (prefix, next_event) = resume_point(&run, after);
    let settings = stream_settings(&state, true);
    let live = event_stream(run.subscribe(next_event, Arc::new(Responses)), settings);
    let pieces =
        futures_util::stream::iter((!prefix.is_empty()).then(|| (Bytes::from(prefix), false)))
            .chain(live);
    Ok(sse_response(version, Body::new(EventBody::new(pieces))))
}

/// `POST /v1/responses/{id}/cancel`: stops the response (a finished one stays as
/// it is) and answers with its state, its partial text kept.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, OpenAiError> {
    let run = find(&state, path, &caller).await?;
    if !run.is_finished() {
        state
            .hub
            .cancel(&run, CancelReason::Requested)
            .await
            .map_err(|error| OpenAiError::from(log_unavailable(error)))?;
        if tokio::time::timeout(CANCEL_WAIT, run.finished())
            .await
            .is_err()
        {
            tracing::warn!(
                run_id = run.id(),
                "response did not stop within {CANCEL_WAIT:?}"
            );
        }
    }
    Ok(Json(response_object(run.identity(), &run.answer())))
}

fn stream_settings(state: &AppState, background: bool) -> StreamSettings {
    StreamSettings {
        keepalive: state.config.openai.keepalive,
        retry: None,
        cancel_on_disconnect: if background {
            None
        } else {
            state.config.openai.cancel_on_disconnect
        },
    }
}

async fn find(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
    caller: &Caller,
) -> Result<Arc<Run>, OpenAiError> {
    let Path(id) = path.map_err(|rejection| {
        OpenAiError::from(ApiError::bad_request("invalid_path", rejection.body_text()))
    })?;
    let run = match id.strip_prefix("resp_") {
        Some(run_id) => lookup(state, run_id).await.map_err(OpenAiError::from)?,
        None => None,
    };
    run.filter(|run| run.identity().user_id == caller.user_id)
        .ok_or_else(|| {
            OpenAiError::from(ApiError::not_found(
                "response_not_found",
                format!(
                    "no response {id:?}: responses are held in memory for {} after they end \
                     (their answers stay in the conversation's messages)",
                    humantime::format_duration(state.config.retention)
                ),
            ))
        })
}

/// Checks a request and makes its run request.
fn accept(
    state: &AppState,
    body: CreateResponse,
    caller: &Caller,
) -> Result<RunRequest, OpenAiError> {
    if body.tools.as_ref().is_some_and(|tools| !tools.is_empty()) {
        return Err(OpenAiError::invalid(
            "tools",
            "unsupported_parameter",
            "tools are not supported by tidewire's /v1/responses",
        ));
    }
    check_model(state, &body.model)?;
    let mut history = Vec::new();
    if let Some(instructions) = &body.instructions {
        history.push(PromptMessage::new(PromptRole::System, instructions.clone()));
    }
    match body.input {
        Input::Text(text) => history.push(PromptMessage::new(PromptRole::User, text)),
        Input::Items(items) => {
            for (index, item) in items.into_iter().enumerate() {
                let at = format!("input[{index}]");
                if item.kind.as_deref().is_some_and(|kind| kind != "message") {
                    return Err(OpenAiError::invalid(
                        "input",
                        "unsupported_parameter",
                        format!("{at}: only message items are supported"),
                    ));
                }
                let role = prompt_role(item.role.as_deref().unwrap_or("user"), "input", &at)?;
                let content = match item.content {
                    Some(content) => content.into_text("input", &at)?,
                    None => String::new(),
                };
                history.push(PromptMessage::new(role, content));
            }
        }
    }
    let question = match history.pop() {
        Some(last) if last.role == PromptRole::User => last.content,
        _ => {
            return Err(OpenAiError::invalid(
                "input",
                "invalid_input",
                "the input must end with a message from the user",
            ));
        }
    };
    check_message(state, &question)?;
    let conversation = match &body.previous_response_id {
        // The earlier response's conversation, which holds the history.
        Some(previous) => {
            let run = previous
                .strip_prefix("resp_")
                .and_then(|run_id| state.hub.get(run_id))
                .filter(|run| run.identity().user_id == caller.user_id)
                .ok_or_else(|| {
                    OpenAiError::invalid(
                        "previous_response_id",
                        "previous_response_not_found",
                        format!("no response {previous:?} is held"),
                    )
                })?;
            ConversationRef::Existing(run.conversation_id().to_owned())
        }
        None => ConversationRef::Inline(history),
    };
    let sampling = Sampling {
        temperature: within("temperature", body.temperature, 0.0, 2.0)?,
        top_p: within("top_p", body.top_p, 0.0, 1.0)?,
        ..Sampling::default()
    };
    let options = run_options(
        state,
        &body.model,
        body.max_output_tokens,
        "max_output_tokens",
        sampling,
    )?;
    let echo = Echo {
        model: body.model,
        instructions: body.instructions,
        max_output_tokens: body.max_output_tokens,
        background: body.background == Some(true),
        temperature: body.temperature,
        top_p: body.top_p,
        previous_response_id: body.previous_response_id,
        metadata: body.metadata.unwrap_or_else(|| json!({})),
    };
    Ok(RunRequest {
        conversation,
        message: question,
        scope: default_scope(),
        options,
        attributes: serde_json::to_value(echo).ok().map(Arc::new),
        user: caller.user_id.clone(),
    })
}

/// Where a stream resumes after sequence number `after` (-1: from the start): the
/// bytes of the Responses events after it that belong to an event of the run
/// already read past, and the number of run events those cover. The encoder is
/// replayed over the log, so the numbers are the ones every reader saw.
fn resume_point(run: &Arc<Run>, after: i64) -> (Vec<u8>, usize) {
    let events = run.events_from(0, usize::MAX);
    let mut encoder = ResponsesEncoder::new(run.identity());
    for (index, event) in events.iter().enumerate() {
        let before = encoder.next_sequence;
        let mut bytes = Vec::new();
        encoder.encode(index as u64 + 1, event, &mut bytes);
        let last = i64::try_from(encoder.next_sequence).unwrap_or(i64::MAX) - 1;
        if last > after {
            // This run event made blocks on both sides of `after` (or only after):
            // keep the blocks numbered past it.
            let skip = usize::try_from(after + 1 - i64::try_from(before).unwrap_or(0)).unwrap_or(0);
            let kept: Vec<&[u8]> = split_blocks(&bytes).skip(skip).collect();
            return (kept.concat(), index + 1);
        }
    }
    (Vec::new(), events.len())
}

/// The SSE blocks of encoded bytes, each with its blank line (JSON data holds no
/// raw line break, so a blank line only ends a block).
fn split_blocks(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memmem::find(rest, b"\n\n").map_or(rest.len(), |at| at + 2);
        let (block, tail) = rest.split_at(end);
        rest = tail;
        Some(block)
    })
}

/// The Responses wire format.
#[derive(Debug, Clone, Copy, Default)]
struct Responses;

impl WireFormat for Responses {
    fn name(&self) -> &'static str {
        "openai-responses"
    }

    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder> {
        Box::new(ResponsesEncoder::new(run))
    }
}

struct ResponsesEncoder {
    identity: RunIdentity,
    next_sequence: u64,
    answer: Answer,
}

impl ResponsesEncoder {
    fn new(identity: &RunIdentity) -> Self {
        Self {
            identity: identity.clone(),
            next_sequence: 0,
            answer: Answer::default(),
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.next_sequence);
        self.next_sequence += 1;
        frame(out, None, Some(kind), &data);
    }

    fn item_id(&self) -> String {
        format!("msg_{}", self.identity.message_id)
    }
}

impl EventEncoder for ResponsesEncoder {
    fn encode(&mut self, _seq: u64, event: &ChatEvent, out: &mut Vec<u8>) {
        self.answer.apply(event);
        let item_id = self.item_id();
        match event {
            ChatEvent::Run(_) => {
                let response = response_object(&self.identity, &self.answer);
                self.emit(out, "response.created", json!({"response": response}));
                self.emit(out, "response.in_progress", json!({"response": response}));
                let item = json!({"id": item_id, "type": "message", "status": "in_progress",
                                  "role": "assistant", "content": []});
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": 0, "item": item}),
                );
                self.emit(
                    out,
                    "response.content_part.added",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                           "part": output_text("")}),
                );
            }
            ChatEvent::Token(token) => {
                self.emit(
                    out,
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                           "delta": token.token, "logprobs": []}),
                );
            }
            ChatEvent::Done(_) => {
                let text = self.answer.content.clone();
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                           "part": output_text(&text)}),
                );
                let response = response_object(&self.identity, &self.answer);
                let item = response["output"][0].clone();
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": 0, "item": item}),
                );
                let kind = match response["status"].as_str() {
                    Some("completed") => "response.completed",
                    Some("failed") => "response.failed",
                    _ => "response.incomplete",
                };
                self.emit(out, kind, json!({"response": response}));
            }
            ChatEvent::Stage(_)
            | ChatEvent::Sources(_)
            | ChatEvent::QualityScore(_)
            | ChatEvent::FollowUpQuestions(_)
            | ChatEvent::Metadata(_)
            | ChatEvent::Error(_)
            | ChatEvent::ToolStarted(_)
            | ChatEvent::ToolFinished(_)
            | ChatEvent::ToolCall(_) => {}
        }
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The response object of a run, from its answer so far.
fn response_object(identity: &RunIdentity, answer: &Answer) -> Value {
    let echo = Echo::of(identity);
    let cut = answer.finish_reason.as_deref() == Some("length");
    let (status, incomplete) = match answer.status {
        MessageStatus::Streaming => ("in_progress", None),
        MessageStatus::Complete if cut => ("incomplete", Some("max_output_tokens")),
        MessageStatus::Complete => ("completed", None),
        MessageStatus::Cancelled => ("cancelled", None),
        MessageStatus::Failed | MessageStatus::Interrupted => ("failed", None),
    };
    let finished = answer.status != MessageStatus::Streaming;
    let item_status = match status {
        "completed" => "completed",
        "in_progress" => "in_progress",
        _ => "incomplete",
    };
    let output = if finished || !answer.content.is_empty() {
        json!([{
            "id": format!("msg_{}", identity.message_id),
            "type": "message",
            "status": item_status,
            "role": "assistant",
            "content": [output_text(&answer.content)],
        }])
    } else {
        json!([])
    };
    let error = match (&answer.error, status) {
        (Some(ErrorEvent { error, code, .. }), "failed") => json!({"code": code, "message": error}),
        (None, "failed") => json!({"code": "interrupted", "message": "the answer was interrupted"}),
        _ => Value::Null,
    };
    json!({
        "id": format!("resp_{}", identity.run_id),
        "object": "response",
        "created_at": identity.created,
        "status": status,
        "background": echo.background,
        "error": error,
        "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "model": echo.model,
        "output": output,
        "parallel_tool_calls": false,
        "previous_response_id": echo.previous_response_id,
        "temperature": echo.temperature,
        "top_p": echo.top_p,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "metadata": echo.metadata,
        "usage": finished.then(|| usage(answer.usage.unwrap_or_default())),
        "store": true,
    })
}

fn usage(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    })
}
