//! Ollama's native API: `POST {url}/api/chat`, answered with one JSON object per line
//! (NDJSON) until an object with `"done": true`.

use std::collections::VecDeque;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::http::{self, Timeouts};
use super::{Backend, Chunk, Generation, GenerationRequest, LlmError, PromptRole, TokenStream};

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

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, LlmError> {
        let started = Instant::now();
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    PromptRole::System => "system",
                    PromptRole::User => "user",
                    PromptRole::Assistant => "assistant",
                };
                json!({"role": role, "content": m.content})
            })
            .collect();
        let body = json!({
            "model": self.model,
            "messages": messages,
            "stream": true,
            "options": {"num_predict": request.max_tokens},
        });
        let send = self.http.post(&self.endpoint).json(&body).send();
        let response =
            match tokio::time::timeout_at(started + self.timeouts.first_token, send).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => return Err(http::request_error(&error, &self.timeouts)),
                Err(_) => {
                    return Err(http::timeout_error(
                        "first_token",
                        self.timeouts.first_token,
                        true,
                    ));
                }
            };
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let retry_after = http::retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            return Err(http::status_error(status, &text, retry_after));
        }
        let lines = Lines {
            body: response.bytes_stream().boxed(),
            buffer: BytesMut::new(),
            scanned: 0,
            pending: VecDeque::new(),
            ended: false,
        };
        let stream: TokenStream = Box::pin(lines.into_stream());
        Ok(Generation {
            model: self.model.clone(),
            stream: http::with_timeouts(stream, self.timeouts, started),
        })
    }
}

/// The chunks of an NDJSON body.
struct Lines {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: BytesMut,
    /// Bytes of `buffer` known to hold no newline, so a long line is scanned once.
    scanned: usize,
    pending: VecDeque<Result<Chunk, LlmError>>,
    /// `done`, an error or the end of the body was seen: nothing more is read.
    ended: bool,
}

impl Lines {
    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Chunk, LlmError>> + Send {
        futures_util::stream::unfold(self, |mut this| async move {
            loop {
                if let Some(item) = this.pending.pop_front() {
                    return Some((item, this));
                }
                if this.ended {
                    return None;
                }
                match this.body.next().await {
                    Some(Ok(bytes)) => {
                        this.buffer.extend_from_slice(&bytes);
                        this.read_lines();
                    }
                    Some(Err(error)) => this.end_with(Err(http::body_error(&error))),
                    None => {
                        // The last line may lack its newline.
                        if !this.buffer.is_empty() {
                            let line = this.buffer.split().freeze();
                            this.read_line(&line);
                        }
                        if !this.ended {
                            this.end_with(Err(http::incomplete()));
                        }
                    }
                }
            }
        })
    }

    fn end_with(&mut self, item: Result<Chunk, LlmError>) {
        self.pending.push_back(item);
        self.ended = true;
    }

    fn read_lines(&mut self) {
        while !self.ended {
            let Some(end) =
                memchr::memchr(b'\n', &self.buffer[self.scanned..]).map(|at| at + self.scanned)
            else {
                self.scanned = self.buffer.len();
                if self.buffer.len() > MAX_LINE {
                    let error = LlmError::new(
                        "upstream_protocol_error",
                        format!("a line from the model server is longer than {MAX_LINE} bytes"),
                        true,
                    );
                    self.end_with(Err(error));
                }
                return;
            };
            let line = self.buffer.split_to(end).freeze();
            self.buffer.advance(1);
            self.scanned = 0;
            self.read_line(&line);
        }
    }

    fn read_line(&mut self, line: &[u8]) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        let value: Value = match serde_json::from_slice(line) {
            Ok(value) => value,
            Err(_) => {
                tracing::warn!("skipping a malformed line from the model server");
                return;
            }
        };
        if let Some(error) = http::stream_error(&value) {
            self.end_with(Err(error));
            return;
        }
        // `thinking` is the model's reasoning, not the answer.
        if let Some(text) = value["message"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            self.pending.push_back(Ok(Chunk::Text(text.to_owned())));
        }
        if value["done"].as_bool() == Some(true) {
            if let Some(reason) = value["done_reason"].as_str() {
                self.pending.push_back(Ok(Chunk::Finish(reason.to_owned())));
            }
            if let Some(prompt) = value["prompt_eval_count"].as_u64() {
                let completion = value["eval_count"].as_u64().unwrap_or(0);
                self.pending
                    .push_back(Ok(Chunk::Usage(tidewire_protocol::Usage::new(
                        prompt, completion,
                    ))));
            }
            self.ended = true;
        }
    }
}
