//! The answer pipeline: turns one run request into the events of its answer
//! (stages, tokens, metadata, errors), driving a model backend.
//!
//! A [`RunRequest`] is plain data (which conversation, the message, the options);
//! the pipeline reads the history it needs, builds the prompt, and emits events
//! into an [`EventSink`]. It knows nothing of runs or HTTP, and reports how it
//! ended: the hub owns what happens around it.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;
use tidewire_protocol::api::ChatOptions;
use tidewire_protocol::{ChatEvent, ErrorEvent, Metadata, Timing, Usage};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::llm::{Backend, Backends, Chunk, GenerationRequest, PromptMessage, PromptRole};
use crate::store::{Store, Turn};

mod prompt;

pub use prompt::{HistoryLimits, build_prompt};

/// The slowest pace a request may ask of the synthetic backend, in tokens per
/// second (0 means as fast as possible): slower would hold a run slot for hours.
pub const MIN_TOKENS_PER_SECOND: f64 = 1.0;
/// The fastest explicit pace, in tokens per second.
pub const MAX_TOKENS_PER_SECOND: f64 = 100_000.0;

/// Where the pipeline's events go.
pub trait EventSink: Send + Sync {
    /// Takes one event, in order.
    fn emit(&self, event: ChatEvent);
}

/// Which conversation a run continues.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationRef {
    /// A new conversation, created with the turn.
    New,
    /// A stored conversation: its history goes with the question.
    Existing(String),
    /// A conversation whose id the client chose: continued if it exists, created
    /// with that id if not.
    Named(String),
    /// The history given in the request (as OpenAI clients send it); the turn is
    /// stored in a new conversation.
    Inline(Vec<PromptMessage>),
}

/// A request for a run, as plain data: the hub stores it and hands it to the
/// pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRequest {
    /// The conversation it continues.
    pub conversation: ConversationRef,
    /// The user's message.
    pub message: String,
    /// Validated options.
    pub options: RunOptions,
}

impl RunRequest {
    /// The conversation to store the turn in, `None` for a new one.
    pub fn stored_conversation(&self) -> Option<&str> {
        match &self.conversation {
            ConversationRef::Existing(id) | ConversationRef::Named(id) => Some(id),
            ConversationRef::New | ConversationRef::Inline(_) => None,
        }
    }
}

/// The options of a run, validated and with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOptions {
    /// The configured backend that answers (`None`: the default one).
    pub backend: Option<String>,
    /// The longest answer, in tokens.
    pub max_tokens: u32,
    /// Pace of the synthetic backend; 0 = as fast as possible.
    pub tokens_per_second: f64,
}

/// An option a request may not have: a 422 for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidOption {
    /// A `snake_case` code.
    pub code: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl InvalidOption {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The pipeline's settings, from the configuration.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Instructions sent first, as a system message.
    pub system_prompt: Option<String>,
    /// How much of the conversation goes with a question.
    pub history: HistoryLimits,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: u32,
    /// The largest `max_tokens` a request may ask for.
    pub max_tokens_limit: u32,
    /// The synthetic backend's pace when a request gives none.
    pub default_tokens_per_second: f64,
}

/// The answer pipeline: the model backends, the store it reads history from, and
/// its settings.
pub struct Pipeline {
    backends: Backends,
    store: Arc<dyn Store>,
    settings: PipelineSettings,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("backends", &self.backends)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How the pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The model finished the answer.
    Complete,
    /// An error ended the answer; an `error` event was emitted.
    Failed,
    /// The cancel token fired; generation was stopped at once.
    Stopped,
}

impl Pipeline {
    /// A pipeline over these backends and store.
    pub fn new(backends: Backends, store: Arc<dyn Store>, settings: PipelineSettings) -> Self {
        Self {
            backends,
            store,
            settings,
        }
    }

