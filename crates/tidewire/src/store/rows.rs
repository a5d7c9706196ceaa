//! The rows of the store's tables as both databases return them, and their
//! conversion to records: the SQLite and PostgreSQL schemas give the same column
//! names and types (integers as i64, JSON as text), so one decoding serves both.

use sqlx::FromRow;
use tidewire_protocol::MessageStatus;
use tidewire_protocol::Usage;
use tidewire_protocol::api::Role;

use super::{ApiKeyRecord, ConversationRecord, DocumentRecord, MessageRecord, Timestamp};

#[derive(FromRow)]
pub(super) struct ConversationRow {
    id: String,
    title: String,
    created_at: i64,
    updated_at: i64,
}

impl From<ConversationRow> for ConversationRecord {
    fn from(row: ConversationRow) -> Self {
        Self {
            id: row.id,
            title: row.title,
            created_at: Timestamp(row.created_at),
            updated_at: Timestamp(row.updated_at),
        }
    }
}

#[derive(FromRow)]
pub(super) struct MessageRow {
    id: String,
    conversation_id: String,
    seq: i64,
    role: String,
    content: String,
    status: String,
    run_id: Option<String>,
    model: Option<String>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    error_code: Option<String>,
    error_message: Option<String>,
    sources: Option<String>,
    quality_score: Option<f64>,
    follow_up_questions: Option<String>,
    tool_calls: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<MessageRow> for MessageRecord {
    fn from(row: MessageRow) -> Self {
        let usage = match (row.prompt_tokens, row.completion_tokens) {
            (Some(prompt), Some(completion)) => Some(Usage::new(count(prompt), count(completion))),
            _ => None,
        };
        Self {
            id: row.id,
            conversation_id: row.conversation_id,
            seq: row.seq,
            role: if row.role == "user" {
                Role::User
            } else {
                Role::Assistant
            },
            content: row.content,
            // The CHECK constraint allows only known statuses.
            status: MessageStatus::parse(&row.status).unwrap_or(MessageStatus::Failed),
            run_id: row.run_id,
            model: row.model,
            usage,
            error: row.error_code.zip(row.error_message),
            // Written by the store itself as JSON; unreadable is treated as none.
            sources: row
                .sources
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
            quality_score: row.quality_score,
            follow_up_questions: row
                .follow_up_questions
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
            tool_calls: row
                .tool_calls
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
            created_at: Timestamp(row.created_at),
            updated_at: Timestamp(row.updated_at),
        }
    }
}

#[derive(FromRow)]
pub(super) struct DocumentRow {
    id: String,
    collection: String,
    name: String,
    source: String,
    format: String,
    content_hash: String,
    bytes: i64,
    chunks: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<DocumentRow> for DocumentRecord {
    fn from(row: DocumentRow) -> Self {
        Self {
            id: row.id,
            collection: row.collection,
            name: row.name,
            source: row.source,
            format: row.format,
            content_hash: row.content_hash,
            bytes: count(row.bytes),
            chunks: count(row.chunks),
            created_at: Timestamp(row.created_at),
            updated_at: Timestamp(row.updated_at),
        }
    }
}

/// The columns of a document record.
pub(super) const DOCUMENT_COLUMNS: &str =
    "id, collection, name, source, format, content_hash, bytes, chunks, created_at, updated_at";

#[derive(FromRow)]
pub(super) struct KeyRow {
    id: String,
    user_id: String,
    name: String,
    key_hash: String,
    prefix: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<KeyRow> for ApiKeyRecord {
    fn from(row: KeyRow) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            key_hash: row.key_hash,
            prefix: row.prefix,
            created_at: Timestamp(row.created_at),
            expires_at: row.expires_at.map(Timestamp),
            revoked_at: row.revoked_at.map(Timestamp),
        }
    }
}

/// The columns of an API key.
pub(super) const KEY_COLUMNS: &str =
    "id, user_id, name, key_hash, prefix, created_at, expires_at, revoked_at";

/// A count as stored (never negative) as a count.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A count as stored.
pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A non-empty list as JSON; `None` (NULL) for an empty one.
pub(super) fn json_list<T: serde::Serialize>(items: &[T]) -> Option<String> {
    (!items.is_empty())
        .then(|| serde_json::to_string(items).ok())
        .flatten()
}
