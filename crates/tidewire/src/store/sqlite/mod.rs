//! The embedded store: SQLite in WAL mode, through sqlx.
//!
//! Every write goes to the single writer task of [`writer`] (group commit, multi-row
//! statements). Reads go through a small pool; WAL lets them run beside the writer
//! and see every acknowledged write.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, FromRow};
use tidewire_protocol::api::Role;
use tidewire_protocol::{MessageStatus, Usage};
use tokio::sync::{mpsc, oneshot};

use super::{
    ApiKeyRecord, ConversationRecord, DocumentKey, DocumentRecord, FinishedMessage, MessageRecord,
    NewTurn, PartialAnswer, Store, StoreError, Timestamp, Turn,
};

mod documents;
mod keys;
mod writer;

pub use keys::ApiKeys;

use writer::{Job, Op, Outcome};

/// The SQLite store. Cloning shares the same database and writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reads: SqlitePool,
    writes: mpsc::Sender<Job>,
    /// Held for as long as the store is open: one tidewire per data directory.
    _lock: Arc<File>,
}

/// Takes the data directory's lock file, so a second tidewire on the same data
/// refuses to start instead of marking the first one's answers `interrupted`. The
/// lock is the operating system's (released when the process ends, even by a
/// crash); the file holds the process id, for the error message.
fn lock_data_dir(data_dir: &Path) -> Result<File, StoreError> {
    let path = data_dir.join("tidewire.lock");
    let io = |source| StoreError::DataDir {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    if let Err(error) = file.try_lock() {
        return match error {
            std::fs::TryLockError::WouldBlock => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                Err(StoreError::Locked {
                    path: data_dir.to_owned(),
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder.into()
                    },
                })
            }
            std::fs::TryLockError::Error(error) => Err(io(error)),
        };
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

impl SqliteStore {
    /// Opens (creating if needed) `tidewire.db` in `data_dir` and brings its schema
    /// up to date.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let lock = lock_data_dir(data_dir)?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("tidewire.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction on a process crash; only
            // a power loss can take back the last few.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&reads).await?;
        // The writer never checkpoints; see the writer module.
        let writer =
            SqliteConnection::connect_with(&options.clone().pragma("wal_autocheckpoint", "0"))
                .await?;
        let writes = writer::spawn(writer, reads.clone());
        Ok(Self {
            reads,
            writes,
            _lock: Arc::new(lock),
        })
    }

    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.writes
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    /// A write whose outcome is a row count.
    async fn write_rows(&self, op: Op) -> Result<u64, StoreError> {
        match self.write(op).await? {
            Outcome::Rows(rows) => Ok(rows),
            Outcome::Turn(_) => Err(StoreError::Internal("a row write answered with a turn")),
        }
    }
}

#[derive(FromRow)]
struct ConversationRow {
    id: String,
    title: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(FromRow)]
struct MessageRow {
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

impl From<MessageRow> for MessageRecord {
    fn from(row: MessageRow) -> Self {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
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

/// The columns of a message; a running answer's content is its flushed pieces.
const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, role, \
                               content || coalesce((SELECT group_concat(p.text, '' ORDER BY p.position) \
                               FROM answer_parts p WHERE p.message_id = messages.id), '') AS content, \
                               status, run_id, model, \
                               prompt_tokens, completion_tokens, error_code, error_message, \
                               sources, quality_score, follow_up_questions, tool_calls, \
                               created_at, updated_at";

#[async_trait]
impl Store for SqliteStore {
    async fn start_turn(&self, turn: NewTurn) -> Result<Turn, StoreError> {
        match self.write(Op::StartTurn(turn)).await? {
            Outcome::Turn(turn) => Ok(turn),
            Outcome::Rows(_) => Err(StoreError::Internal("a turn write answered with rows")),
        }
    }

    async fn flush_partial(&self, answers: Vec<PartialAnswer>) -> Result<(), StoreError> {
        self.write_rows(Op::Flush(answers)).await.map(drop)
    }

    async fn finish_message(&self, message: FinishedMessage) -> Result<bool, StoreError> {
        self.write_rows(Op::Finish(message))
            .await
            .map(|rows| rows > 0)
    }

    async fn interrupt_streaming(&self) -> Result<u64, StoreError> {
        self.write_rows(Op::InterruptStreaming).await
    }

    async fn streaming_runs(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT run_id, updated_at FROM messages \
             WHERE status = 'streaming' AND run_id IS NOT NULL ORDER BY updated_at, run_id",
        )
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(run_id, at)| (run_id, Timestamp(at)))
            .collect())
    }

