//! [`ChatEvent`]: the events of a run, and their native wire form.

use serde::{Deserialize, Serialize};

/// One event of a run's stream. `Run` is always first and `Done` always last.
///
/// The payloads larger than a string are boxed, so the enum stays 32 bytes: a run
/// keeps every event of its log, and most of them are tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum ChatEvent {
    /// The run started: where to find it again.
    Run(Box<RunStarted>),
    /// The pipeline entered a stage.
    Stage(Stage),
    /// Retrieved sources.
    Sources(Sources),
    /// A piece of the answer text.
    Token(Token),
    /// A tool call began.
    ToolStarted(Box<ToolStarted>),
    /// A tool call ended.
    ToolFinished(Box<ToolFinished>),
    /// The model asks the client to run one of the client's own tools (the OpenAI
    /// routes' `tools`); the answer ends with finish reason `tool_calls`.
    ToolCall(Box<ClientToolCall>),
    /// The answer's quality score.
    QualityScore(QualityScore),
    /// Suggested next questions.
    FollowUpQuestions(FollowUpQuestions),
    /// Model, usage and timing of the answer.
    Metadata(Box<Metadata>),
    /// Something failed; a `Done` follows.
    Error(Box<ErrorEvent>),
    /// The run ended.
    Done(Done),
}

/// Payload of `run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunStarted {
    /// The run's id.
    pub run_id: String,
    /// The conversation the answer belongs to.
    pub conversation_id: String,
    /// The assistant message being written.
    pub message_id: String,
    /// Where to attach to the run again (`GET`, with `Last-Event-ID`).
    pub events_url: String,
}

/// Payload of `stage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stage {
    /// `query_analysis`, `retrieval`, `generation`, `scoring`, ...
    pub stage: String,
}

/// One retrieved source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    /// The chunk's id.
    pub chunk_id: String,
    /// The document the chunk comes from.
    pub document_name: String,
    /// The chunk's text.
    pub text: String,
    /// Relevance, higher is better.
    pub score: f64,
}

/// Payload of `sources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sources {
    /// The sources, best first.
    pub sources: Vec<Source>,
}

/// Payload of `token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Token {
    /// The text to append to the answer.
    pub token: String,
}

/// Payload of `tool_started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolStarted {
    /// The call's id.
    pub tool_call_id: String,
    /// The tool's name.
    pub tool_name: String,
    /// The call's arguments.
    pub arguments: serde_json::Value,
}

/// Payload of `tool_finished`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolFinished {
    /// The call's id.
    pub tool_call_id: String,
    /// The tool's name.
    pub tool_name: String,
    /// How long the call took.
    pub duration_ms: u64,
    /// What the tool returned; for a failed call, `{"error": ..., "code": ...}`.
    pub result: serde_json::Value,
    /// The call failed (the model was told, and went on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// Payload of `tool_call`: a call of a client's tool, for the client to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientToolCall {
    /// The call's id.
    pub tool_call_id: String,
    /// The tool's name.
    pub tool_name: String,
    /// The arguments, as the JSON text the model wrote.
    pub arguments: String,
}

/// A tool call of an answer, as stored with the message: its `tool_started` and
/// `tool_finished` in one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolCallRecord {
    /// The call's id.
    pub tool_call_id: String,
    /// The tool's name.
    pub tool_name: String,
    /// The call's arguments.
    pub arguments: serde_json::Value,
    /// What the tool returned; `None` while it runs, or when the run was stopped
    /// during the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// How long the call took, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The call failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// Payload of `quality_score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QualityScore {
    /// From 0.0 to 1.0.
    pub quality_score: f64,
}

/// Payload of `follow_up_questions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FollowUpQuestions {
    /// The questions.
    pub follow_up_questions: Vec<String>,
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// The sum of both.
    pub total_tokens: u64,
}

impl Usage {
    /// The counts of two requests together (an answer over several rounds of tool
    /// calls).
    pub fn plus(self, other: Self) -> Self {
        Self::new(
            self.prompt_tokens.saturating_add(other.prompt_tokens),
            self.completion_tokens
                .saturating_add(other.completion_tokens),
        )
    }

    /// Usage with the total computed.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            // Counts come from upstreams: never let a bogus one overflow.
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// How long the answer took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timing {
    /// Time to the first token, if there was one.
    pub ttft_ms: Option<u64>,
    /// Time from the request to the end of generation.
    pub total_ms: u64,
}

