//! OpenAI-compatible upstreams: `POST {url}/chat/completions` with `stream: true`,
//! read with tidewire-sse, tolerant of what real servers send (vLLM, llama.cpp's
//! server, Ollama's `/v1`, TGI, hosted APIs).

use std::collections::VecDeque;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::http::{self, BodyParser, Timeouts};
use super::{Backend, Chunk, Generation, GenerationRequest, LlmError, TokenStream, ToolCall};

/// An OpenAI-compatible chat completions server.
pub struct OpenAi {
    model: String,
    endpoint: String,
    api_key: Option<String>,
    http: reqwest::Client,
    timeouts: Timeouts,
    limits: tidewire_sse::Limits,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("OpenAi")
            .field("model", &self.model)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    /// A backend for `model` at `base_url` (ending before `/chat/completions`, such
    /// as `http://127.0.0.1:11434/v1`).
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        timeouts: Timeouts,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .build()?;
        Ok(Self {
            model: model.to_owned(),
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            http,
            timeouts,
            limits: tidewire_sse::Limits::default(),
        })
    }

    fn body(&self, request: &GenerationRequest, include_usage: bool) -> Value {
        let messages = http::messages_json(&request.messages, http::Arguments::Text);
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": true,
        });
        if let Some(max_tokens) = request.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        if !request.tools.is_empty() {
            body["tools"] = http::tools_json(&request.tools);
            if let Some(choice) = &request.tool_choice {
                body["tool_choice"] = choice.clone();
            }
        }
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(fields) = body.as_object_mut() {
            fields.extend(request.sampling.model_parameters());
        }
        body
    }
}

#[async_trait]
impl Backend for OpenAi {
    fn model(&self) -> &str {
        &self.model
    }

    fn endpoint(&self) -> Option<&str> {
        Some(&self.endpoint)
    }

    fn supports_tools(&self) -> bool {
        true
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, LlmError> {
        let started = Instant::now();
        // Ask for usage; a server that refuses `stream_options` gets the request again
        // without it, once.
        let mut include_usage = true;
        let response = loop {
            let mut post = self
                .http
                .post(&self.endpoint)
                .json(&self.body(&request, include_usage));
            if let Some(key) = &self.api_key {
                post = post.bearer_auth(key);
            }
            let response = http::send(post, started, &self.timeouts).await?;
            if response.status().is_success() {
                break response;
            }
            let refusal = http::Refusal::read(response, started + self.timeouts.first_token).await;
            if include_usage
                && matches!(refusal.status, 400 | 422)
                && refusal.text.contains("stream_options")
            {
                tracing::debug!(model = %self.model, "the server refused stream_options; asking without");
                include_usage = false;
                continue;
            }
            return Err(refusal.error());
        };
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let stream: TokenStream = if is_json {
            // A JSON error with no SSE framing, or the whole answer from a server that
            // ignored `stream: true`.
            let deadline = started + self.timeouts.total;
            let (text, over) =
                http::read_limited(response, http::MAX_JSON_BODY_BYTES, deadline).await?;
            if over {
                return Err(LlmError::new(
                    "upstream_response_too_large",
                    format!(
                        "the model server sent a JSON body over {} bytes",
                        http::MAX_JSON_BODY_BYTES
                    ),
                    false,
                ));
            }
            Box::pin(futures_util::stream::iter(whole_body(&text)))
        } else {
            // Anything else is read as an event stream, whatever its Content-Type says.
            let parser = SseBody {
                decoder: tidewire_sse::Decoder::with_limits(self.limits).field_as_event("error"),
                finish_seen: false,
                tool_calls: ToolCalls::default(),
            };
            http::parse_body(response.bytes_stream().boxed(), parser)
        };
        Ok(Generation {
            model: self.model.clone(),
            stream: http::with_timeouts(stream, self.timeouts, started),
        })
    }
}

/// A body that is one JSON document: an error, or a complete answer.
fn whole_body(text: &str) -> Vec<Result<Chunk, LlmError>> {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return vec![Err(LlmError::new(
            "upstream_protocol_error",
            "the model server answered with neither an event stream nor JSON",
            true,
        ))];
    };
    if let Some(error) = http::stream_error(&value) {
        return vec![Err(error)];
    }
    let choice = &value["choices"][0];
    let mut chunks = Vec::new();
    if let Some(content) = choice["message"]["content"].as_str() {
        chunks.push(Ok(Chunk::Text(content.to_owned())));
    }
    if let Some(calls) = choice["message"]["tool_calls"].as_array() {
        let mut assembly = ToolCalls::default();
        for (index, call) in calls.iter().enumerate() {
            assembly.push(index as u64, call);
        }
        chunks.extend(assembly.finish().map(Ok));
    }
    if let Some(reason) = choice["finish_reason"].as_str() {
        chunks.push(Ok(Chunk::Finish(reason.to_owned())));
    }
    if let Some(usage) = http::usage(&value["usage"]) {
        chunks.push(Ok(Chunk::Usage(usage)));
    }
    if chunks.is_empty() {
        chunks.push(Err(LlmError::new(
            "upstream_protocol_error",
            "the model server's JSON answer holds no message",
            true,
        )));
    }
    chunks
}