    async fn interrupt_runs(&self, run_ids: Vec<String>) -> Result<u64, StoreError> {
        if run_ids.is_empty() {
            return Ok(0);
        }
        self.write_rows(Op::InterruptRuns(run_ids)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        Ok(())
    }

    async fn conversation_exists(&self, id: &str, user_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM conversations WHERE id = ? AND user_id = ?")
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.is_some())
    }

    async fn list_conversations(
        &self,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let rows: Vec<ConversationRow> = sqlx::query_as(
            "SELECT id, title, created_at, updated_at FROM conversations WHERE user_id = ? \
             ORDER BY updated_at DESC, id DESC LIMIT ?",
        )
        .bind(user_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.into_iter().map(ConversationRecord::from).collect())
    }

    async fn list_messages(
        &self,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<Option<Vec<MessageRecord>>, StoreError> {
        if !self.conversation_exists(conversation_id, user_id).await? {
            return Ok(None);
        }
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY seq"
        ))
        .bind(conversation_id)
        .fetch_all(&self.reads)
        .await?;
        Ok(Some(rows.into_iter().map(MessageRecord::from).collect()))
    }

    async fn delete_conversation(&self, id: &str, user_id: &str) -> Result<bool, StoreError> {
        self.write_rows(Op::DeleteConversation {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
        })
        .await
        .map(|rows| rows > 0)
    }

    async fn message_by_run(
        &self,
        run_id: &str,
        user_id: &str,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let row: Option<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE run_id = ? AND conversation_id IN \
             (SELECT id FROM conversations WHERE user_id = ?)"
        ))
        .bind(run_id)
        .bind(user_id)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(MessageRecord::from))
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(keys::find(&self.reads, key_hash).await?)
    }

    async fn find_document(&self, key: &DocumentKey) -> Result<Option<DocumentRecord>, StoreError> {
        Ok(documents::find(&self.reads, key).await?)
    }

    async fn get_document(&self, id: &str) -> Result<Option<DocumentRecord>, StoreError> {
        Ok(documents::get(&self.reads, id).await?)
    }

    async fn list_documents(
        &self,
        collection: Option<&str>,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        Ok(documents::list(&self.reads, collection).await?)
    }

    async fn put_document(&self, document: DocumentRecord) -> Result<(), StoreError> {
        self.write_rows(Op::PutDocument(document)).await.map(drop)
    }

    async fn delete_documents(&self, ids: Vec<String>) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write_rows(Op::DeleteDocuments(ids)).await
    }
}

#[cfg(test)]
mod tests {
    use futures_util::future::join_all;

    use super::*;
    use crate::store::FinishedMessage;

    fn turn(conversation_id: Option<&str>, message: &str) -> NewTurn {
        NewTurn {
            conversation_id: conversation_id.map(str::to_owned),
            create_missing: false,
            message: message.to_owned(),
            run_id: crate::store::new_id(),
            user_id: crate::store::LOCAL_USER.into(),
        }
    }

