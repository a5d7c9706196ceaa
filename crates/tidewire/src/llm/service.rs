//! A backend for an existing answer service that returns one JSON document, like
//! the ML backend behind the ask pipeline of seed 001 (`POST /api/ask` `{query}`
//! answering `{response, confidence, sources}`).
//!
//! The request body is a JSON template whose strings `{query}` become the question;
//! the answer text, the confidence and the sources are read at JSON pointers of the
//! response. The text is streamed out word by word; the confidence becomes the
//! answer's `quality_score` and the sources its `sources`. The whole exchange has
//! one deadline (30 s by default, the document's), whose expiry is a retryable
//! `upstream_timeout`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tidewire_protocol::{Source, Usage};
use tokio::time::Instant;

use super::http::{self, MAX_JSON_BODY_BYTES};
use super::{Backend, Chunk, Generation, GenerationRequest, LlmError, TokenStream};

/// Where the parts of an answer are in the service's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceShape {
    /// The request body, with `{query}` where the question goes.
    pub body: Value,
    /// JSON pointer to the answer text.
    pub answer: String,
    /// JSON pointer to a confidence from 0 to 1, if the service sends one.
    pub confidence: Option<String>,
    /// JSON pointer to a list of sources, if the service sends them.
    pub sources: Option<String>,
}

impl Default for ServiceShape {
    fn default() -> Self {
        Self {
            body: serde_json::json!({"query": "{query}"}),
            answer: "/response".into(),
            confidence: Some("/confidence".into()),
            sources: Some("/sources".into()),
        }
    }
}

/// A JSON answer service.
pub struct Service {
    name: String,
    url: String,
    shape: ServiceShape,
    timeout: Duration,
    http: reqwest::Client,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service at `url`, reported as model `name`, answering within `timeout`.
    pub fn new(
        name: &str,
        url: &str,
        shape: ServiceShape,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            name: name.to_owned(),
            url: url.to_owned(),
            shape,
            timeout,
            http: reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .build()?,
        })
    }
}

#[async_trait]
impl Backend for Service {
    fn model(&self) -> &str {
        &self.name
    }

    fn endpoint(&self) -> Option<&str> {
        Some(&self.url)
    }

    fn is_language_model(&self) -> bool {
        false
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, LlmError> {
        let deadline = Instant::now() + self.timeout;
        let question = request.question().to_owned();
        let body = fill(&self.shape.body, &question);
        let exchange = async {
            let response = self
                .http
                .post(&self.url)
                .json(&body)
                .send()
                .await
                .map_err(|error| {
                    let timeouts = http::Timeouts {
                        total: self.timeout,
                        ..http::Timeouts::default()
                    };
                    http::request_error(&error, &timeouts)
                })?;
            if !response.status().is_success() {
                return Err(http::Refusal::read(response, deadline).await.error());
            }
            let (text, over) = http::read_limited(response, MAX_JSON_BODY_BYTES, deadline).await?;
            if over {
                return Err(LlmError::new(
                    "upstream_response_too_large",
                    format!("the answer service sent a body over {MAX_JSON_BODY_BYTES} bytes"),
                    false,
                ));
            }
            serde_json::from_str::<Value>(&text).map_err(|_| {
                LlmError::new(
                    "upstream_protocol_error",
                    "the answer service did not answer with JSON",
                    true,
                )
            })
        };
        let answer = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(LlmError::new(
                    "upstream_timeout",
                    format!(
                        "the answer service did not answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                    true,
                ));
            }
        };
        let Some(text) = answer.pointer(&self.shape.answer).and_then(Value::as_str) else {
            return Err(LlmError::new(
                "upstream_protocol_error",
                format!(
                    "the answer service's response has no text at {}",
                    self.shape.answer
                ),
                false,
            ));
        };
        let mut chunks: Vec<Result<Chunk, LlmError>> = Vec::new();
        if let Some(sources) = self
            .shape
            .sources
            .as_deref()
            .and_then(|at| answer.pointer(at))
        {
            chunks.push(Ok(Chunk::Sources(read_sources(sources))));
        }
        let words: Vec<String> = text
            .split_inclusive(char::is_whitespace)
            .map(str::to_owned)
            .collect();
        let completion = words.len() as u64;
        chunks.extend(words.into_iter().map(|word| Ok(Chunk::Text(word))));
        if let Some(confidence) = self
            .shape
            .confidence
            .as_deref()
            .and_then(|at| answer.pointer(at))
            .and_then(Value::as_f64)
        {
            chunks.push(Ok(Chunk::Score(confidence.clamp(0.0, 1.0))));
        }
        let prompt = question.split_whitespace().count() as u64;
        chunks.push(Ok(Chunk::Usage(Usage::new(prompt, completion))));
        chunks.push(Ok(Chunk::Finish("stop".into())));
        let stream: TokenStream = Box::pin(futures_util::stream::iter(chunks));
        Ok(Generation {
            model: self.name.clone(),
            stream,
        })
    }
}

/// The template with every string `{query}` replaced by the question.
fn fill(template: &Value, question: &str) -> Value {
    match template {
        Value::String(text) if text == "{query}" => Value::String(question.to_owned()),
        Value::String(text) => Value::String(text.replace("{query}", question)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| fill(item, question)).collect())
        }
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), fill(value, question)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Sources as services send them: strings, or objects with a name and a text under
/// their usual keys.
fn read_sources(value: &Value) -> Vec<Source> {
    let Some(items) = value.as_array() else {
        return Vec::new();
    };
    let field = |item: &Value, keys: &[&str]| {
        keys.iter()
            .find_map(|key| item.get(*key).and_then(Value::as_str))
            .map(str::to_owned)
    };
    items
        .iter()
        .enumerate()
        .map(|(n, item)| match item {
            Value::String(text) => Source {
                chunk_id: format!("service:{n}"),
                document_name: text.clone(),
                text: text.clone(),
                score: 0.0,
            },
            other => {
                let name = field(other, &["document_name", "title", "name", "source", "url"])
                    .unwrap_or_else(|| format!("source {}", n + 1));
                Source {
                    chunk_id: field(other, &["chunk_id", "id"])
                        .unwrap_or_else(|| format!("service:{n}")),
                    text: field(other, &["text", "content", "snippet"])
                        .unwrap_or_else(|| name.clone()),
                    document_name: name,
                    score: other.get("score").and_then(Value::as_f64).unwrap_or(0.0),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_template_takes_the_question_wherever_it_says_so() {
        let template = json!({"query": "{query}", "meta": {"q": "about {query}"}, "n": 3});
        assert_eq!(
            fill(&template, "tides"),
            json!({"query": "tides", "meta": {"q": "about tides"}, "n": 3})
        );
    }

    #[test]
    fn sources_are_read_from_strings_and_objects() {
        let sources =
            read_sources(&json!(["doc-a", {"title": "B", "content": "text b", "score": 0.5}]));
        assert_eq!(sources[0].document_name, "doc-a");
        assert_eq!(sources[1].document_name, "B");
        assert_eq!(sources[1].text, "text b");
        assert_eq!(sources[1].score, 0.5);
    }
}
