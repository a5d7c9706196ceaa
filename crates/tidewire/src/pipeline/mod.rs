//! The answer pipeline: turns one chat request into the events of its answer
//! (stages, tokens, metadata, errors), driving a model backend.
//!
//! It knows nothing of runs, HTTP or storage: it emits events into an [`EventSink`]
//! and reports how it ended. The hub owns what happens around it.

use std::sync::Arc;

use futures_util::StreamExt;
use tidewire_protocol::{ChatEvent, ErrorEvent, Metadata, Timing, Usage};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::llm::{Backend, Chunk, GenerationRequest};

mod prompt;

pub use prompt::{HistoryLimits, build_prompt};

/// Where the pipeline's events go.
pub trait EventSink: Send + Sync {
    /// Takes one event, in order.
    fn emit(&self, event: ChatEvent);
}

/// One answer to produce.
#[derive(Clone)]
pub struct AnswerJob {
    /// The model that writes it.
    pub backend: Arc<dyn Backend>,
    /// What to ask the model.
    pub request: GenerationRequest,
    /// The assistant message, named in `metadata`.
    pub message_id: String,
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

/// The result of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// The model that answered.
    pub model: String,
    /// Token counts, reported by the model or estimated.
    pub usage: Usage,
    /// The error, when it failed.
    pub error: Option<ErrorEvent>,
}

/// Produces one answer: `stage`, the `token`s, then `metadata` (always, with the
/// usage so far), with an `error` before it if generation failed. Stops at once when
/// `cancel` fires, dropping the model's stream.
pub async fn answer(job: AnswerJob, sink: &dyn EventSink, cancel: &CancellationToken) -> Outcome {
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
                    error = Some(ErrorEvent { error: failure.message, code: failure.code, retryable: failure.retryable });
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
                    completion_tokens += 1;
                    sink.emit(ChatEvent::token(text));
                }
                Some(Ok(Chunk::Usage(usage))) => reported_usage = Some(usage),
                Some(Ok(Chunk::Finish(reason))) => finish_reason = Some(reason),
                Some(Err(failure)) => {
                    error = Some(ErrorEvent {
                        error: failure.message,
                        code: failure.code,
                        retryable: failure.retryable,
                    });
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
        model: model.clone(),
        usage,
        timing: Timing {
            ttft_ms: first_token.map(millis),
            total_ms: millis(started.elapsed()),
        },
        finish_reason,
        usage_estimated,
    }));
    Outcome {
        ending,
        model,
        usage,
        error,
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