/// Payload of `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Metadata {
    /// The assistant message.
    pub message_id: String,
    /// The model that answered.
    pub model: String,
    /// Token counts.
    pub usage: Usage,
    /// Timings.
    pub timing: Timing,
    /// Why generation stopped, when the model said (`stop`, `length`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// The usage was counted by tidewire because the model did not report it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// How long each stage of the pipeline took, in milliseconds, by stage name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub stages: std::collections::BTreeMap<String, u64>,
}

/// Payload of `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEvent {
    /// What happened, for a human.
    pub error: String,
    /// What happened, for a program: a `snake_case` code.
    pub code: String,
    /// Whether asking again may succeed.
    pub retryable: bool,
}

/// The status of an assistant message, and of the run that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Still being generated.
    Streaming,
    /// Generated to the end.
    Complete,
    /// Stopped by a cancel.
    Cancelled,
    /// Stopped by an error.
    Failed,
    /// Stopped by a shutdown or crash; the text up to the last flush is kept.
    Interrupted,
}

impl MessageStatus {
    /// The lowercase name, as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Streaming => "streaming",
            Self::Complete => "complete",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "streaming" => Self::Streaming,
            "complete" => Self::Complete,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            "interrupted" => Self::Interrupted,
            _ => return None,
        })
    }

    /// Whether the message is final.
    pub fn is_final(self) -> bool {
        self != Self::Streaming
    }
}

