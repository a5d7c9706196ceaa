//! `POST /v1/chat/completions`: OpenAI's Chat Completions over a run.
//!
//! The history travels in the request (`messages`); the last message is the
//! user's question, the ones before it the conversation, and the turn is stored as
//! a conversation of its own. The extension field `conversation_id` (the SDKs send
//! it with `extra_body`) stores the turn in that conversation instead, created if
//! missing, and takes the history from it.
//!
//! `model` names a configured backend (`GET /v1/models`). Sampling settings go to
//! the model; `stop` is enforced for every backend. The client's `tools` and
//! `tool_choice` go to the model as given; its tool calls come back as
//! `tool_calls` deltas with finish reason `tool_calls`, for the client to run, and
//! the client's next request carries the calls and their results after the
//! question. What tidewire cannot do (several choices, log probabilities) is a 400,
//! never ignored.
//!
//! The stream is what the SDKs expect: the same `id`, `created` and `model` on
//! every chunk, `role` in the first delta, one chunk with a `finish_reason`, with
//! `stream_options.include_usage` a last chunk with `choices: []` and the usage
//! (and `usage: null` on the others), then `data: [DONE]`. An error after the
//! first chunk is one `data: {"error": ...}`, and the body ends.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidewire_protocol::{ChatEvent, ClientToolCall, Usage};

use super::{ErrorObject, OpenAiError, with_run_headers, within};
use crate::api::chat::{check_message, parse, read_body, require_json};
use crate::api::dialect::{default_scope, frame};
use crate::api::error::ApiError;
use crate::api::sse::{StreamSettings, event_body, sse_response};
use crate::api::{AppState, Asker};
use crate::auth::Caller;
use crate::hub::{EventEncoder, RunIdentity, WireFormat};
use crate::llm::{PromptMessage, PromptRole, Sampling, ToolCall, ToolExchange, ToolSpec};
use crate::pipeline::{ClientTools, ConversationRef, RunRequest};

/// The most stop sequences a request may give (OpenAI's limit).
const MAX_STOPS: usize = 4;

/// The body of a Chat Completions request.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    model: String,
    messages: Vec<InputMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    /// tidewire's extension: the conversation to store the turn in.
    #[serde(default)]
    conversation_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct InputMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    /// An assistant message's calls of the client's tools.
    #[serde(default)]
    tool_calls: Option<Vec<InputToolCall>>,
    /// A `tool` message: the call it answers.
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InputToolCall {
    id: String,
    function: InputFunction,
}

#[derive(Debug, Deserialize)]
struct InputFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// A message's content: a string, or parts of which only text is taken.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub(super) struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    /// The text of the content; a part that is not text (an image, a file) is a
    /// 400 about `param`.
    pub(super) fn into_text(self, param: &'static str, at: &str) -> Result<String, OpenAiError> {
        let parts = match self {
            Self::Text(text) => return Ok(text),
            Self::Parts(parts) => parts,
        };
        let mut text = String::new();
        for part in parts {
            match (part.kind.as_str(), part.text) {
                ("text" | "input_text" | "output_text", Some(piece)) => text.push_str(&piece),
                (kind, _) => {
                    return Err(OpenAiError::invalid(
                        param,
                        "unsupported_parameter",
                        format!(
                            "{at}: content parts of type {kind:?} are not supported; only text"
                        ),
                    ));
                }
            }
        }
        Ok(text)
    }
}

/// What the route needs from a request besides the run request.
struct Accepted {
    request: RunRequest,
    model: String,
    stream: bool,
    include_usage: bool,
}

/// `POST /v1/chat/completions`.
pub async fn completions(
    State(state): State<AppState>,
    Asker(caller): Asker,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    require_json(&headers)?;
    let body = read_body(&state, body)?;
    let accepted = accept(&state, parse(&body)?, caller)?;
    let started = state
        .hub
        .start(accepted.request, None)
        .await
        .map_err(ApiError::from)?;
    let run = started.run;
    if !accepted.stream {
        run.finished().await;
        let response = whole_answer(&run, &accepted.model)?;
        return Ok(with_run_headers(response, &run));
    }
    let format = Arc::new(Chunks {
        model: accepted.model,
        include_usage: accepted.include_usage,
    });
    let settings = StreamSettings {
        keepalive: state.config.openai.keepalive,
        retry: None,
        cancel_on_disconnect: state.config.openai.cancel_on_disconnect,
    };
    let body = event_body(run.subscribe(0, format), settings);
    Ok(with_run_headers(sse_response(version, body), &run))
}