/// An OpenAI-style event stream, read as it comes.
struct SseBody {
    decoder: tidewire_sse::Decoder,
    finish_seen: bool,
    tool_calls: ToolCalls,
}

/// Tool calls being assembled from their streamed pieces: the first piece of a
/// call (by its `index`) has its id and name, the arguments come as text in pieces.
#[derive(Default)]
struct ToolCalls {
    calls: Vec<(u64, ToolCall)>,
}

impl ToolCalls {
    fn push(&mut self, index: u64, piece: &Value) {
        let function = &piece["function"];
        let at = match self.calls.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                self.calls.push((
                    index,
                    ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    },
                ));
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[at].1;
        if let Some(id) = piece["id"].as_str().filter(|id| !id.is_empty()) {
            id.clone_into(&mut call.id);
        }
        if let Some(name) = function["name"].as_str() {
            call.name.push_str(name);
        }
        match &function["arguments"] {
            Value::String(text) => call.arguments.push_str(text),
            // Some servers send the arguments as an object.
            Value::Object(_) => call.arguments = function["arguments"].to_string(),
            _ => {}
        }
    }

    /// The whole calls, in order; a call without a name is dropped, one without an
    /// id gets one.
    fn finish(&mut self) -> impl Iterator<Item = Chunk> + use<> {
        let mut calls = std::mem::take(&mut self.calls);
        calls.sort_by_key(|(index, _)| *index);
        calls
            .into_iter()
            .map(|(_, call)| call)
            .filter(|call| !call.name.is_empty())
            .map(|mut call| {
                if call.id.is_empty() {
                    call.id = format!("call_{}", uuid::Uuid::now_v7().simple());
                }
                Chunk::ToolCall(call)
            })
    }
}

impl BodyParser for SseBody {
    fn push(&mut self, bytes: &[u8], out: &mut VecDeque<Result<Chunk, LlmError>>) -> bool {
        self.decoder.push(bytes);
        while let Some(next) = self.decoder.next_owned() {
            let event = match next {
                Ok(event) => event,
                Err(error) => {
                    let message = format!("the model server's stream is malformed: {error}");
                    out.push_back(Err(LlmError::new("upstream_protocol_error", message, true)));
                    return true;
                }
            };
            let is_error = event.event() == "error";
            let data = event.data().trim();
            if data == "[DONE]" {
                self.finish_seen = true;
                out.extend(self.tool_calls.finish().map(Ok));
                return true;
            }
            let value: Value = match serde_json::from_str(data) {
                Ok(value) => value,
                Err(_) if is_error => {
                    let message = format!("the model server reported an error: {data}");
                    out.push_back(Err(LlmError::new("upstream_error", message, true)));
                    return true;
                }
                Err(_) => {
                    // A line that is not JSON (a proxy's junk, a truncated chunk) is
                    // skipped, not fatal: the answer around it is still good.
                    let line: String = data.chars().take(120).collect();
                    tracing::warn!(%line, "skipping a malformed line from the model server");
                    continue;
                }
            };
            if let Some(error) = http::stream_error(&value) {
                out.push_back(Err(error));
                return true;
            }
            if is_error {
                let message = format!("the model server reported an error: {value}");
                out.push_back(Err(LlmError::new("upstream_error", message, true)));
                return true;
            }
            self.read_chunk(&value, out);
        }
        false
    }

