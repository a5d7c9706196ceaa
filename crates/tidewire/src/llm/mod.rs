//! Model backends: anything that streams the tokens of an answer.
//!
//! A [`Backend`] turns a [`GenerationRequest`] into a [`Generation`]: the model that
//! answers and a [`TokenStream`]. Dropping the stream cancels the generation (for an
//! HTTP upstream it closes the connection, so the model server stops). Errors in the
//! middle of a stream are items of the stream, each with a code and whether retrying
//! may help.
//!
//! - [`Extractive`]: the offline default: an answer composed from the most relevant
//!   sentences of the retrieved passages, with citations.
//! - [`Synthetic`]: deterministic text, for demos, tests and benchmarks.
//! - [`OpenAi`]: any OpenAI-compatible `/chat/completions` server (vLLM, llama.cpp,
//!   Ollama's `/v1`, hosted APIs), and [`Ollama`]: Ollama's native NDJSON API.
//! - [`Service`]: an existing answer service that returns one JSON document.
//! - [`Failover`]: retries a backend and falls back to others, as long as no token
//!   has reached a client.
//! - [`Backends`]: the configured backends by name.

mod extractive;
mod failover;
mod http;
mod ollama;
mod openai;
mod registry;
mod service;
mod synthetic;

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;
use tidewire_protocol::Usage;

pub use extractive::{Extractive, NOTHING_FOUND};
pub use failover::Failover;
pub use http::Timeouts;
pub use ollama::Ollama;
pub use openai::OpenAi;
pub use registry::{Backends, UnknownBackend};
pub use service::{Service, ServiceShape};
pub use synthetic::Synthetic;

/// Who wrote a message of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptRole {
    /// Instructions.
    System,
    /// The person.
    User,
    /// The model, earlier in the conversation.
    Assistant,
}

/// One message of the prompt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PromptMessage {
    /// Who wrote it.
    pub role: PromptRole,
    /// Its text.
    pub content: String,
    /// For the model's own messages: the tools it called with this text, and what
    /// they returned. On the wire this is the assistant message with its
    /// `tool_calls`, then one tool message per result; one message here, so
    /// trimming the history never separates a call from its result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolExchange>,
}

impl PromptMessage {
    /// A message of plain text.
    pub fn new(role: PromptRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
        }
    }
}

/// A tool the model may call, as it is described to the model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON schema of its arguments (an object schema).
    pub parameters: serde_json::Value,
}

/// A call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The call's id, given back with its result.
    pub id: String,
    /// The tool.
    pub name: String,
    /// The arguments, as the JSON text the model wrote (it may not be valid JSON).
    pub arguments: String,
}

/// A call and its result, as they go back to the model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolExchange {
    /// The call.
    pub call: ToolCall,
    /// What the tool returned (or the error), as JSON text.
    pub result: String,
}

/// A retrieved passage the answer may draw on (numbered from 1 in the prompt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    /// Where it comes from: the document's name and heading.
    pub title: String,
    /// Its text.
    pub text: String,
}

/// What to generate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationRequest {
    /// The conversation so far, the user's new message last (with the passages
    /// already written into it for models that read text).
    pub messages: Vec<PromptMessage>,
    /// The passages of the prompt, for backends that compose from them (the
    /// extractive answerer).
    pub context: Vec<Passage>,
    /// The longest answer, in tokens; `None` leaves it to the model (the synthetic
    /// backend then stops at [`BUILT_IN_MAX_TOKENS`]).
    pub max_tokens: Option<u32>,
    /// Pace for backends that simulate one (the synthetic backend); 0 = no pacing.
    pub tokens_per_second: f64,
    /// Sampling settings for backends that sample (language models).
    pub sampling: Sampling,
    /// The tools the model may call (for backends that support tools).
    pub tools: Vec<ToolSpec>,
    /// How the model must choose among `tools` (OpenAI's `tool_choice`, passed as
    /// the client gave it), when a client says.
    pub tool_choice: Option<serde_json::Value>,
}

/// The length of a synthetic answer when neither the request nor the
/// configuration sets one.
pub const BUILT_IN_MAX_TOKENS: u32 = 64;

