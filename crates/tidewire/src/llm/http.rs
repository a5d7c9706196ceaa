//! What the HTTP upstreams share: their timeouts, the error shapes real servers
//! send, and `Retry-After`.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Chunk, LlmError, PromptMessage, PromptRole, TokenStream};

/// How a model server takes the arguments of a tool call it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arguments {
    /// As the JSON text (OpenAI).
    Text,
    /// As a JSON object (Ollama's native API).
    Object,
}

/// The messages of a request body, as OpenAI and Ollama both take them: a message
/// with tool calls becomes the assistant's message with its `tool_calls`, then one
/// `tool` message per result.
pub fn messages_json(messages: &[PromptMessage], arguments: Arguments) -> Value {
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let role = match m.role {
            PromptRole::System => "system",
            PromptRole::User => "user",
            PromptRole::Assistant => "assistant",
        };
        if m.tool_calls.is_empty() {
            out.push(json!({"role": role, "content": m.content}));
            continue;
        }
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|exchange| {
                let call = &exchange.call;
                let arguments = match arguments {
                    Arguments::Text => Value::String(call.arguments.clone()),
                    // A model that wrote invalid JSON gets an empty object back.
                    Arguments::Object => serde_json::from_str::<Value>(&call.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({})),
                };
                json!({"id": call.id, "type": "function",
                       "function": {"name": call.name, "arguments": arguments}})
            })
            .collect();
        let content = if m.content.is_empty() {
            Value::Null
        } else {
            Value::String(m.content.clone())
        };
        out.push(json!({"role": role, "content": content, "tool_calls": calls}));
        for exchange in &m.tool_calls {
            let mut result = json!({"role": "tool", "tool_call_id": exchange.call.id,
                                    "content": exchange.result});
            // Ollama matches results by name; OpenAI refuses fields it does not know.
            if arguments == Arguments::Object {
                result["tool_name"] = json!(exchange.call.name);
            }
            out.push(result);
        }
    }
    Value::Array(out)
}

/// The tools of a request body, as OpenAI and Ollama both take them.
pub fn tools_json(tools: &[super::ToolSpec]) -> Value {
    tools
        .iter()
        .map(|tool| {
            json!({"type": "function", "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            }})
        })
        .collect()
}

/// Reads a streamed response body into chunks as its bytes arrive.
pub trait BodyParser: Send + 'static {
    /// Reads `bytes`, pushing what they complete to `out`. Returns `true` once the
    /// answer ended (its end marker or an error): nothing more is read.
    fn push(&mut self, bytes: &[u8], out: &mut VecDeque<Result<Chunk, LlmError>>) -> bool;

    /// The body ended before the answer did: pushes what that means.
    fn end(&mut self, out: &mut VecDeque<Result<Chunk, LlmError>>);
}

/// The chunks of `body`, read by `parser`; a broken connection is the last item.
pub fn parse_body(
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: impl BodyParser,
) -> TokenStream {
    let state = (body, parser, VecDeque::new(), false);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut body, mut parser, mut pending, mut ended)| async move {
            loop {
                if let Some(item) = pending.pop_front() {
                    return Some((item, (body, parser, pending, ended)));
                }
                if ended {
                    return None;
                }
                match body.next().await {
                    Some(Ok(bytes)) => ended = parser.push(&bytes, &mut pending),
                    Some(Err(error)) => {
                        pending.push_back(Err(body_error(&error)));
                        ended = true;
                    }
                    None => {
                        parser.end(&mut pending);
                        ended = true;
                    }
                }
            }
        },
    ))
}

/// Timeouts of one upstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open the TCP (and TLS) connection.
    pub connect: Duration,
    /// From the request to the first token.
    pub first_token: Duration,
    /// Between two items of the stream, once it started.
    pub idle: Duration,
    /// For the whole answer.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(600),
        }
    }
}

/// The error of an expired timeout: its own code, retryable only before the first
/// token (after it, retrying would repeat text).
pub fn timeout_error(which: &str, after: Duration, before_first_token: bool) -> LlmError {
    let mut error = LlmError::new(
        format!("upstream_{which}_timeout"),
        format!(
            "the model server did not {} within {}",
            match which {
                "connect" => "accept the connection",
                "first_token" => "send a first token",
                "idle" => "send anything more",
                _ => "finish the answer",
            },
            humantime::format_duration(after)
        ),
        before_first_token,
    );
    error.timeout = Some(after);
    error
}