/// Checks a request and makes its run request.
fn accept(
    state: &AppState,
    body: CompletionRequest,
    caller: Caller,
) -> Result<Accepted, OpenAiError> {
    let unsupported = |param: &'static str, what: &str| {
        Err(OpenAiError::invalid(
            param,
            "unsupported_parameter",
            format!("{what} is not supported by tidewire"),
        ))
    };
    if body.n.is_some_and(|n| n != 1) {
        return unsupported("n", "more than one choice (n > 1)");
    }
    if body.logprobs == Some(true) {
        return unsupported("logprobs", "logprobs");
    }
    if let Some(format) = &body.response_format
        && format.get("type").and_then(Value::as_str) != Some("text")
    {
        return unsupported("response_format", "a response_format other than text");
    }
    let sampling = sampling(&body)?;
    super::check_model(state, &body.model)?;
    let tools = client_tools(state, &body)?;

    let mut history = history(body.messages)?;
    // The question is the last user message; after it may come only the model's
    // calls of the client's tools with their results (the client going on).
    let Some(asked) = history.iter().rposition(|m| m.role == PromptRole::User) else {
        return Err(OpenAiError::invalid(
            "messages",
            "invalid_messages",
            if history.is_empty() {
                "messages must not be empty"
            } else {
                "the last message must be the user's"
            },
        ));
    };
    let since_question = history.split_off(asked + 1);
    if since_question
        .iter()
        .any(|m| m.role != PromptRole::Assistant || m.tool_calls.is_empty())
    {
        return Err(OpenAiError::invalid(
            "messages",
            "invalid_messages",
            "the last message must be the user's, or a tool result that answers the \
             assistant's tool call after it",
        ));
    }
    let question = history.pop().map(|m| m.content).unwrap_or_default();
    check_message(state, &question)?;
    let conversation = match body.conversation_id {
        Some(id) if id.is_empty() || id.len() > 255 => {
            return Err(OpenAiError::invalid(
                "conversation_id",
                "invalid_conversation_id",
                "a conversation id must be 1 to 255 bytes",
            ));
        }
        Some(id) => ConversationRef::Named(id),
        None => ConversationRef::Inline(history),
    };
    let mut options = super::run_options(
        state,
        &body.model,
        body.max_completion_tokens.or(body.max_tokens),
        "max_tokens",
        sampling,
    )?;
    if !tools.is_empty() || !since_question.is_empty() {
        options.client_tools = Some(ClientTools {
            tools,
            choice: body.tool_choice,
            since_question,
        });
    }
    Ok(Accepted {
        request: RunRequest {
            conversation,
            message: question,
            scope: default_scope(),
            options,
            attributes: None,
            user: caller.user_id,
        },
        model: body.model,
        stream: body.stream == Some(true),
        include_usage: body
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false),
    })
}

/// The sampling settings of a request, each within OpenAI's range.
fn sampling(body: &CompletionRequest) -> Result<Sampling, OpenAiError> {
    let stop = match &body.stop {
        None => Vec::new(),
        Some(Stop::One(one)) => vec![one.clone()],
        Some(Stop::Many(many)) => many.clone(),
    };
    if stop.len() > MAX_STOPS {
        return Err(OpenAiError::invalid(
            "stop",
            "invalid_value",
            format!("at most {MAX_STOPS} stop sequences"),
        ));
    }
    Ok(Sampling {
        temperature: within("temperature", body.temperature, 0.0, 2.0)?,
        top_p: within("top_p", body.top_p, 0.0, 1.0)?,
        presence_penalty: within("presence_penalty", body.presence_penalty, -2.0, 2.0)?,
        frequency_penalty: within("frequency_penalty", body.frequency_penalty, -2.0, 2.0)?,
        seed: body.seed,
        stop,
    })
}

/// The client's tools, checked: functions with a valid name and an object schema;
/// `tool_choice` must name one of them when it names one. A model that takes no
/// tools is told so.
fn client_tools(state: &AppState, body: &CompletionRequest) -> Result<Vec<ToolSpec>, OpenAiError> {
    let invalid = |param: &'static str, message: String| {
        Err(OpenAiError::invalid(param, "invalid_value", message))
    };
    let given = body.tools.as_deref().unwrap_or_default();
    let mut tools = Vec::with_capacity(given.len());
    for (index, tool) in given.iter().enumerate() {
        let function = &tool["function"];
        let name = function["name"].as_str().unwrap_or_default();
        if tool["type"] != "function" {
            return invalid("tools", format!("tools[{index}].type must be \"function\""));
        }
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return invalid(
                "tools",
                format!("tools[{index}].function.name must be 1 to 64 letters, digits, _ or -"),
            );
        }
        let parameters = match &function["parameters"] {
            Value::Null => serde_json::json!({"type": "object", "properties": {}}),
            schema @ Value::Object(_) => schema.clone(),
            _ => {
                return invalid(
                    "tools",
                    format!("tools[{index}].function.parameters must be a JSON schema object"),
                );
            }
        };
        tools.push(ToolSpec {
            name: name.to_owned(),
            description: function["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            parameters,
        });
    }
    match &body.tool_choice {
        None => {}
        Some(Value::String(choice)) if matches!(choice.as_str(), "none" | "auto" | "required") => {}
        Some(choice) if choice["type"] == "function" => {
            let named = choice["function"]["name"].as_str().unwrap_or_default();
            if !tools.iter().any(|tool| tool.name == named) {
                return invalid(
                    "tool_choice",
                    format!("tool_choice names {named:?}, which is not one of the tools"),
                );
            }
        }
        Some(_) => {
            return invalid(
                "tool_choice",
                "tool_choice must be \"none\", \"auto\", \"required\" or a function".into(),
            );
        }
    }
    if !tools.is_empty() {
        let backend = state.hub.pipeline().backends().select(Some(&body.model));
        if !backend.is_ok_and(|backend| backend.supports_tools()) {
            return Err(OpenAiError::invalid(
                "tools",
                "unsupported_parameter",
                format!("the model {} does not take tools", body.model),
            ));
        }
    }
    Ok(tools)
}