/// How a language model samples, when the client says (OpenAI clients do); the
/// built-in backends are deterministic and leave it aside, except `stop`, which the
/// generation stage enforces for every backend.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Sampling {
    /// Temperature, 0 to 2.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, above 0 and at most 1.
    pub top_p: Option<f64>,
    /// The answer ends before the first of these.
    pub stop: Vec<String>,
    /// Penalty on tokens already present, -2 to 2.
    pub presence_penalty: Option<f64>,
    /// Penalty by how often a token appeared, -2 to 2.
    pub frequency_penalty: Option<f64>,
    /// A seed, for models that sample reproducibly.
    pub seed: Option<i64>,
}

impl Sampling {
    /// Nothing set: what every client but an OpenAI one asks for.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The settings a model server takes, by their OpenAI (and Ollama) names.
    pub fn model_parameters(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut parameters = serde_json::Map::new();
        let mut put = |name: &str, value: Option<serde_json::Value>| {
            if let Some(value) = value {
                parameters.insert(name.to_owned(), value);
            }
        };
        put("temperature", self.temperature.map(Into::into));
        put("top_p", self.top_p.map(Into::into));
        put("presence_penalty", self.presence_penalty.map(Into::into));
        put("frequency_penalty", self.frequency_penalty.map(Into::into));
        put("seed", self.seed.map(Into::into));
        put(
            "stop",
            (!self.stop.is_empty()).then(|| self.stop.clone().into()),
        );
        parameters
    }
}

impl GenerationRequest {
    /// The user's newest message: the question being answered.
    pub fn question(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == PromptRole::User)
            .map_or("", |m| m.content.as_str())
    }

    /// How many words the prompt has, for backends that count words as tokens.
    pub fn prompt_words(&self) -> u64 {
        self.messages
            .iter()
            .map(|m| m.content.split_whitespace().count() as u64)
            .sum()
    }
}

/// One item of a token stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// Text to append to the answer.
    Text(String),
    /// Token counts; the last one received wins.
    Usage(Usage),
    /// Why the model stopped (`stop`, `length`, ...).
    Finish(String),
    /// Sources the backend answered from (an answer service's own).
    Sources(Vec<tidewire_protocol::Source>),
    /// The backend's own confidence in its answer, from 0 to 1.
    Score(f64),
    /// A tool call, whole (a backend assembles streamed pieces of one).
    ToolCall(ToolCall),
}

/// A failure of a backend, before or during a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    /// A `snake_case` code, sent to clients in the `error` event.
    pub code: String,
    /// What happened, safe to show (never holds credentials).
    pub message: String,
    /// Whether asking again may succeed.
    pub retryable: bool,
    /// How long the upstream asked us to wait (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
    /// What only the log should show: library messages, the server's address.
    pub detail: Option<String>,
    /// For a timeout, the time that ran out (so retries can say what they waited).
    pub timeout: Option<std::time::Duration>,
}

impl LlmError {
    /// An error with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable,
            retry_after: None,
            detail: None,
            timeout: None,
        }
    }

    /// Adds a detail for the log, never sent to clients.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// The tokens of one answer, as they come.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<Chunk, LlmError>> + Send>>;

/// An answer being generated.
pub struct Generation {
    /// The model that answers (with failover, the one that took the request).
    pub model: String,
    /// Its tokens.
    pub stream: TokenStream,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// A model that streams answers.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The configured name of the model, reported in `metadata`.
    fn model(&self) -> &str;

    /// Whether this is a language model that follows instructions (so the pipeline
    /// may ask it to rewrite a question or suggest follow-ups); the built-in
    /// backends are not.
    fn is_language_model(&self) -> bool {
        true
    }

    /// The URL of the server behind this backend, for readiness checks (`None`
    /// for the built-in backends).
    fn endpoint(&self) -> Option<&str> {
        None
    }

    /// Whether the model can be given tools to call (OpenAI-compatible servers and
    /// Ollama can; whether the model itself uses them is up to the model).
    fn supports_tools(&self) -> bool {
        false
    }

    /// Starts generating. Returns once the model accepted the request; the answer
    /// comes through the stream.
    async fn generate(&self, request: GenerationRequest) -> Result<Generation, LlmError>;
}
