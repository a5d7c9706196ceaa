//! The generation stage: drives a model backend, emits its tokens, runs the tools it
//! calls, and reports the model, usage and timing; and one-shot completions for the pipeline's own
//! questions to a model (rewriting a query, suggesting follow-ups).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tidewire_protocol::{
    ChatEvent, ClientToolCall, ErrorEvent, QualityScore, Sources, ToolFinished, ToolStarted, Usage,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cancel::Cancelled;
use super::stop::{Scan, StopScanner};
use super::{Ending, EventSink};
use crate::llm::{
    Backend, Chunk, Generation, GenerationRequest, LlmError, PromptMessage, PromptRole, ToolCall,
    ToolExchange,
};
use crate::metrics::{HistogramBatch, Metrics, ToolLabel, UpstreamLabel};
use crate::tools::{ToolContext, ToolSet};

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

/// The tools of a generation and what their calls know of the run.
#[derive(Debug, Clone, Copy)]
pub struct Tools<'a> {
    /// The tools the model may call.
    pub set: &'a ToolSet,
    /// The run, for the calls.
    pub context: &'a ToolContext,
}

/// Generates one answer with `backend`: the `token`s, the tool calls the model
/// makes (`tool_started`, `tool_finished`, each round's results sent back until it
/// answers), and an `error` if it failed. Stops at once when `cancel` fires,
/// dropping the model's stream and any running call.
pub async fn generate(
    backend: Arc<dyn Backend>,
    mut request: Box<GenerationRequest>,
    tools: Option<Tools<'_>>,
    metrics: &Metrics,
    sink: &dyn EventSink,
    cancel: &CancellationToken,
) -> Generated {
    let started = Instant::now();
    // A client's own tools (in the request) replace the server's: their calls go
    // back to the client.
    let client_tools = std::mem::take(&mut request.tools);
    let tools =
        tools.filter(|t| client_tools.is_empty() && !t.set.is_empty() && backend.supports_tools());
    let max_rounds = tools.map_or(0, |t| t.set.limits().max_rounds);
    let specs = tools.map(|t| t.set.specs()).unwrap_or_default();
    let mut answer = Answer {
        model: backend.model().to_owned(),
        text: String::new(),
        first_token: None,
        completion_tokens: 0,
        started,
        last_token: None,
        gaps: metrics.batch(&metrics.token_gap),
    };
    let mut usage = Usage::default();
    let mut usage_estimated = false;
    let mut finish_reason = None;
    let mut scored = false;
    let mut round = 0;
    let ending = loop {
        // The last round offers no tools: the model must answer.
        request.tools = if !client_tools.is_empty() {
            client_tools.clone()
        } else if round < max_rounds {
            specs.clone()
        } else {
            Vec::new()
        };
        let prompt_estimate = estimate_tokens(request.messages.iter().map(|m| m.content.as_str()));
        let tokens_before = answer.completion_tokens;
        let stops = StopScanner::new(&request.sampling.stop);
        // The backend's future is made here, not in `one_round`: a request taken by
        // value there would be kept twice in the future of every running answer.
        // When no round can follow this one, the backend gets the request itself, not
        // a copy: kept here, the prompt would stay in every quiet answer's memory.
        let opening = if tools.is_some() && round < max_rounds {
            backend.generate(GenerationRequest::clone(&request))
        } else {
            backend.generate(std::mem::take(&mut *request))
        };
        // This round's text is the end of the answer's: not kept twice while it grows.
        let round_start = answer.text.len();
        let outcome = one_round(opening, stops, &mut answer, sink, cancel).await;
        if let Some(error) = &outcome.error {
            metrics.count(
                &metrics.upstream_errors,
                UpstreamLabel {
                    backend: backend.model().to_owned(),
                    code: error.code.clone(),
                },
            );
        }
        match outcome.usage {
            Some(reported) => usage = usage.plus(reported),
            None => {
                usage_estimated = true;
                let completion = answer.completion_tokens - tokens_before;
                usage = usage.plus(Usage::new(prompt_estimate, completion));
            }
        }
        scored |= outcome.scored;
        finish_reason = outcome.finish_reason.or(finish_reason);
        if let Some(error) = outcome.error {
            sink.emit(ChatEvent::Error(Box::new(error)));
        }
        if outcome.ending != Ending::Complete || outcome.calls.is_empty() {
            break outcome.ending;
        }
        let Some(tools) = tools else {
            // The client runs its own tools; calls from a model given no tools are
            // left out (its text is the answer).
            if !client_tools.is_empty() {
                for call in outcome.calls {
                    sink.emit(ChatEvent::ToolCall(Box::new(ClientToolCall {
                        tool_call_id: call.id,
                        tool_name: call.name,
                        arguments: call.arguments,
                    })));
                }
            }
            break Ending::Complete;
        };
        if round >= max_rounds {
            sink.emit(ChatEvent::error(
                "too_many_tool_rounds",
                format!("the model still asked for tools after {max_rounds} rounds of calls"),
                false,
            ));
            break Ending::Failed;
        }
        round += 1;
        let Some(exchanges) = run_calls(tools, outcome.calls, metrics, sink, cancel).await else {
            break Ending::Stopped;
        };
        request.messages.push(PromptMessage {
            role: PromptRole::Assistant,
            content: answer
                .text
                .get(round_start..)
                .unwrap_or_default()
                .to_owned(),
            tool_calls: exchanges,
        });
        finish_reason = None;
    };
    Generated {
        ending,
        model: answer.model,
        text: answer.text,
        usage,
        usage_estimated,
        finish_reason,
        first_token: answer.first_token,
        scored,
    }
}