/// The messages as the prompt takes them: an assistant message with tool calls
/// gets the results of the `tool` messages that answer them, and every call must
/// have its result.
fn history(messages: Vec<InputMessage>) -> Result<Vec<PromptMessage>, OpenAiError> {
    let mut history: Vec<PromptMessage> = Vec::with_capacity(messages.len());
    // The calls still waiting for their result: (message, call) positions.
    let mut waiting: Vec<(usize, usize)> = Vec::new();
    for (index, message) in messages.into_iter().enumerate() {
        let at = format!("messages[{index}]");
        if message.role == "tool" {
            let id = message.tool_call_id.unwrap_or_default();
            let Some(slot) = waiting
                .iter()
                .position(|(m, c)| history[*m].tool_calls[*c].call.id == id)
            else {
                return Err(OpenAiError::invalid(
                    "messages",
                    "invalid_messages",
                    format!("{at}: no assistant tool call before it has the id {id:?}"),
                ));
            };
            let (m, c) = waiting.remove(slot);
            let result = match message.content {
                None => String::new(),
                Some(content) => content.into_text("messages", &at)?,
            };
            history[m].tool_calls[c].result = result;
            continue;
        }
        if let Some((m, c)) = waiting.first() {
            let id = &history[*m].tool_calls[*c].call.id;
            return Err(OpenAiError::invalid(
                "messages",
                "invalid_messages",
                format!("{at}: the tool call {id:?} has no tool message with its result before it"),
            ));
        }
        let role = super::prompt_role(&message.role, "messages", &at)?;
        let content = match message.content {
            None => String::new(),
            Some(content) => content.into_text("messages", &at)?,
        };
        let mut prompt = PromptMessage::new(role, content);
        if let Some(calls) = message.tool_calls.filter(|calls| !calls.is_empty()) {
            if role != PromptRole::Assistant {
                return Err(OpenAiError::invalid(
                    "messages",
                    "invalid_messages",
                    format!("{at}: only the assistant's messages have tool_calls"),
                ));
            }
            for (c, call) in calls.into_iter().enumerate() {
                waiting.push((history.len(), c));
                prompt.tool_calls.push(ToolExchange {
                    call: ToolCall {
                        id: call.id,
                        name: call.function.name,
                        arguments: call.function.arguments,
                    },
                    result: String::new(),
                });
            }
        }
        history.push(prompt);
    }
    if let Some((m, c)) = waiting.first() {
        let id = &history[*m].tool_calls[*c].call.id;
        return Err(OpenAiError::invalid(
            "messages",
            "invalid_messages",
            format!("the tool call {id:?} has no tool message with its result"),
        ));
    }
    Ok(history)
}

/// The `chat.completion` of a finished run, or its error.
fn whole_answer(run: &crate::hub::Run, model: &str) -> Result<Response, OpenAiError> {
    let answer = run.answer();
    if let Some(error) = &answer.error {
        let status = if error.retryable {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_GATEWAY
        };
        let code: &'static str = if error.retryable {
            "model_unavailable"
        } else {
            "model_error"
        };
        return Err(ApiError::new(status, code, error.error.clone()).into());
    }
    let identity = run.identity();
    let usage = answer.usage.unwrap_or_default();
    let mut message =
        serde_json::json!({"role": "assistant", "content": answer.content, "refusal": null});
    if !answer.client_tool_calls.is_empty() {
        let calls: Vec<ToolCallOut<'_>> = answer
            .client_tool_calls
            .iter()
            .enumerate()
            .map(|(index, call)| ToolCallOut::new(index, call))
            .collect();
        message["tool_calls"] = serde_json::json!(calls);
        if answer.content.is_empty() {
            message["content"] = Value::Null;
        }
    }
    let body = serde_json::json!({
        "id": completion_id(&identity.run_id),
        "object": "chat.completion",
        "created": identity.created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(answer.finish_reason.as_deref()),
        }],
        "usage": UsageOut::from(usage),
        "system_fingerprint": null,
    });
    Ok(Json(body).into_response())
}