    #[tokio::test]
    async fn concurrent_writes_batch_together_and_each_gets_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let first = store.start_turn(turn(None, "first")).await.unwrap();
        // Many turns at once land in few batches: new conversations, continued ones
        // and ones naming a conversation that does not exist.
        let results = join_all((0..60).map(|i| {
            let store = store.clone();
            let conversation = match i % 3 {
                0 => None,
                1 => Some(first.conversation_id.clone()),
                _ => Some(format!("missing-{i}")),
            };
            async move {
                store
                    .start_turn(turn(conversation.as_deref(), &format!("q{i}")))
                    .await
            }
        }))
        .await;
        for (i, result) in results.iter().enumerate() {
            match i % 3 {
                2 => assert!(
                    matches!(result, Err(StoreError::ConversationNotFound(_))),
                    "{i}"
                ),
                1 => assert_eq!(
                    result.as_ref().unwrap().conversation_id,
                    first.conversation_id
                ),
                _ => assert_ne!(
                    result.as_ref().unwrap().conversation_id,
                    first.conversation_id
                ),
            }
        }
        let messages = store
            .list_messages(&first.conversation_id, "local")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(messages.len(), 2 + 2 * 20);
        for pair in messages.chunks(2) {
            assert_eq!(pair[0].role, Role::User);
            assert_eq!(pair[1].role, Role::Assistant);
            assert_eq!(pair[1].status, MessageStatus::Streaming);
        }
        assert_eq!(
            store.list_conversations("local", 500).await.unwrap().len(),
            1 + 20
        );

