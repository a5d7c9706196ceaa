//! The answer pipeline: turns one run request into the events of its answer.
//!
//! Its stages, each of which can be switched off: `query_analysis` (the question
//! normalised; with a language model and earlier turns, rewritten into a standalone
//! query), `retrieval` (the best chunks of the documents, as `sources`),
//! `generation` (the model answers from the sources, citing them as [1], [2]),
//! `scoring` (`quality_score`, see [`score`]) and `follow_ups`
//! (`follow_up_questions`, see [`follow_ups`]); then `metadata` with each stage's
//! time. A cancel stops whichever stage is running; a failure in an optional stage
//! is logged and skipped.
//!
//! A [`RunRequest`] is plain data (which conversation, the message, the scope of
//! retrieval, the options); the pipeline reads the history it needs and emits
//! events into an [`EventSink`]. It knows nothing of runs or HTTP, and reports how
//! it ended: the hub owns what happens around it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tidewire_protocol::api::ChatOptions;
use tidewire_protocol::{
    ChatEvent, ErrorEvent, FollowUpQuestions, Metadata, QualityScore, Source, Sources, Timing,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::llm::{
    Backend, Backends, GenerationRequest, Passage, PromptMessage, PromptRole, Sampling, ToolCall,
    ToolExchange, ToolSpec,
};
use crate::metrics::{BackendLabel, Metrics};
use crate::retrieval::{Hit, Retriever, Scope};
use crate::store::{Store, Turn};
use crate::tools::{ToolContext, ToolSet, Toolbox};

mod cancel;
pub mod follow_ups;
mod generate;
mod prompt;
pub mod score;
mod stop;

pub use generate::{Generated, Tools, estimate_tokens, generate};
pub use prompt::{HistoryLimits, build_prompt};

/// The longest excerpt of a chunk sent in `sources`, in characters.
const EXCERPT_CHARS: usize = 600;

/// Raw search scores `s` become `s / (s + SCORE_HALF)`: 0 to 1, one half at this
/// score (a BM25 score of 4 is a fair match for a short question).
const SCORE_HALF: f32 = 4.0;

/// The slowest pace a request may ask of the synthetic backend, in tokens per
/// second (0 means as fast as possible).
pub const MIN_TOKENS_PER_SECOND: f64 = 0.01;
/// The longest a paced answer may take (`max_tokens` / `tokens_per_second`): a
/// slower one would hold a run slot for days.
pub const MAX_PACED_SECONDS: f64 = 3600.0;
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
    /// Where retrieval searches.
    pub scope: Scope,
    /// Validated options.
    pub options: RunOptions,
    /// What the route that starts the run keeps with it and reads back from the
    /// run's identity (the Responses API's request parameters); the pipeline does
    /// not look at it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Arc<serde_json::Value>>,
    /// Who asks: the run and its conversation are theirs.
    #[serde(skip_serializing_if = "is_local")]
    pub user: String,
}

/// The one user when authentication is off (left out of a request's fingerprint,
/// so fingerprints are what they were before users existed).
fn is_local(user: &str) -> bool {
    user == crate::store::LOCAL_USER
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
    /// The longest answer, in tokens (`None`: the backend's own limit).
    pub max_tokens: Option<u32>,
    /// Pace of the synthetic backend; 0 = as fast as possible.
    pub tokens_per_second: f64,
    /// Sampling settings for the model (left out of the serialized request when
    /// unset, so a request's fingerprint is what it was before they existed).
    #[serde(skip_serializing_if = "Sampling::is_default")]
    pub sampling: Sampling,
    /// The configured tools the model may call: `None` all, `[]` none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// A client's own tools (the OpenAI routes): the model may call them, and the
    /// calls go back to the client instead of being run here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tools: Option<ClientTools>,
}