/// The answer across rounds.
struct Answer<'m> {
    model: String,
    text: String,
    first_token: Option<Duration>,
    completion_tokens: u64,
    started: Instant,
    last_token: Option<Instant>,
    /// The gaps between its tokens, added to the server's metrics every
    /// [`crate::metrics::BATCH`] and when it ends; `None` when metrics are off.
    gaps: Option<HistogramBatch<'m>>,
}

impl Answer<'_> {
    fn emit(&mut self, piece: String, sink: &dyn EventSink) {
        if !piece.is_empty() {
            if let Some(gaps) = &mut self.gaps {
                let now = Instant::now();
                if let Some(last) = self.last_token.replace(now) {
                    gaps.observe(now.duration_since(last).as_secs_f64());
                }
            }
            self.first_token
                .get_or_insert_with(|| self.started.elapsed());
            self.completion_tokens = self.completion_tokens.saturating_add(1);
            self.text.push_str(&piece);
            sink.emit(ChatEvent::token(piece));
        }
    }
}

/// What one request to the model gave.
struct Round {
    ending: Ending,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    error: Option<ErrorEvent>,
    scored: bool,
}

/// One request to the model: its tokens are emitted as they come, its tool calls
/// collected.
async fn one_round(
    opening: BoxFuture<'_, Result<Generation, LlmError>>,
    mut stops: StopScanner,
    answer: &mut Answer<'_>,
    sink: &dyn EventSink,
    cancel: &CancellationToken,
) -> Round {
    let mut round = Round {
        ending: Ending::Complete,
        calls: Vec::new(),
        usage: None,
        finish_reason: None,
        error: None,
        scored: false,
    };
    round.ending = 'round: {
        let mut stream = tokio::select! {
            biased;
            () = cancel.cancelled() => break 'round Ending::Stopped,
            generation = opening => match generation {
                Ok(generation) => {
                    answer.model = generation.model;
                    generation.stream
                }
                Err(failure) => {
                    round.error = Some(error_event(failure));
                    break 'round Ending::Failed;
                }
            },
        };
        // One waiter for the whole stream, polled only when it woke the task: a fresh
        // `cancelled()` per token, or the token's own future polled on every token,
        // takes the token's locks on every token.
        let mut cancelled = Cancelled::new(cancel);
        loop {
            let item = tokio::select! {
                biased;
                () = &mut cancelled => break 'round Ending::Stopped,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(Chunk::Text(piece))) => {
                    let (piece, stopped) = match stops.push(piece) {
                        Scan::Emit(piece) => (piece, false),
                        Scan::Stopped(piece) => (piece, true),
                    };
                    answer.emit(piece, sink);
                    if stopped {
                        // The model's stream is dropped: it stops generating.
                        round.finish_reason = Some("stop".to_owned());
                        round.calls.clear();
                        break 'round Ending::Complete;
                    }
                }
                Some(Ok(Chunk::ToolCall(call))) => round.calls.push(call),
                Some(Ok(Chunk::Usage(usage))) => round.usage = Some(usage),
                Some(Ok(Chunk::Finish(reason))) => round.finish_reason = Some(reason),
                Some(Ok(Chunk::Sources(sources))) => {
                    sink.emit(ChatEvent::Sources(Sources { sources }));
                }
                Some(Ok(Chunk::Score(quality_score))) => {
                    round.scored = true;
                    sink.emit(ChatEvent::QualityScore(QualityScore { quality_score }));
                }
                Some(Err(failure)) => {
                    round.error = Some(error_event(failure));
                    break 'round Ending::Failed;
                }
                None => {
                    answer.emit(stops.finish(), sink);
                    break 'round Ending::Complete;
                }
            }
        }
    };
    round
}