    /// An end of body without a finish reason or `[DONE]` is an incomplete answer,
    /// not a success.
    fn end(&mut self, out: &mut VecDeque<Result<Chunk, LlmError>>) {
        if !self.finish_seen {
            // Calls cut short are not run.
            self.tool_calls = ToolCalls::default();
            out.push_back(Err(http::incomplete()));
        }
    }
}

impl SseBody {
    /// Text, tool calls, finish reason and usage of one chunk; reasoning and unknown
    /// fields are not part of the answer.
    fn read_chunk(&mut self, value: &Value, out: &mut VecDeque<Result<Chunk, LlmError>>) {
        if let Some(choice) = value
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            let delta = &choice["delta"];
            for field in ["content", "refusal"] {
                if let Some(text) = delta[field].as_str().filter(|t| !t.is_empty()) {
                    out.push_back(Ok(Chunk::Text(text.to_owned())));
                }
            }
            if let Some(pieces) = delta["tool_calls"].as_array() {
                for (position, piece) in pieces.iter().enumerate() {
                    let index = piece["index"].as_u64().unwrap_or(position as u64);
                    self.tool_calls.push(index, piece);
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_seen = true;
                out.extend(self.tool_calls.finish().map(Ok));
                out.push_back(Ok(Chunk::Finish(reason.to_owned())));
            }
        }
        if let Some(usage) = value.get("usage").and_then(http::usage) {
            out.push_back(Ok(Chunk::Usage(usage)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Vec<Result<Chunk, LlmError>> {
        let mut parser = SseBody {
            decoder: tidewire_sse::Decoder::new(),
            finish_seen: false,
            tool_calls: ToolCalls::default(),
        };
        let mut out = VecDeque::new();
        // One byte at a time: pieces may split anywhere.
        for byte in body.as_bytes() {
            if parser.push(std::slice::from_ref(byte), &mut out) {
                break;
            }
        }
        out.into_iter().collect()
    }

    fn frame(value: Value) -> String {
        format!("data: {value}\n\n")
    }

    #[test]
    fn streamed_tool_calls_are_assembled_by_index_before_the_finish() {
        let body = [
            frame(json!({"choices": [{"delta": {"tool_calls": [
                {"index": 1, "id": "b", "function": {"name": "second", "arguments": ""}},
                {"index": 0, "id": "a", "function": {"name": "first", "arguments": "{\"x\""}}]}}]})),
            frame(json!({"choices": [{"delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": ": 1}"}},
                {"index": 1, "function": {"arguments": "{}"}}]}}]})),
            frame(json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let chunks = parse(&body);
        assert_eq!(
            chunks,
            [
                Ok(Chunk::ToolCall(ToolCall {
                    id: "a".into(),
                    name: "first".into(),
                    arguments: "{\"x\": 1}".into()
                })),
                Ok(Chunk::ToolCall(ToolCall {
                    id: "b".into(),
                    name: "second".into(),
                    arguments: "{}".into()
                })),
                Ok(Chunk::Finish("tool_calls".into())),
            ]
        );
    }

    #[test]
    fn a_call_without_an_id_gets_one_and_object_arguments_are_kept_as_json() {
        let body = [
            frame(json!({"choices": [{"delta": {"tool_calls": [
                {"index": 0, "function": {"name": "f", "arguments": {"k": "v"}}}]}}]})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let chunks = parse(&body);
        let Some(Ok(Chunk::ToolCall(call))) = chunks.first() else {
            panic!("{chunks:?}");
        };
        assert!(call.id.starts_with("call_"));
        assert_eq!(call.arguments, r#"{"k":"v"}"#);
    }

    #[test]
    fn a_whole_json_answer_with_tool_calls_is_read() {
        let body = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "type": "function",
                            "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}]});
        let chunks = whole_body(&body.to_string());
        assert_eq!(
            chunks[0],
            Ok(Chunk::ToolCall(ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: "{}".into()
            }))
        );
        assert_eq!(chunks[1], Ok(Chunk::Finish("tool_calls".into())));
    }
}