    /// The configured backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Checks a request's options against their ranges and fills in the defaults.
    pub fn options(&self, given: &ChatOptions) -> Result<RunOptions, InvalidOption> {
        let settings = &self.settings;
        let max_tokens = given.max_tokens.unwrap_or(settings.default_max_tokens);
        if max_tokens == 0 || max_tokens > settings.max_tokens_limit {
            return Err(InvalidOption::new(
                "invalid_max_tokens",
                format!(
                    "options.max_tokens must be from 1 to {}",
                    settings.max_tokens_limit
                ),
            ));
        }
        let tokens_per_second = given
            .tokens_per_second
            .unwrap_or(settings.default_tokens_per_second);
        if !valid_pace(tokens_per_second) {
            return Err(InvalidOption::new(
                "invalid_tokens_per_second",
                format!(
                    "options.tokens_per_second must be 0 (as fast as possible) or from \
                     {MIN_TOKENS_PER_SECOND} to {MAX_TOKENS_PER_SECOND}"
                ),
            ));
        }
        if let Some(name) = &given.backend {
            self.backends
                .select(Some(name))
                .map_err(|unknown| InvalidOption::new("unknown_backend", unknown.to_string()))?;
        }
        Ok(RunOptions {
            backend: given.backend.clone(),
            max_tokens,
            tokens_per_second,
        })
    }

    /// Produces the answer of `request`, stored as `turn`: reads the history,
    /// builds the prompt, then generates (see [`generate`]).
    pub async fn answer(
        &self,
        request: &RunRequest,
        turn: &Turn,
        sink: &dyn EventSink,
        cancel: &CancellationToken,
    ) -> Ending {
        let messages = match self.prompt(request, turn).await {
            Ok(messages) => messages,
            Err(error) => {
                sink.emit(ChatEvent::Error(error));
                return Ending::Failed;
            }
        };
        let backend = match self.backends.select(request.options.backend.as_deref()) {
            Ok(backend) => backend,
            // Options were validated at the start; a backend cannot disappear since.
            Err(unknown) => {
                sink.emit(ChatEvent::error(
                    "unknown_backend",
                    unknown.to_string(),
                    false,
                ));
                return Ending::Failed;
            }
        };
        let job = AnswerJob {
            backend,
            request: GenerationRequest {
                messages,
                max_tokens: request.options.max_tokens,
                tokens_per_second: request.options.tokens_per_second,
            },
            message_id: turn.assistant_message_id.clone(),
        };
        generate(job, sink, cancel).await
    }

    /// The messages to send: the system prompt, the history that fits, the question.
    async fn prompt(
        &self,
        request: &RunRequest,
        turn: &Turn,
    ) -> Result<Vec<PromptMessage>, ErrorEvent> {
        let settings = &self.settings;
        let system = settings.system_prompt.as_deref();
        let history: Vec<PromptMessage> = match &request.conversation {
            ConversationRef::New => Vec::new(),
            ConversationRef::Inline(messages) => messages.clone(),
            ConversationRef::Existing(id) | ConversationRef::Named(id) => {
                let stored = self.store.list_messages(id).await.map_err(|error| {
                    tracing::error!(%error, conversation_id = %id, "reading the history failed");
                    ErrorEvent {
                        error: "the conversation's history could not be read".into(),
                        code: "history_unavailable".into(),
                        retryable: true,
                    }
                })?;
                // Everything before this turn's question.
                stored
                    .unwrap_or_default()
                    .into_iter()
                    .take_while(|message| message.id != turn.user_message_id)
                    .filter(|message| message.status.is_final())
                    .map(|message| PromptMessage {
                        role: match message.role {
                            tidewire_protocol::api::Role::User => PromptRole::User,
                            tidewire_protocol::api::Role::Assistant => PromptRole::Assistant,
                        },
                        content: message.content,
                    })
                    .collect()
            }
        };
        Ok(build_prompt(
            system,
            &history,
            &request.message,
            settings.history,
        ))
    }
}