/// Runs one round of calls at once: every `tool_started` first, then each
/// `tool_finished` as its call ends. `None` when `cancel` fired (the calls still
/// running are dropped).
async fn run_calls(
    tools: Tools<'_>,
    calls: Vec<ToolCall>,
    metrics: &Metrics,
    sink: &dyn EventSink,
    cancel: &CancellationToken,
) -> Option<Vec<ToolExchange>> {
    let mut running = FuturesUnordered::new();
    for (index, call) in calls.iter().enumerate() {
        let (arguments, result) = tools.set.call(&call.name, &call.arguments, tools.context);
        sink.emit(ChatEvent::ToolStarted(Box::new(ToolStarted {
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            arguments,
        })));
        let at = Instant::now();
        running.push(async move { (index, result.await, at.elapsed()) });
    }
    let mut results: Vec<Option<String>> = vec![None; calls.len()];
    loop {
        let (index, result, took) = tokio::select! {
            biased;
            () = cancel.cancelled() => return None,
            next = running.next() => match next {
                Some(done) => done,
                None => break,
            },
        };
        let call = &calls[index];
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.code,
        };
        metrics.count(
            &metrics.tool_calls,
            ToolLabel {
                // A name the model made up is not a label value.
                tool: if outcome == "unknown_tool" {
                    "unknown".to_owned()
                } else {
                    call.name.clone()
                },
                outcome: outcome.to_owned(),
            },
        );
        let (result, is_error) = match result {
            Ok(value) => (value, false),
            Err(error) => {
                tracing::info!(tool = %call.name, code = error.code, "a tool call failed: {}", error.message);
                (error.to_result(), true)
            }
        };
        results[index] = Some(result.to_string());
        sink.emit(ChatEvent::ToolFinished(Box::new(ToolFinished {
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            result,
            is_error,
        })));
    }
    Some(
        calls
            .into_iter()
            .zip(results)
            .map(|(call, result)| ToolExchange {
                call,
                result: result.unwrap_or_default(),
            })
            .collect(),
    )
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
            PromptMessage::new(PromptRole::System, instructions.to_owned()),
            PromptMessage::new(PromptRole::User, input),
        ],
        context: Vec::new(),
        max_tokens: Some(200),
        tokens_per_second: 0.0,
        sampling: Default::default(),
        tools: Vec::new(),
        tool_choice: None,
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