impl std::fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Payload of `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Done {
    /// How the run ended.
    pub status: MessageStatus,
}

/// An event whose name or payload is not part of the vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum EventParseError {
    /// The event name is unknown.
    #[error("unknown event name {0:?}")]
    UnknownEvent(String),
    /// The payload does not fit the event.
    #[error("bad payload for event {name:?}: {source}")]
    BadPayload {
        /// The event name.
        name: String,
        /// What serde said.
        source: serde_json::Error,
    },
}

impl ChatEvent {
    /// The native wire name (the SSE `event:` field).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Run(_) => "run",
            Self::Stage(_) => "stage",
            Self::Sources(_) => "sources",
            Self::Token(_) => "token",
            Self::ToolStarted(_) => "tool_started",
            Self::ToolFinished(_) => "tool_finished",
            Self::ToolCall(_) => "tool_call",
            Self::QualityScore(_) => "quality_score",
            Self::FollowUpQuestions(_) => "follow_up_questions",
            Self::Metadata(_) => "metadata",
            Self::Error(_) => "error",
            Self::Done(_) => "done",
        }
    }

    /// Appends the JSON payload (the SSE `data:` field) to `out`.
    pub fn write_data(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Self::Run(p) => serde_json::to_writer(out, p),
            Self::Stage(p) => serde_json::to_writer(out, p),
            Self::Sources(p) => serde_json::to_writer(out, p),
            Self::Token(p) => serde_json::to_writer(out, p),
            Self::ToolStarted(p) => serde_json::to_writer(out, p),
            Self::ToolFinished(p) => serde_json::to_writer(out, p),
            Self::ToolCall(p) => serde_json::to_writer(out, p),
            Self::QualityScore(p) => serde_json::to_writer(out, p),
            Self::FollowUpQuestions(p) => serde_json::to_writer(out, p),
            Self::Metadata(p) => serde_json::to_writer(out, p),
            Self::Error(p) => serde_json::to_writer(out, p),
            Self::Done(p) => serde_json::to_writer(out, p),
        }
    }

    /// The JSON payload as a string.
    pub fn data_json(&self) -> String {
        let mut out = Vec::new();
        // Serializing these plain structs into memory cannot fail.
        let _ = self.write_data(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Parses an event from its native wire name and JSON payload.
    pub fn from_wire(name: &str, data: &str) -> Result<Self, EventParseError> {
        fn parse<T: serde::de::DeserializeOwned>(
            name: &str,
            data: &str,
        ) -> Result<T, EventParseError> {
            serde_json::from_str(data).map_err(|source| EventParseError::BadPayload {
                name: name.to_owned(),
                source,
            })
        }
        Ok(match name {
            "run" => Self::Run(Box::new(parse(name, data)?)),
            "stage" => Self::Stage(parse(name, data)?),
            "sources" => Self::Sources(parse(name, data)?),
            "token" => Self::Token(parse(name, data)?),
            "tool_started" => Self::ToolStarted(Box::new(parse(name, data)?)),
            "tool_finished" => Self::ToolFinished(Box::new(parse(name, data)?)),
            "tool_call" => Self::ToolCall(Box::new(parse(name, data)?)),
            "quality_score" => Self::QualityScore(parse(name, data)?),
            "follow_up_questions" => Self::FollowUpQuestions(parse(name, data)?),
            "metadata" => Self::Metadata(Box::new(parse(name, data)?)),
            "error" => Self::Error(Box::new(parse(name, data)?)),
            "done" => Self::Done(parse(name, data)?),
            other => return Err(EventParseError::UnknownEvent(other.to_owned())),
        })
    }

    /// Whether this is the last event of a run.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done(_))
    }

    /// A `token` event.
    pub fn token(text: impl Into<String>) -> Self {
        Self::Token(Token { token: text.into() })
    }

    /// A `stage` event.
    pub fn stage(stage: impl Into<String>) -> Self {
        Self::Stage(Stage {
            stage: stage.into(),
        })
    }

    /// An `error` event.
    pub fn error(code: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        Self::Error(Box::new(ErrorEvent {
            error: message.into(),
            code: code.into(),
            retryable,
        }))
    }

    /// A `done` event.
    pub fn done(status: MessageStatus) -> Self {
        Self::Done(Done { status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_through_its_wire_form() {
        let events = [
            ChatEvent::Run(Box::new(RunStarted {
                run_id: "r".into(),
                conversation_id: "c".into(),
                message_id: "m".into(),
                events_url: "/api/runs/r/events".into(),
            })),
            ChatEvent::stage("generation"),
            ChatEvent::Sources(Sources {
                sources: vec![Source {
                    chunk_id: "1".into(),
                    document_name: "d".into(),
                    text: "t".into(),
                    score: 0.5,
                }],
            }),
            ChatEvent::token("hi"),
            ChatEvent::ToolStarted(Box::new(ToolStarted {
                tool_call_id: "t1".into(),
                tool_name: "search".into(),
                arguments: serde_json::json!({"q": "x"}),
            })),
            ChatEvent::ToolFinished(Box::new(ToolFinished {
                tool_call_id: "t1".into(),
                tool_name: "search".into(),
                duration_ms: 12,
                result: serde_json::json!([1, 2]),
                is_error: false,
            })),
            ChatEvent::QualityScore(QualityScore {
                quality_score: 0.75,
            }),
            ChatEvent::FollowUpQuestions(FollowUpQuestions {
                follow_up_questions: vec!["why?".into()],
            }),
            ChatEvent::Metadata(Box::new(Metadata {
                message_id: "m".into(),
                model: "synthetic".into(),
                usage: Usage::new(3, 4),
                timing: Timing {
                    ttft_ms: Some(1),
                    total_ms: 9,
                },
                finish_reason: Some("length".into()),
                usage_estimated: true,
                stages: [("generation".to_owned(), 8)].into(),
            })),
            ChatEvent::error("upstream_timeout", "the model did not answer", true),
            ChatEvent::done(MessageStatus::Cancelled),
        ];
        for event in events {
            let back = ChatEvent::from_wire(event.name(), &event.data_json()).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn an_event_is_small_because_runs_keep_every_one() {
        assert!(std::mem::size_of::<ChatEvent>() <= 32);
    }

    #[test]
    fn payloads_have_the_documented_shape() {
        assert_eq!(ChatEvent::token("a").data_json(), r#"{"token":"a"}"#);
        assert_eq!(
            ChatEvent::done(MessageStatus::Complete).data_json(),
            r#"{"status":"complete"}"#
        );
        assert_eq!(
            ChatEvent::error("bad", "msg", false).data_json(),
            r#"{"error":"msg","code":"bad","retryable":false}"#
        );
    }

    #[test]
    fn unknown_names_and_bad_payloads_are_errors() {
        assert!(matches!(
            ChatEvent::from_wire("nope", "{}"),
            Err(EventParseError::UnknownEvent(_))
        ));
        assert!(matches!(
            ChatEvent::from_wire("token", "{\"token\":1}"),
            Err(EventParseError::BadPayload { .. })
        ));
    }
}