/// Whether `pace` is an acceptable `tokens_per_second`.
pub fn valid_pace(pace: f64) -> bool {
    pace == 0.0 || (MIN_TOKENS_PER_SECOND..=MAX_TOKENS_PER_SECOND).contains(&pace)
}

/// One generation to run.
#[derive(Clone)]
pub struct AnswerJob {
    /// The model that writes it.
    pub backend: Arc<dyn Backend>,
    /// What to ask the model.
    pub request: GenerationRequest,
    /// The assistant message, named in `metadata`.
    pub message_id: String,
}

/// Generates one answer: `stage`, the `token`s, then `metadata` (always, with the
/// usage so far), with an `error` before it if generation failed. Stops at once when
/// `cancel` fires, dropping the model's stream.
pub async fn generate(job: AnswerJob, sink: &dyn EventSink, cancel: &CancellationToken) -> Ending {
    let started = Instant::now();
    let mut model = job.backend.model().to_owned();
    let prompt_estimate = estimate_tokens(job.request.messages.iter().map(|m| m.content.as_str()));
    let mut first_token = None;
    let mut completion_tokens = 0u64;
    let mut reported_usage = None;
    let mut finish_reason = None;
    let mut error = None;

    sink.emit(ChatEvent::stage("generation"));
    let ending = 'generate: {
        let mut stream = tokio::select! {
            biased;
            () = cancel.cancelled() => break 'generate Ending::Stopped,
            generation = job.backend.generate(job.request) => match generation {
                Ok(generation) => {
                    model = generation.model;
                    generation.stream
                }
                Err(failure) => {
                    error = Some(error_event(failure));
                    break 'generate Ending::Failed;
                }
            },
        };
        loop {
            let item = tokio::select! {
                biased;
                () = cancel.cancelled() => break 'generate Ending::Stopped,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(Chunk::Text(text))) => {
                    if text.is_empty() {
                        continue;
                    }
                    first_token.get_or_insert_with(|| started.elapsed());
                    completion_tokens = completion_tokens.saturating_add(1);
                    sink.emit(ChatEvent::token(text));
                }
                Some(Ok(Chunk::Usage(usage))) => reported_usage = Some(usage),
                Some(Ok(Chunk::Finish(reason))) => finish_reason = Some(reason),
                Some(Err(failure)) => {
                    error = Some(error_event(failure));
                    break 'generate Ending::Failed;
                }
                None => break 'generate Ending::Complete,
            }
        }
    };

    if let Some(error) = &error {
        sink.emit(ChatEvent::Error(error.clone()));
    }
    let usage_estimated = reported_usage.is_none();
    let usage = reported_usage.unwrap_or_else(|| Usage::new(prompt_estimate, completion_tokens));
    sink.emit(ChatEvent::Metadata(Metadata {
        message_id: job.message_id,
        model,
        usage,
        timing: Timing {
            ttft_ms: first_token.map(millis),
            total_ms: millis(started.elapsed()),
        },
        finish_reason,
        usage_estimated,
    }));
    ending
}

/// The `error` event of a backend failure: its clean message and code for the
/// client; what only an operator should see (addresses, library messages) goes to
/// the log.
fn error_event(failure: crate::llm::LlmError) -> ErrorEvent {
    match &failure.detail {
        Some(detail) => tracing::warn!(code = %failure.code, %detail, "{}", failure.message),
        None => tracing::warn!(code = %failure.code, "{}", failure.message),
    }
    ErrorEvent {
        error: failure.message,
        code: failure.code,
        retryable: failure.retryable,
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A rough token count for text the model did not count: about four characters a
/// token, the usual rule of thumb for English with BPE tokenizers.
pub fn estimate_tokens<'a>(texts: impl Iterator<Item = &'a str>) -> u64 {
    texts
        .map(|text| (text.chars().count() as u64).div_ceil(4))
        .sum()
}