/// A client's own tools and where the client is in using them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientTools {
    /// The tools, as the client described them.
    pub tools: Vec<ToolSpec>,
    /// The client's `tool_choice`, passed to the model as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice: Option<serde_json::Value>,
    /// The model's calls since the question, with the results the client ran
    /// (sent after the question, so the model goes on from them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub since_question: Vec<PromptMessage>,
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

/// Which stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stages {
    /// Normalise (and with a language model, rewrite) the question.
    pub query_analysis: bool,
    /// Search the documents.
    pub retrieval: bool,
    /// Ask the model.
    pub generation: bool,
    /// Score the answer against its sources.
    pub scoring: bool,
    /// Suggest follow-up questions.
    pub follow_ups: bool,
}

/// The pipeline's settings, from the configuration.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Which stages run.
    pub stages: Stages,
    /// How many chunks retrieval returns.
    pub top_k: usize,
    /// The most characters of sources that go into the prompt.
    pub max_source_chars: usize,
    /// How long the pipeline's own questions to the model (rewrite, follow-ups)
    /// may take before it does without.
    pub side_timeout: Duration,
    /// Instructions sent first, as a system message.
    pub system_prompt: Option<String>,
    /// How much of the conversation goes with a question.
    pub history: HistoryLimits,
    /// `max_tokens` when a request gives none (unset: the backend's own).
    pub default_max_tokens: Option<u32>,
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
    retriever: Arc<dyn Retriever>,
    tools: Arc<Toolbox>,
    metrics: Arc<Metrics>,
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
    /// A pipeline over these backends, the store (for history), a retriever and
    /// the tools models may call.
    pub fn new(
        backends: Backends,
        store: Arc<dyn Store>,
        retriever: Arc<dyn Retriever>,
        tools: Arc<Toolbox>,
        metrics: Arc<Metrics>,
        settings: PipelineSettings,
    ) -> Self {
        Self {
            backends,
            store,
            retriever,
            tools,
            metrics,
            settings,
        }
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The tools models may call.
    pub fn tools(&self) -> &Arc<Toolbox> {
        &self.tools
    }

    /// The configured backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Checks a request's options against their ranges and fills in the defaults.
    pub fn options(&self, given: &ChatOptions) -> Result<RunOptions, InvalidOption> {
        let settings = &self.settings;
        let max_tokens = given.max_tokens.or(settings.default_max_tokens);
        if max_tokens.is_some_and(|n| n == 0 || n > settings.max_tokens_limit) {
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
        // Only the synthetic backend is paced, and it stops at its default length.
        let paced_tokens = max_tokens.unwrap_or(crate::llm::BUILT_IN_MAX_TOKENS);
        if tokens_per_second > 0.0
            && f64::from(paced_tokens) / tokens_per_second > MAX_PACED_SECONDS
        {
            return Err(InvalidOption::new(
                "invalid_tokens_per_second",
                format!(
                    "{paced_tokens} tokens at {tokens_per_second} a second would take more than \
                     an hour: ask for fewer tokens or a faster pace (up to \
                     {MAX_TOKENS_PER_SECOND} a second)"
                ),
            ));
        }
        if let Some(name) = &given.backend {
            self.backends
                .select(Some(name))
                .map_err(|unknown| InvalidOption::new("unknown_backend", unknown.to_string()))?;
        }
        if let Some(names) = &given.tools {
            self.tools.select(Some(names)).map_err(|unknown| {
                let available: Vec<String> = self.tools.available().into_keys().collect();
                InvalidOption::new(
                    "unknown_tool",
                    format!(
                        "options.tools names {unknown:?}, which is not a tool here; the tools \
                         are: {}",
                        if available.is_empty() {
                            "none".to_owned()
                        } else {
                            available.join(", ")
                        }
                    ),
                )
            })?;
        }
        Ok(RunOptions {
            backend: given.backend.clone(),
            max_tokens,
            tokens_per_second,
            sampling: Sampling::default(),
            tools: given.tools.clone(),
            client_tools: None,
        })
    }

    /// Produces the answer of `request`, stored as `turn`: every stage in order,
    /// then `metadata` (always, with what is known).
    pub async fn answer(
        &self,
        request: &RunRequest,
        turn: &Turn,
        sink: &dyn EventSink,
        cancel: &CancellationToken,
    ) -> Ending {
        let started = Instant::now();
        let mut times = BTreeMap::new();
        let mut generated: Option<Generated> = None;
        let mut ttft = None;
        let backend = self.backends.select(request.options.backend.as_deref());
        let model = backend
            .as_ref()
            .map_or_else(|_| String::new(), |b| b.model().to_owned());
        let ending = 'stages: {
            let backend = match backend {
                Ok(backend) => backend,
                // Options were validated at the start; a backend cannot go away since.
                Err(unknown) => {
                    sink.emit(ChatEvent::error(
                        "unknown_backend",
                        unknown.to_string(),
                        false,
                    ));
                    break 'stages Ending::Failed;
                }
            };
            let history = match self.history(request, turn).await {
                Ok(history) => history,
                Err(error) => {
                    sink.emit(ChatEvent::Error(Box::new(error)));
                    break 'stages Ending::Failed;
                }
            };
            let stages = self.settings.stages;

            let mut query = normalise(&request.message);
            if stages.query_analysis {
                let at = Instant::now();
                sink.emit(ChatEvent::stage("query_analysis"));
                if backend.is_language_model() && !history.is_empty() {
                    let input = standalone_input(&history, &query);
                    let timeout = self.settings.side_timeout;
                    match generate::ask(backend.as_ref(), REWRITE, input, timeout, cancel).await {
                        Some(rewritten) if !rewritten.trim().is_empty() => {
                            query = normalise(&rewritten);
                        }
                        _ => tracing::debug!(
                            "no standalone rewrite; searching the question as asked"
                        ),
                    }
                }
                times.insert("query_analysis".to_owned(), millis(at.elapsed()));
            }
            if cancel.is_cancelled() {
                break 'stages Ending::Stopped;
            }

            let mut hits = Vec::new();
            if stages.retrieval {
                let at = Instant::now();
                sink.emit(ChatEvent::stage("retrieval"));
                let search = self
                    .retriever
                    .search(&query, &request.scope, self.settings.top_k);
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break 'stages Ending::Stopped,
                    found = search => match found {
                        Ok(found) => hits = found,
                        Err(error) => tracing::warn!(%error, "retrieval failed; answering without sources"),
                    },
                }
                sink.emit(ChatEvent::Sources(Sources {
                    sources: hits.iter().map(source).collect(),
                }));
                times.insert("retrieval".to_owned(), millis(at.elapsed()));
            }

            if stages.generation {
                let at = Instant::now();
                sink.emit(ChatEvent::stage("generation"));
                let passages = self.passages(&hits);
                let system =
                    prompt::system_with_sources(self.settings.system_prompt.as_deref(), &passages);
                let mut messages = build_prompt(
                    system.as_deref(),
                    &history,
                    &request.message,
                    self.settings.history,
                );
                let client = request.options.client_tools.as_ref();
                if let Some(client) = client {
                    messages.extend(client.since_question.iter().cloned());
                }
                let generation = GenerationRequest {
                    messages,
                    context: passages,
                    max_tokens: request.options.max_tokens,
                    tokens_per_second: request.options.tokens_per_second,
                    sampling: request.options.sampling.clone(),
                    tools: client.map(|c| c.tools.clone()).unwrap_or_default(),
                    tool_choice: client.and_then(|c| c.choice.clone()),
                };
                // A tool that went away since the request was checked is left out.
                let tool_set = self
                    .tools
                    .select(request.options.tools.as_deref())
                    .unwrap_or_else(|_| ToolSet::none());
                let context = ToolContext {
                    scope: request.scope.clone(),
                    user: request.user.clone(),
                };
                let tools = Tools {
                    set: &tool_set,
                    context: &context,
                };
                let done = generate(
                    Arc::clone(&backend),
                    Box::new(generation),
                    Some(tools),
                    &self.metrics,
                    sink,
                    cancel,
                )
                .await;
                ttft = done
                    .first_token
                    .map(|first| at.duration_since(started) + first);
                if let Some(ttft) = ttft {
                    let backend = BackendLabel {
                        backend: request
                            .options
                            .backend
                            .clone()
                            .unwrap_or_else(|| self.backends.default_name().to_owned()),
                    };
                    self.metrics
                        .observe_in(&self.metrics.time_to_first_token, backend, ttft);
                }
                times.insert("generation".to_owned(), millis(at.elapsed()));
                let ending = done.ending;
                generated = Some(done);
                if ending != Ending::Complete {
                    break 'stages ending;
                }
            }

            let answer = generated.as_ref().map_or("", |g| g.text.as_str());
            // A backend that scored its own answer (an answer service) is not scored
            // again.
            if stages.scoring && !generated.as_ref().is_some_and(|g| g.scored) {
                let at = Instant::now();
                sink.emit(ChatEvent::stage("scoring"));
                let quality_score =
                    score::quality_score(answer, hits.iter().map(|h| h.text.as_str()));
                sink.emit(ChatEvent::QualityScore(QualityScore { quality_score }));
                times.insert("scoring".to_owned(), millis(at.elapsed()));
            }
            if stages.follow_ups {
                let at = Instant::now();
                sink.emit(ChatEvent::stage("follow_ups"));
                let questions = self
                    .follow_ups(backend.as_ref(), &query, answer, &hits, cancel)
                    .await;
                if !questions.is_empty() {
                    sink.emit(ChatEvent::FollowUpQuestions(FollowUpQuestions {
                        follow_up_questions: questions,
                    }));
                }
                times.insert("follow_ups".to_owned(), millis(at.elapsed()));
            }
            if cancel.is_cancelled() {
                Ending::Stopped
            } else {
                Ending::Complete
            }
        };

        let (model, usage, usage_estimated, finish_reason) = match generated {
            Some(g) => (g.model, g.usage, g.usage_estimated, g.finish_reason),
            None => (model, Default::default(), false, None),
        };
        sink.emit(ChatEvent::Metadata(Box::new(Metadata {
            message_id: turn.assistant_message_id.clone(),
            model,
            usage,
            timing: Timing {
                ttft_ms: ttft.map(millis),
                total_ms: millis(started.elapsed()),
            },
            finish_reason,
            usage_estimated,
            stages: times,
        })));
        ending
    }

    /// Follow-up questions: from the model when it is a language model (within the
    /// side timeout), else from the sources.
    async fn follow_ups(
        &self,
        backend: &dyn Backend,
        question: &str,
        answer: &str,
        hits: &[Hit],
        cancel: &CancellationToken,
    ) -> Vec<String> {
        if backend.is_language_model() {
            let input = format!("Question: {question}\n\nAnswer: {answer}");
            let timeout = self.settings.side_timeout;
            if let Some(reply) =
                generate::ask(backend, follow_ups::PROMPT, input, timeout, cancel).await
            {
                let questions = follow_ups::parse_reply(&reply);
                if !questions.is_empty() {
                    return questions;
                }
            }
            if cancel.is_cancelled() {
                // The answer was stopped, not the model found wanting.
                return Vec::new();
            }
            tracing::debug!("no follow-ups from the model; deriving them from the sources");
        }
        follow_ups::from_sources(question, hits)
    }

    /// The retrieved chunks as numbered passages for the prompt, within the size
    /// limit.
    fn passages(&self, hits: &[Hit]) -> Vec<Passage> {
        let mut budget = self.settings.max_source_chars;
        let mut passages = Vec::new();
        for hit in hits {
            let size = hit.text.chars().count();
            if size > budget && !passages.is_empty() {
                break;
            }
            budget = budget.saturating_sub(size);
            let mut title = hit.document_name.clone();
            for heading in &hit.heading_path {
                title.push_str(" › ");
                title.push_str(heading);
            }
            passages.push(Passage {
                title,
                text: hit.text.clone(),
            });
        }
        passages
    }

    /// The conversation before this turn's question.
    async fn history(
        &self,
        request: &RunRequest,
        turn: &Turn,
    ) -> Result<Vec<PromptMessage>, ErrorEvent> {
        Ok(match &request.conversation {
            ConversationRef::New => Vec::new(),
            ConversationRef::Inline(messages) => messages.clone(),
            ConversationRef::Existing(id) | ConversationRef::Named(id) => {
                let stored = self.store.list_messages(id, &request.user).await.map_err(|error| {
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
                    .flat_map(history_messages)
                    .collect()
            }
        })
    }
}

/// A stored message as the model reads it again: an answer that called tools is its
/// calls with their results, then its text.
fn history_messages(message: crate::store::MessageRecord) -> Vec<PromptMessage> {
    let role = match message.role {
        tidewire_protocol::api::Role::User => PromptRole::User,
        tidewire_protocol::api::Role::Assistant => PromptRole::Assistant,
    };
    let mut messages = Vec::with_capacity(2);
    if !message.tool_calls.is_empty() {
        let exchanges = message
            .tool_calls
            .into_iter()
            .map(|call| ToolExchange {
                call: ToolCall {
                    id: call.tool_call_id,
                    name: call.tool_name,
                    // What the model wrote, when it was not JSON, is kept as text.
                    arguments: match call.arguments {
                        serde_json::Value::String(text) => text,
                        other => other.to_string(),
                    },
                },
                // A call the run was stopped in has no result; the model is told.
                result: call.result.map_or_else(
                    || {
                        r#"{"error":"the call was stopped before it finished","code":"cancelled"}"#
                            .to_owned()
                    },
                    |result| result.to_string(),
                ),
            })
            .collect();
        messages.push(PromptMessage {
            role: PromptRole::Assistant,
            content: String::new(),
            tool_calls: exchanges,
        });
    }
    messages.push(PromptMessage::new(role, message.content));
    messages
}

/// The instructions of the model call that makes a follow-up question standalone.
const REWRITE: &str = "Rewrite the user's last question as one standalone search query that \
     makes sense without the conversation. Answer with the query only.";

/// The conversation's end and the question, for the rewrite.
fn standalone_input(history: &[PromptMessage], question: &str) -> String {
    let mut input = String::new();
    for message in history
        .iter()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let who = match message.role {
            PromptRole::User => "User",
            PromptRole::Assistant => "Assistant",
            PromptRole::System => continue,
        };
        let text: String = message.content.chars().take(500).collect();
        input.push_str(&format!("{who}: {text}\n"));
    }
    input.push_str(&format!("User: {question}"));
    input
}

/// The question with its white space made single spaces.
fn normalise(question: &str) -> String {
    question.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A search hit as a `sources` entry: a useful excerpt and a score from 0 to 1.
fn source(hit: &Hit) -> Source {
    let score = hit.score.max(0.0);
    Source {
        chunk_id: hit.chunk_id.clone(),
        document_name: hit.document_name.clone(),
        text: excerpt(&hit.text),
        score: f64::from(score / (score + SCORE_HALF)),
    }
}

/// The start of `text`, cut at a word boundary after at most [`EXCERPT_CHARS`].
fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let cut = text[..cut].rfind(char::is_whitespace).unwrap_or(cut);
            format!("{}…", text[..cut].trim_end())
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `pace` is an acceptable `tokens_per_second`.
pub fn valid_pace(pace: f64) -> bool {
    pace == 0.0 || (MIN_TOKENS_PER_SECOND..=MAX_TOKENS_PER_SECOND).contains(&pace)
}
