//! The generation stage: drives a model backend, emits its tokens, and reports the
//! model, usage and timing; and one-shot completions for the pipeline's own
//! questions to a model (rewriting a query, suggesting follow-ups).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tidewire_protocol::{ChatEvent, ErrorEvent, QualityScore, Sources, Usage};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::stop::{Scan, StopScanner};
use super::{Ending, EventSink};
use crate::llm::{Backend, Chunk, GenerationRequest, LlmError, PromptMessage, PromptRole};

/// What a generation produced besides its tokens.
#[derive(Debug, Clone)]
pub struct Generated {
    /// How it ended.
    pub ending: Ending,
    /// The model that answered.
    pub model: String,
    /// The answer text.
    pub text: String,
    /// Token counts, reported by the model or estimated.
    pub usage: Usage,
    /// Whether `usage` was estimated.
    pub usage_estimated: bool,
    /// Why the model stopped, when it said.
    pub finish_reason: Option<String>,
    /// Time from the start of generation to its first token.
    pub first_token: Option<Duration>,
    /// The backend scored its own answer (an answer service's confidence).
    pub scored: bool,
}

/// Generates one answer with `backend`: the `token`s, and an `error` if it failed.
/// Stops at once when `cancel` fires, dropping the model's stream.
pub async fn generate(
    backend: Arc<dyn Backend>,
    request: GenerationRequest,
    sink: &dyn EventSink,
    cancel: &CancellationToken,
) -> Generated {
    let started = Instant::now();
    let mut model = backend.model().to_owned();
    let prompt_estimate = estimate_tokens(request.messages.iter().map(|m| m.content.as_str()));
    let mut first_token = None;
    let mut completion_tokens = 0u64;
    let mut text = String::new();
    let mut reported_usage = None;
    let mut finish_reason = None;
    let mut error = None;
    let mut scored = false;
    let mut stops = StopScanner::new(&request.sampling.stop);
    let mut emit = |piece: String| {
        if !piece.is_empty() {
            first_token.get_or_insert_with(|| started.elapsed());
            completion_tokens = completion_tokens.saturating_add(1);
            text.push_str(&piece);
            sink.emit(ChatEvent::token(piece));
        }
    };

    let ending = 'generate: {
        let mut stream = tokio::select! {
            biased;
            () = cancel.cancelled() => break 'generate Ending::Stopped,
            generation = backend.generate(request) => match generation {
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
                Some(Ok(Chunk::Text(piece))) => {
                    let (piece, stopped) = match stops.push(piece) {
                        Scan::Emit(piece) => (piece, false),
                        Scan::Stopped(piece) => (piece, true),
                    };
                    emit(piece);
                    if stopped {
                        // The model's stream is dropped: it stops generating.
                        finish_reason = Some("stop".to_owned());
                        break 'generate Ending::Complete;
                    }
                }
                Some(Ok(Chunk::Usage(usage))) => reported_usage = Some(usage),
                Some(Ok(Chunk::Finish(reason))) => finish_reason = Some(reason),
                Some(Ok(Chunk::Sources(sources))) => {
                    sink.emit(ChatEvent::Sources(Sources { sources }));
                }
                Some(Ok(Chunk::Score(quality_score))) => {
                    scored = true;
                    sink.emit(ChatEvent::QualityScore(QualityScore { quality_score }));
                }
                Some(Err(failure)) => {
                    error = Some(error_event(failure));
                    break 'generate Ending::Failed;
                }
                None => {
                    emit(stops.finish());
                    break 'generate Ending::Complete;
                }
            }
        }
    };

    if let Some(error) = error {
        sink.emit(ChatEvent::Error(Box::new(error)));
    }
    let usage_estimated = reported_usage.is_none();
    Generated {
        ending,
        model,
        text,
        usage: reported_usage.unwrap_or_else(|| Usage::new(prompt_estimate, completion_tokens)),
        usage_estimated,
        finish_reason,
        first_token,
        scored,
    }
}

/// Asks `backend` one short question (`instructions`, then `input`) and returns its
/// whole reply, or `None` when it fails, takes longer than `timeout`, or `cancel`
/// fires. For optional work: a failure is logged and the caller does without.
pub async fn ask(
    backend: &dyn Backend,
    instructions: &str,
    input: String,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Option<String> {
    let request = GenerationRequest {
        messages: vec![
            PromptMessage {
                role: PromptRole::System,
                content: instructions.to_owned(),
            },
            PromptMessage {
                role: PromptRole::User,
                content: input,
            },
        ],
        context: Vec::new(),
        max_tokens: Some(200),
        tokens_per_second: 0.0,
        sampling: Default::default(),
    };
    let reply = async {
        let mut stream = backend.generate(request).await.ok()?.stream;
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(Chunk::Text(piece)) => text.push_str(&piece),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(code = %error.code, "a side question to the model failed");
                    return None;
                }
            }
        }
        Some(text)
    };
    tokio::select! {
        () = cancel.cancelled() => None,
        reply = tokio::time::timeout(timeout, reply) => reply.ok().flatten(),
    }
}

/// The `error` event of a backend failure: its clean message and code for the
/// client; what only an operator should see (addresses, library messages) goes to
/// the log.
fn error_event(failure: LlmError) -> ErrorEvent {
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

/// A rough token count for text the model did not count: about four characters a
/// token, the usual rule of thumb for English with BPE tokenizers.
pub fn estimate_tokens<'a>(texts: impl Iterator<Item = &'a str>) -> u64 {
    texts
        .map(|text| (text.chars().count() as u64).div_ceil(4))
        .sum()
}
