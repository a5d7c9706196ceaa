//! The store: conversations and their messages, and the records of the documents
//! of the retrieval index, behind the [`Store`] trait so the hub and the API never
//! know which database holds them. [`SqliteStore`] is the embedded default, for one
//! process; [`PostgresStore`] lets several tidewire nodes share one database. Both
//! give the same answers to the same calls: the tests of their behaviour are one
//! suite, run against each.

mod api_keys;
pub mod postgres;
mod rows;
pub mod sqlite;

#[cfg(test)]
mod contract_tests;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tidewire_protocol::api::Role;
use tidewire_protocol::{MessageStatus, Source, ToolCallRecord, Usage};

pub use api_keys::ApiKeys;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The conversation does not exist.
    #[error("conversation {0} not found")]
    ConversationNotFound(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The embedded database's writer failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A batch of writes could not be committed.
    #[error("store write failed: {0}")]
    WriteFailed(String),
    /// The store's writer has stopped (the server is shutting down).
    #[error("the store is closed")]
    Closed,
    /// Another tidewire holds the data directory.
    #[error(
        "the data directory {path} is in use by another tidewire (process {holder}); \
         stop it, or give this one another --data-dir"
    )]
    Locked {
        /// The data directory.
        path: std::path::PathBuf,
        /// What the lock file says of its holder (a process id), if anything.
        holder: String,
    },
    /// A PostgreSQL schema name that tidewire will not use.
    #[error(
        "invalid PostgreSQL schema name {0:?}: use 1 to 63 characters, each a lowercase \
         ASCII letter, a digit or _"
    )]
    InvalidSchema(String),
    /// The store broke one of its own rules: a bug, reported rather than hidden.
    #[error("store bug: {0}")]
    Internal(&'static str),
}

/// A point in time, as stored: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self(now_millis())
    }

    /// RFC 3339 with milliseconds.
    pub fn rfc3339(self) -> String {
        rfc3339(self.0)
    }

    /// How long ago this was (zero if it is in the future).
    pub fn elapsed(self) -> Duration {
        Duration::from_millis(u64::try_from(now_millis().saturating_sub(self.0)).unwrap_or(0))
    }
}

/// A stored conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    /// Its id.
    pub id: String,
    /// The start of its first message.
    pub title: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its last turn started.
    pub updated_at: Timestamp,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    /// Its id.
    pub id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// Its place in the conversation: 1, 2, 3, ...
    pub seq: i64,
    /// Who wrote it.
    pub role: Role,
    /// Its text (for a running answer, up to the last flush).
    pub content: String,
    /// `complete` for user messages; for answers, how their run ended.
    pub status: MessageStatus,
    /// The run that wrote an answer.
    pub run_id: Option<String>,
    /// The model that wrote an answer.
    pub model: Option<String>,
    /// Token counts of an answer, when known.
    pub usage: Option<Usage>,
    /// The error that ended an answer, as (code, message).
    pub error: Option<(String, String)>,
    /// The sources an answer drew on.
    pub sources: Vec<Source>,
    /// An answer's quality score, if scored.
    pub quality_score: Option<f64>,
    /// The follow-up questions suggested with an answer.
    pub follow_up_questions: Vec<String>,
    /// The tools an answer called, with their results.
    pub tool_calls: Vec<ToolCallRecord>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A new turn: the user's message and the answer about to be written.
#[derive(Debug, Clone)]
pub struct NewTurn {
    /// Continue this conversation, or create one when `None`.
    pub conversation_id: Option<String>,
    /// Create the named conversation if it does not exist (for clients that choose
    /// their conversation ids) instead of failing.
    pub create_missing: bool,
    /// The user's message.
    pub message: String,
    /// The run that writes the answer.
    pub run_id: String,
    /// Who asks: a conversation of another user is not found.
    pub user_id: String,
}

/// The ids a new turn got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The conversation (new or continued).
    pub conversation_id: String,
    /// The stored user message.
    pub user_message_id: String,
    /// The answer, stored as `streaming` with no content yet.
    pub assistant_message_id: String,
}

/// The end state of an answer.
#[derive(Debug, Clone)]
pub struct FinishedMessage {
    /// The answer.
    pub message_id: String,
    /// Its text, whole or partial.
    pub content: String,
    /// How its run ended.
    pub status: MessageStatus,
    /// The model that wrote it.
    pub model: Option<String>,
    /// Token counts, when known.
    pub usage: Option<Usage>,
    /// The error that ended it, as (code, message).
    pub error: Option<(String, String)>,
    /// The sources it drew on.
    pub sources: Vec<Source>,
    /// Its quality score, if scored.
    pub quality_score: Option<f64>,
    /// The follow-up questions suggested with it.
    pub follow_up_questions: Vec<String>,
    /// The tools it called, with their results.
    pub tool_calls: Vec<ToolCallRecord>,
}

/// New text of a running answer since its last flush.
#[derive(Debug, Clone)]
pub struct PartialAnswer {
    /// The answer.
    pub message_id: String,
    /// Where `text` starts in the answer, in bytes.
    pub position: usize,
    /// The text from `position` on.
    pub text: String,
}

/// An API key, as stored: never the key itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Its id (shown by `tidewire keys list`, used to revoke it).
    pub id: String,
    /// The user it authenticates.
    pub user_id: String,
    /// A name for people.
    pub name: String,
    /// SHA-256 of the key, in hex.
    pub key_hash: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// The user of every request when authentication is off.
pub const LOCAL_USER: &str = "local";

/// The source of documents uploaded without a file path.
pub const UPLOAD_SOURCE: &str = "upload";