/// Applies the first-token, idle and total timeouts to a stream that started at
/// `started`. An expiry is the stream's last item.
pub fn with_timeouts(stream: TokenStream, timeouts: Timeouts, started: Instant) -> TokenStream {
    struct State {
        inner: TokenStream,
        seen_text: bool,
        done: bool,
    }
    let state = State {
        inner: stream,
        seen_text: false,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut state| async move {
            if state.done {
                return None;
            }
            let total = started + timeouts.total;
            let (deadline, which) = if state.seen_text {
                (Instant::now() + timeouts.idle, "idle")
            } else {
                (started + timeouts.first_token, "first_token")
            };
            let (deadline, which, after) = if total <= deadline {
                (total, "total", timeouts.total)
            } else if which == "idle" {
                (deadline, which, timeouts.idle)
            } else {
                (deadline, which, timeouts.first_token)
            };
            match tokio::time::timeout_at(deadline, state.inner.next()).await {
                Ok(Some(Ok(chunk))) => {
                    if matches!(&chunk, Chunk::Text(text) if !text.is_empty()) {
                        state.seen_text = true;
                    }
                    Some((Ok(chunk), state))
                }
                Ok(Some(Err(error))) => {
                    state.done = true;
                    Some((Err(error), state))
                }
                Ok(None) => None,
                Err(_) => {
                    state.done = true;
                    let error = timeout_error(which, after, !state.seen_text);
                    Some((Err(error), state))
                }
            }
        },
    ))
}

/// Sends `request` within the first-token deadline of a generation that started at
/// `started`.
pub async fn send(
    request: reqwest::RequestBuilder,
    started: Instant,
    timeouts: &Timeouts,
) -> Result<reqwest::Response, LlmError> {
    match tokio::time::timeout_at(started + timeouts.first_token, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(request_error(&error, timeouts)),
        Err(_) => Err(timeout_error("first_token", timeouts.first_token, true)),
    }
}

/// The most of a refusal's body that is read: enough for any error message, and
/// a server that sends an endless body cannot hold the run.
const MAX_REFUSAL_BYTES: usize = 64 * 1024;

/// The most of a non-streamed JSON body that is read.
pub const MAX_JSON_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Reads at most `limit` bytes of a body, until `deadline`. Returns the text and
/// whether the body was longer (then the rest is left unread); a broken body or a
/// passed deadline ends the read with what arrived.
pub async fn read_limited(
    response: reqwest::Response,
    limit: usize,
    deadline: Instant,
) -> Result<(String, bool), LlmError> {
    let mut body = response.bytes_stream();
    let mut bytes = Vec::new();
    let mut over = false;
    let read = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| body_error(&error))?;
            let room = limit - bytes.len();
            if chunk.len() > room {
                bytes.extend_from_slice(&chunk[..room]);
                over = true;
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok::<(), LlmError>(())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(result) => result?,
        Err(_) => tracing::debug!("the model server's body did not end in time; using its start"),
    }
    Ok((String::from_utf8_lossy(&bytes).into_owned(), over))
}

/// A response with an error status, read.
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The start of the body.
    pub text: String,
    /// Its `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    /// Reads a refused response: its first 64 KiB, until `deadline`.
    pub async fn read(response: reqwest::Response, deadline: Instant) -> Self {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let text = read_limited(response, MAX_REFUSAL_BYTES, deadline)
            .await
            .map(|(text, _)| text)
            .unwrap_or_default();
        Self {
            status,
            text,
            retry_after,
        }
    }

    /// What the refusal means.
    pub fn error(&self) -> LlmError {
        status_error(self.status, &self.text, self.retry_after)
    }
}

/// The error of a refused request, from its status and body.
pub fn status_error(status: u16, body: &str, retry_after: Option<Duration>) -> LlmError {
    let (code, retryable) = match status {
        401 | 403 => ("upstream_auth_failed", false),
        404 => ("upstream_not_found", false),
        408 => ("upstream_timeout", true),
        429 => ("upstream_rate_limited", true),
        400 | 413 | 422 => ("upstream_bad_request", false),
        500..=599 => ("upstream_unavailable", true),
        _ => ("upstream_error", false),
    };
    let detail = match serde_json::from_str::<Value>(body) {
        Ok(value) => error_detail(&value).unwrap_or_else(|| short(body)),
        Err(_) => short(body),
    };
    let mut error = LlmError::new(
        code,
        format!("the model server answered HTTP {status}: {detail}"),
        retryable,
    );
    error.retry_after = retry_after;
    error
}

