//! Model backends: anything that streams the tokens of an answer.
//!
//! A [`Backend`] turns a [`GenerationRequest`] into a [`TokenStream`]. Dropping the
//! stream cancels the generation (for an HTTP upstream it closes the connection, so
//! the model server stops). Errors in the middle of a stream are items of the stream;
//! timeouts between items are applied by the caller, the same for every backend.

mod synthetic;

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;
use tidewire_protocol::Usage;

pub use synthetic::Synthetic;

/// Who wrote a message of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptRole {
    /// Instructions.
    System,
    /// The person.
    User,
    /// The model, earlier in the conversation.
    Assistant,
}

/// One message of the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptMessage {
    /// Who wrote it.
    pub role: PromptRole,
    /// Its text.
    pub content: String,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The conversation so far, the user's new message last.
    pub messages: Vec<PromptMessage>,
    /// The longest answer, in tokens.
    pub max_tokens: u32,
    /// Pace for backends that simulate one (the synthetic backend); 0 = no pacing.
    pub tokens_per_second: f64,
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
}

impl LlmError {
    /// An error with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable,
        }
    }
}

/// The tokens of one answer, as they come.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<Chunk, LlmError>> + Send>>;

/// A model that streams answers.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The model's name, reported in `metadata`.
    fn model(&self) -> &str;

    /// Starts generating. Returns once the model accepted the request; the answer
    /// comes through the stream.
    async fn generate(&self, request: GenerationRequest) -> Result<TokenStream, LlmError>;
}
