//! Ollama's native API: `POST {url}/api/chat`, answered with one JSON object per line
//! (NDJSON) until an object with `"done": true`.

use std::collections::VecDeque;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::http::{self, BodyParser, Timeouts};
use super::{Backend, Chunk, Generation, GenerationRequest, LlmError, ToolCall};

/// The longest NDJSON line accepted; longer is a broken stream, not a reason to
/// grow memory.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// An Ollama server.
#[derive(Debug)]
pub struct Ollama {
    model: String,
    endpoint: String,
    http: reqwest::Client,
    timeouts: Timeouts,
}

impl Ollama {
    /// A backend for `model` on the Ollama server at `base_url`
    /// (`http://127.0.0.1:11434`).
    pub fn new(base_url: &str, model: &str, timeouts: Timeouts) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .build()?;
        Ok(Self {
            model: model.to_owned(),
            endpoint: format!("{}/api/chat", base_url.trim_end_matches('/')),
            http,
            timeouts,
        })
    }
}

#[async_trait]
impl Backend for Ollama {
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
        let messages = http::messages_json(&request.messages, http::Arguments::Object);
        let mut options = request.sampling.model_parameters();
        if let Some(max_tokens) = request.max_tokens {
            options.insert("num_predict".into(), max_tokens.into());
        }
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": true,
            "options": options,
        });
        if !request.tools.is_empty() {
            body["tools"] = http::tools_json(&request.tools);
        }
        let response = http::send(
            self.http.post(&self.endpoint).json(&body),
            started,
            &self.timeouts,
        )
        .await?;
        if !response.status().is_success() {
            return Err(
                http::Refusal::read(response, started + self.timeouts.first_token)
                    .await
                    .error(),
            );
        }
        let parser = Ndjson {
            buffer: BytesMut::new(),
            scanned: 0,
        };
        let stream = http::parse_body(response.bytes_stream().boxed(), parser);
        Ok(Generation {
            model: self.model.clone(),
            stream: http::with_timeouts(stream, self.timeouts, started),
        })
    }
}

/// An NDJSON body, read as it comes.
struct Ndjson {
    buffer: BytesMut,
    /// Bytes of `buffer` known to hold no newline, so a long line is scanned once.
    scanned: usize,
}

impl BodyParser for Ndjson {
    fn push(&mut self, bytes: &[u8], out: &mut VecDeque<Result<Chunk, LlmError>>) -> bool {
        self.buffer.extend_from_slice(bytes);
        loop {
            let newline =
                memchr::memchr(b'\n', &self.buffer[self.scanned..]).map(|at| at + self.scanned);
            let Some(end) = newline else {
                self.scanned = self.buffer.len();
                if self.buffer.len() > MAX_LINE {
                    let message =
                        format!("a line from the model server is longer than {MAX_LINE} bytes");
                    out.push_back(Err(LlmError::new("upstream_protocol_error", message, true)));
                    return true;
                }
                return false;
            };
            let line = self.buffer.split_to(end).freeze();
            self.buffer.advance(1);
            self.scanned = 0;
            if read_line(&line, out) {
                return true;
            }
        }
    }

    fn end(&mut self, out: &mut VecDeque<Result<Chunk, LlmError>>) {
        // The last line may lack its newline.
        let last = self.buffer.split().freeze();
        if !read_line(&last, out) {
            out.push_back(Err(http::incomplete()));
        }
    }
}

/// Reads one line; returns `true` if the answer ended with it (`done`, or an error).
fn read_line(line: &[u8], out: &mut VecDeque<Result<Chunk, LlmError>>) -> bool {
    let line = line.trim_ascii();
    if line.is_empty() {
        return false;
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(_) => {
            tracing::warn!("skipping a malformed line from the model server");
            return false;
        }
    };
    if let Some(error) = http::stream_error(&value) {
        out.push_back(Err(error));
        return true;
    }
    // `thinking` is the model's reasoning, not the answer.
    if let Some(text) = value["message"]["content"]
        .as_str()
        .filter(|t| !t.is_empty())
    {
        out.push_back(Ok(Chunk::Text(text.to_owned())));
    }
    // Ollama sends each call whole, with its arguments as an object and no id.
    if let Some(calls) = value["message"]["tool_calls"].as_array() {
        for call in calls {
            let function = &call["function"];
            let Some(name) = function["name"].as_str() else {
                continue;
            };
            let id = call["id"].as_str().map_or_else(
                || format!("call_{}", uuid::Uuid::now_v7().simple()),
                str::to_owned,
            );
            out.push_back(Ok(Chunk::ToolCall(ToolCall {
                id,
                name: name.to_owned(),
                arguments: function["arguments"].to_string(),
            })));
        }
    }
    if value["done"].as_bool() != Some(true) {
        return false;
    }
    if let Some(reason) = value["done_reason"].as_str() {
        out.push_back(Ok(Chunk::Finish(reason.to_owned())));
    }
    if let Some(prompt) = value["prompt_eval_count"].as_u64() {
        let completion = value["eval_count"].as_u64().unwrap_or(0);
        out.push_back(Ok(Chunk::Usage(tidewire_protocol::Usage::new(
            prompt, completion,
        ))));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_come_whole_with_object_arguments() {
        let line = br#"{"message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Oslo"}}}]}, "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 2}"#;
        let mut out = VecDeque::new();
        assert!(read_line(line, &mut out));
        let Some(Ok(Chunk::ToolCall(call))) = out.pop_front() else {
            panic!("no tool call");
        };
        assert_eq!(call.name, "weather");
        assert_eq!(call.arguments, r#"{"city":"Oslo"}"#);
        assert!(call.id.starts_with("call_"));
    }

    #[test]
    fn calls_and_results_go_back_in_ollama_s_shape() {
        use crate::llm::{PromptMessage, PromptRole, ToolExchange};
        let message = PromptMessage {
            role: PromptRole::Assistant,
            content: String::new(),
            tool_calls: vec![ToolExchange {
                call: ToolCall {
                    id: "c1".into(),
                    name: "weather".into(),
                    arguments: r#"{"city":"Oslo"}"#.into(),
                },
                result: r#"{"temperature":21}"#.into(),
            }],
        };
        let json = http::messages_json(&[message], http::Arguments::Object);
        assert_eq!(
            json,
            json!([
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
                {"role": "tool", "tool_call_id": "c1", "tool_name": "weather",
                 "content": "{\"temperature\":21}"}
            ])
        );
    }
}