        // A flush and a finish of the same answer in one batch: the finish wins,
        // whatever their order.
        let answer = first.assistant_message_id.clone();
        let flush = store.flush_partial(vec![PartialAnswer {
            message_id: answer.clone(),
            position: 0,
            text: "part".into(),
        }]);
        let finish = store.finish_message(FinishedMessage {
            message_id: answer.clone(),
            content: "whole answer".into(),
            status: MessageStatus::Complete,
            model: Some("synthetic".into()),
            usage: Some(Usage::new(2, 3)),
            error: None,
            sources: Vec::new(),
            quality_score: Some(0.5),
            follow_up_questions: vec!["why?".into()],
            tool_calls: vec![tidewire_protocol::ToolCallRecord {
                tool_call_id: "call_1".into(),
                tool_name: "lookup".into(),
                arguments: serde_json::json!({"q": "x"}),
                result: Some(serde_json::json!({"found": 1})),
                duration_ms: Some(4),
                is_error: false,
            }],
        });
        let (flushed, finished) = tokio::join!(flush, finish);
        flushed.unwrap();
        finished.unwrap();
        let late_flush = store.flush_partial(vec![PartialAnswer {
            message_id: answer.clone(),
            position: 4,
            text: "stale".into(),
        }]);
        late_flush.await.unwrap();
        let stored = store
            .message_by_run(&messages[1].run_id.clone().unwrap(), "local")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.content, "whole answer");
        assert_eq!(stored.status, MessageStatus::Complete);
        assert_eq!(stored.usage, Some(Usage::new(2, 3)));
        assert_eq!(stored.quality_score, Some(0.5));
        assert_eq!(stored.follow_up_questions, ["why?"]);
        assert_eq!(stored.tool_calls[0].tool_name, "lookup");
        assert_eq!(
            stored.tool_calls[0].result,
            Some(serde_json::json!({"found": 1}))
        );

        // A delete between turns keeps its place in the order.
        let (deleted, after) = tokio::join!(
            store.delete_conversation(&first.conversation_id, "local"),
            store.start_turn(turn(Some(&first.conversation_id), "too late"))
        );
        assert!(deleted.unwrap());
        assert!(matches!(after, Err(StoreError::ConversationNotFound(_))));
        assert!(
            store
                .list_messages(&first.conversation_id, "local")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn streaming_answers_become_interrupted_keeping_their_text() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let turn = store.start_turn(turn(None, "crash")).await.unwrap();
        let piece = |position: usize, text: &str| PartialAnswer {
            message_id: turn.assistant_message_id.clone(),
            position,
            text: text.into(),
        };
        store.flush_partial(vec![piece(0, "ha")]).await.unwrap();
        // A retried piece replaces itself; the next piece follows it.
        store.flush_partial(vec![piece(0, "ha")]).await.unwrap();
        store.flush_partial(vec![piece(2, "lf")]).await.unwrap();
        let running = store
            .list_messages(&turn.conversation_id, "local")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(running[1].content, "half");
        assert_eq!(running[1].status, MessageStatus::Streaming);
        assert_eq!(store.interrupt_streaming().await.unwrap(), 1);
        let messages = store
            .list_messages(&turn.conversation_id, "local")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(messages[1].status, MessageStatus::Interrupted);
        assert_eq!(messages[1].content, "half");
        // The pieces are folded into the text, not left beside it.
        let (pieces,): (i64,) = sqlx::query_as("SELECT count(*) FROM answer_parts")
            .fetch_one(&store.reads)
            .await
            .unwrap();
        assert_eq!(pieces, 0);
        let (content,): (String,) = sqlx::query_as("SELECT content FROM messages WHERE id = ?")
            .bind(&turn.assistant_message_id)
            .fetch_one(&store.reads)
            .await
            .unwrap();
        assert_eq!(content, "half");
    }

    #[tokio::test]
    async fn interrupt_runs_marks_only_the_streaming_answers_of_those_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let runs: Vec<NewTurn> = (0..3).map(|i| turn(None, &format!("q{i}"))).collect();
        let mut turns = Vec::new();
        for new in &runs {
            turns.push(store.start_turn(new.clone()).await.unwrap());
        }
        store
            .flush_partial(vec![PartialAnswer {
                message_id: turns[0].assistant_message_id.clone(),
                position: 0,
                text: "a1".into(),
            }])
            .await
            .unwrap();
        let streaming: Vec<String> = store
            .streaming_runs()
            .await
            .unwrap()
            .into_iter()
            .map(|(run, _)| run)
            .collect();
        assert_eq!(streaming.len(), 3);
        let marked = store
            .interrupt_runs(vec![runs[0].run_id.clone(), "no-such-run".into()])
            .await
            .unwrap();
        assert_eq!(marked, 1);
        assert_eq!(store.streaming_runs().await.unwrap().len(), 2);
        let interrupted = store
            .message_by_run(&runs[0].run_id, "local")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(interrupted.status, MessageStatus::Interrupted);
        assert_eq!(interrupted.content, "a1");
        assert_eq!(
            store
                .interrupt_runs(vec![runs[0].run_id.clone()])
                .await
                .unwrap(),
            0
        );
        assert_eq!(store.interrupt_runs(Vec::new()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn messages_keep_their_order_without_rowid() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let first = store.start_turn(turn(None, "one")).await.unwrap();
        let id = first.conversation_id.clone();
        // Turns of one conversation in one batch get consecutive places.
        let later =
            join_all((0..5).map(|i| store.start_turn(turn(Some(&id), &format!("q{i}"))))).await;
        assert!(later.iter().all(Result::is_ok));
        // Scramble the rowids: the order must not move.
        sqlx::query("UPDATE messages SET rowid = rowid + 1000 * (seq % 3)")
            .execute(&store.reads)
            .await
            .unwrap();
        let messages = store.list_messages(&id, "local").await.unwrap().unwrap();
        let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
        assert_eq!(messages[0].content, "one");
        assert_eq!(messages[2].content, "q0");
        assert_eq!(messages[10].content, "q4");
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_directory_is_refused_while_the_first_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let error = SqliteStore::open(dir.path()).await.unwrap_err();
        assert!(matches!(error, StoreError::Locked { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&std::process::id().to_string()) && message.contains("in use"),
            "{message}"
        );
        drop(store);
        SqliteStore::open(dir.path()).await.unwrap();
    }
}
