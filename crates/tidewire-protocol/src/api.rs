//! The JSON bodies of tidewire's native HTTP API.

use serde::{Deserialize, Serialize};

use crate::event::{MessageStatus, Source, Usage};

/// `POST /api/chat` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatRequest {
    /// The user's message.
    pub message: String,
    /// Continue this conversation; a new one is created when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// `false` answers with one JSON object at the end instead of a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Generation options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<ChatOptions>,
}

impl ChatRequest {
    /// A streaming request for `message` in a new conversation.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            conversation_id: None,
            stream: None,
            options: None,
        }
    }
}

/// Generation options of a chat request. An unknown option is an error, not
/// ignored: a typo (`max_token`) must not silently give a full answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChatOptions {
    /// The longest answer, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Pace of the synthetic backend; 0 means as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Which configured backend answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The document collection retrieval searches (`default` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Only these documents (by id) are searched, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<Vec<String>>,
    /// The model may call only these of the configured tools (`[]`: none), when
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
}

/// `POST /api/chat` answer when `stream` is `false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatResponse {
    /// The run that produced the answer.
    pub run_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The assistant message.
    pub message_id: String,
    /// How the run ended.
    pub status: MessageStatus,
    /// The answer text.
    pub content: String,
    /// Retrieved sources.
    pub sources: Vec<Source>,
    /// The answer's quality score, when scored.
    pub quality_score: Option<f64>,
    /// Suggested next questions.
    pub follow_up_questions: Vec<String>,
    /// The tools the answer called, with their results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<crate::ToolCallRecord>,
    /// Token counts, when known.
    pub usage: Option<Usage>,
    /// The error that ended the run, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::event::ErrorEvent>,
}

/// `GET /api/runs/{id}` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunView {
    /// The run's id.
    pub run_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The assistant message.
    pub message_id: String,
    /// `streaming` while the run goes on, then how it ended.
    pub status: MessageStatus,
    /// The id of the last event so far.
    pub last_event_id: u64,
    /// Where to attach to the run.
    pub events_url: String,
    /// The answer text so far.
    pub content: String,
    /// How many clients follow the run now.
    pub subscribers: usize,
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversation {
    /// Its id.
    pub id: String,
    /// The start of its first message.
    pub title: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, the time of its last message.
    pub updated_at: String,
}

/// `GET /api/conversations` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationList {
    /// Most recently updated first.
    pub conversations: Vec<Conversation>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The person asking.
    User,
    /// The model answering.
    Assistant,
}

impl Role {
    /// The lowercase name, as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// Its id.
    pub id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// Who wrote it.
    pub role: Role,
    /// Its text (for a streaming answer, up to the last flush).
    pub content: String,
    /// `complete` for user messages; for answers, how the run ended.
    pub status: MessageStatus,
    /// The run that wrote an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Token counts of an answer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The model that wrote an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The sources an answer drew on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    /// An answer's quality score, when scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_score: Option<f64>,
    /// The follow-up questions suggested with an answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow_up_questions: Vec<String>,
    /// The tools an answer called, with their results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<crate::ToolCallRecord>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// `GET /api/conversations/{id}/messages` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageList {
    /// The conversation.
    pub conversation_id: String,
    /// Oldest first.
    pub messages: Vec<Message>,
}

/// Every error outside a stream: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// A `snake_case` code for programs.
    pub code: String,
    /// What happened, for people.
    pub message: String,
}