/// A stored document of the retrieval index (its chunks live in the index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRecord {
    /// Its id (also the prefix of its chunks' ids).
    pub id: String,
    /// Its collection.
    pub collection: String,
    /// Its name: a file name, or the name it was uploaded with.
    pub name: String,
    /// The absolute path it was read from, or [`UPLOAD_SOURCE`].
    pub source: String,
    /// Its format: `markdown`, `text`, `html` or `pdf`.
    pub format: String,
    /// SHA-256 of its bytes, in hex.
    pub content_hash: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// How many chunks it has in the index.
    pub chunks: u64,
    /// When it was first ingested.
    pub created_at: Timestamp,
    /// When its content last changed.
    pub updated_at: Timestamp,
}

/// What makes a document the same document when it is ingested again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DocumentKey {
    /// A file (or another named source): its collection and source.
    Source {
        /// The collection.
        collection: String,
        /// The source.
        source: String,
    },
    /// An upload without a source: its collection and name.
    Upload {
        /// The collection.
        collection: String,
        /// The name.
        name: String,
    },
}

impl DocumentKey {
    /// The key of a document from `source` (`None` for an upload) named `name`.
    pub fn new(collection: &str, source: Option<&str>, name: &str) -> Self {
        match source {
            Some(source) if source != UPLOAD_SOURCE => Self::Source {
                collection: collection.to_owned(),
                source: source.to_owned(),
            },
            _ => Self::Upload {
                collection: collection.to_owned(),
                name: name.to_owned(),
            },
        }
    }
}

/// Conversations, messages and document records, durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores the user message and a `streaming` answer in one transaction, creating
    /// the conversation when none is given.
    async fn start_turn(&self, turn: NewTurn) -> Result<Turn, StoreError>;
    /// Appends the new text of running answers, all in one transaction. Writing the
    /// same piece twice changes nothing.
    async fn flush_partial(&self, answers: Vec<PartialAnswer>) -> Result<(), StoreError>;
    /// Writes the final text and status of an answer; `false` if the answer no
    /// longer exists (its conversation was deleted). Writing it twice changes nothing.
    async fn finish_message(&self, message: FinishedMessage) -> Result<bool, StoreError>;
    /// Marks every answer still `streaming` as `interrupted`, folding its flushed
    /// pieces into its text; run at start-up, when no run can be live (on a database
    /// that other nodes share, their runs are: see
    /// [`interrupt_runs`](Self::interrupt_runs)). Returns how many were marked.
    async fn interrupt_streaming(&self) -> Result<u64, StoreError>;
    /// The run ids of the answers still `streaming`, with their `updated_at` (when
    /// their turn started: flushes do not change it), oldest first. A cluster looks
    /// here for the answers of a node that died.
    async fn streaming_runs(&self) -> Result<Vec<(String, Timestamp)>, StoreError>;
    /// Like [`interrupt_streaming`](Self::interrupt_streaming), but only for the
    /// answers of these runs that are still `streaming`. Returns how many were
    /// marked.
    async fn interrupt_runs(&self, run_ids: Vec<String>) -> Result<u64, StoreError>;
    /// Whether other tidewire nodes share this store (their records are not this
    /// node's to reconcile with its own files).
    fn is_shared(&self) -> bool {
        false
    }
    /// Whether the store answers (a trivial read), for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Whether the conversation exists and is `user_id`'s.
    async fn conversation_exists(&self, id: &str, user_id: &str) -> Result<bool, StoreError>;
    /// The most recently updated conversations of `user_id`.
    async fn list_conversations(
        &self,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<ConversationRecord>, StoreError>;
    /// The messages of a conversation of `user_id`, in order; `None` if it does not
    /// exist or is another user's.
    async fn list_messages(
        &self,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<Option<Vec<MessageRecord>>, StoreError>;
    /// Deletes a conversation of `user_id` and its messages; `false` if it did not
    /// exist or is another user's.
    async fn delete_conversation(&self, id: &str, user_id: &str) -> Result<bool, StoreError>;
    /// The answer a run of `user_id` wrote, if any.
    async fn message_by_run(
        &self,
        run_id: &str,
        user_id: &str,
    ) -> Result<Option<MessageRecord>, StoreError>;
    /// The API key with this hash, revoked and expired ones included (keys are
    /// made and revoked by `tidewire keys`, through [`ApiKeys`]).
    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// The document stored under `key`, if any.
    async fn find_document(&self, key: &DocumentKey) -> Result<Option<DocumentRecord>, StoreError>;
    /// The document with this id, if any.
    async fn get_document(&self, id: &str) -> Result<Option<DocumentRecord>, StoreError>;
    /// The documents of `collection` (of every collection when `None`), by
    /// collection and name.
    async fn list_documents(
        &self,
        collection: Option<&str>,
    ) -> Result<Vec<DocumentRecord>, StoreError>;
    /// Stores a document record, replacing the one with its id (whose creation
    /// time is kept).
    async fn put_document(&self, document: DocumentRecord) -> Result<(), StoreError>;
    /// Deletes these documents; returns how many existed.
    async fn delete_documents(&self, ids: Vec<String>) -> Result<u64, StoreError>;
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_millis() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 with milliseconds, for a time stored as Unix milliseconds.
pub(crate) fn rfc3339(millis: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

/// A conversation title: the start of its first message, on one line.
pub(crate) fn title_of(message: &str) -> String {
    const MAX_CHARS: usize = 80;
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_one_short_line() {
        assert_eq!(title_of("  hello\n  world "), "hello world");
        let long = "é".repeat(100);
        assert_eq!(title_of(&long).chars().count(), 81);
    }

    #[test]
    fn times_render_as_rfc3339() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