/// An error the model server sent inside a stream (after HTTP 200), in any of the
/// known shapes: `{"error": {"message", "type", "code"}}` (OpenAI, vLLM, llama.cpp),
/// `{"error": "...", "error_type": "..."}` (TGI), `{"error": "..."}` (Ollama).
/// `None` if `value` is not an error.
pub fn stream_error(value: &Value) -> Option<LlmError> {
    let detail = error_detail(value)?;
    Some(LlmError::new(
        "upstream_error",
        format!("the model server reported an error: {detail}"),
        true,
    ))
}

/// The human part of an error object, with its type when there is one.
fn error_detail(value: &Value) -> Option<String> {
    let error = value.get("error")?;
    let (message, kind) = match error {
        Value::String(message) => (
            message.clone(),
            value
                .get("error_type")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        Value::Object(object) => (
            object
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| short(&error.to_string()), str::to_owned),
            object
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    object
                        .get("code")
                        .map(|c| c.to_string().trim_matches('"').to_owned())
                }),
        ),
        Value::Null => return None,
        other => (short(&other.to_string()), None),
    };
    Some(match kind {
        Some(kind) if !kind.is_empty() => format!("{message} ({kind})"),
        _ => message,
    })
}

/// At most 300 characters of an upstream text, for an error message.
fn short(text: &str) -> String {
    const MAX: usize = 300;
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty body)".to_owned(),
        None => text.to_owned(),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from model servers and read
/// as absent).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The error of a request that failed before any answer (connection refused, reset,
/// connect timeout). The client gets a clean message; reqwest's (which names the
/// server's URL) goes to the log only.
pub fn request_error(error: &reqwest::Error, timeouts: &Timeouts) -> LlmError {
    if error.is_connect() && error.is_timeout() {
        return timeout_error("connect", timeouts.connect, true).with_detail(chain(error));
    }
    let (code, message) = if error.is_connect() {
        ("upstream_unreachable", "cannot reach the model server")
    } else {
        (
            "upstream_connection_failed",
            "the request to the model server failed",
        )
    };
    LlmError::new(code, message, true).with_detail(chain(error))
}

/// An error and its causes, on one line, for the log.
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The stream broke: the connection dropped or the body could not be read.
pub fn body_error(error: &reqwest::Error) -> LlmError {
    LlmError::new(
        "upstream_disconnected",
        "the connection to the model server broke",
        true,
    )
    .with_detail(chain(error))
}

/// The body ended without the end-of-answer marker: the answer is incomplete.
pub fn incomplete() -> LlmError {
    LlmError::new(
        "upstream_incomplete",
        "the model server closed the stream before the answer was finished",
        true,
    )
}

/// Token counts from an OpenAI-style `usage` object.
pub fn usage(value: &Value) -> Option<tidewire_protocol::Usage> {
    let prompt = value.get("prompt_tokens")?.as_u64()?;
    let completion = value
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(tidewire_protocol::Usage::new(prompt, completion))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_known_error_shape_is_read() {
        let openai =
            json!({"error": {"message": "model overloaded", "type": "server_error", "code": null}});
        assert!(
            stream_error(&openai)
                .unwrap()
                .message
                .contains("model overloaded (server_error)")
        );
        let tgi = json!({"error": "Input validation error", "error_type": "validation"});
        assert!(
            stream_error(&tgi)
                .unwrap()
                .message
                .contains("Input validation error (validation)")
        );
        let ollama = json!({"error": "model 'x' not found"});
        assert!(
            stream_error(&ollama)
                .unwrap()
                .message
                .contains("model 'x' not found")
        );
        assert!(stream_error(&json!({"choices": []})).is_none());
        assert!(stream_error(&json!({"error": null})).is_none());
    }

    #[test]
    fn statuses_map_to_codes() {
        let error = status_error(
            429,
            "{\"error\":{\"message\":\"slow down\"}}",
            Some(Duration::from_secs(2)),
        );
        assert_eq!(error.code, "upstream_rate_limited");
        assert!(error.retryable);
        assert_eq!(error.retry_after, Some(Duration::from_secs(2)));
        assert!(error.message.contains("slow down"));
        let error = status_error(401, "<html>denied</html>", None);
        assert_eq!(error.code, "upstream_auth_failed");
        assert!(!error.retryable);
        assert!(status_error(503, "", None).retryable);
        assert!(status_error(503, "", None).message.contains("(empty body)"));
    }
}