fn completion_id(run_id: &str) -> String {
    format!("chatcmpl-{run_id}")
}

/// OpenAI's finish reasons: a model's own (`stop`, `length`, `tool_calls`,
/// `content_filter`) pass, anything else is `stop`.
fn finish_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("length") => "length",
        Some("tool_calls") => "tool_calls",
        Some("content_filter") => "content_filter",
        _ => "stop",
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<Usage> for UsageOut {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
        }
    }
}

/// The stream format of one request (its model name and usage option).
#[derive(Debug)]
struct Chunks {
    model: String,
    include_usage: bool,
}

impl WireFormat for Chunks {
    fn name(&self) -> &'static str {
        if self.include_usage {
            "openai-chat-usage"
        } else {
            "openai-chat"
        }
    }

    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder> {
        Box::new(ChunkEncoder {
            id: completion_id(&run.run_id),
            created: run.created,
            model: self.model.clone(),
            include_usage: self.include_usage,
            usage: None,
            finish_reason: None,
            failed: false,
            tool_calls: 0,
        })
    }
}

struct ChunkEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    failed: bool,
    /// Client tool calls sent so far (each call's `index`).
    tool_calls: usize,
}

/// A call of a client's tool, as OpenAI writes it (in a delta and in a message).
#[derive(Serialize)]
struct ToolCallOut<'a> {
    /// Its position among the answer's calls (deltas only; ignored in a message).
    index: usize,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl<'a> ToolCallOut<'a> {
    fn new(index: usize, call: &'a ClientToolCall) -> Self {
        Self {
            index,
            id: &call.tool_call_id,
            kind: "function",
            function: FunctionOut {
                name: &call.tool_name,
                arguments: &call.arguments,
            },
        }
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [Choice<'a>],
    /// `null` on every chunk but the last with `include_usage`; absent without.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageOut>>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

impl ChunkEncoder {
    fn chunk(&self, out: &mut Vec<u8>, choices: &[Choice<'_>], usage: Option<UsageOut>) {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage: self.include_usage.then_some(usage),
        };
        frame(out, None, None, &chunk);
    }

    fn delta(&self, out: &mut Vec<u8>, delta: Delta<'_>, finish_reason: Option<&str>) {
        let choice = Choice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        };
        self.chunk(out, std::slice::from_ref(&choice), None);
    }
}

impl EventEncoder for ChunkEncoder {
    fn encode(&mut self, _seq: u64, event: &ChatEvent, out: &mut Vec<u8>) {
        match event {
            ChatEvent::Run(_) => {
                let delta = Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    tool_calls: None,
                };
                self.delta(out, delta, None);
            }
            ChatEvent::Token(token) => {
                let delta = Delta {
                    role: None,
                    content: Some(&token.token),
                    tool_calls: None,
                };
                self.delta(out, delta, None);
            }
            // Each call whole in one delta: the SDKs join a call's pieces by its
            // index, and one piece is a whole call.
            ChatEvent::ToolCall(call) => {
                let delta = Delta {
                    role: None,
                    content: None,
                    tool_calls: Some([ToolCallOut::new(self.tool_calls, call)]),
                };
                self.tool_calls += 1;
                self.delta(out, delta, None);
            }
            ChatEvent::Metadata(metadata) => {
                self.usage = Some(metadata.usage);
                self.finish_reason.clone_from(&metadata.finish_reason);
            }
            ChatEvent::Error(error) => {
                self.failed = true;
                let body = serde_json::json!({"error": ErrorObject {
                    message: &error.error,
                    kind: "server_error",
                    param: None,
                    code: &error.code,
                }});
                frame(out, None, None, &body);
            }
            ChatEvent::Done(_) => {
                if self.failed {
                    // The error was the last word: the body ends.
                    return;
                }
                let empty = Delta {
                    role: None,
                    content: None,
                    tool_calls: None,
                };
                let reason = finish_reason(self.finish_reason.as_deref());
                self.delta(out, empty, Some(reason));
                if self.include_usage {
                    let usage = UsageOut::from(self.usage.unwrap_or_default());
                    self.chunk(out, &[], Some(usage));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            ChatEvent::Stage(_)
            | ChatEvent::Sources(_)
            | ChatEvent::QualityScore(_)
            | ChatEvent::FollowUpQuestions(_)
            | ChatEvent::ToolStarted(_)
            | ChatEvent::ToolFinished(_) => {}
        }
    }
}
