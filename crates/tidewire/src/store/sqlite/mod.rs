//! The embedded store: SQLite in WAL mode, through sqlx.
//!
//! Every write goes to the single writer task of [`writer`] (group commit, multi-row
//! statements). Reads go through a small pool; WAL lets them run beside the writer
//! and see every acknowledged write.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, FromRow};
use tidewire_protocol::api::{Conversation, Message, Role};
use tidewire_protocol::{MessageStatus, Usage};
use tokio::sync::{mpsc, oneshot};

use super::{FinishedMessage, NewTurn, PartialAnswer, Store, StoreError, Turn, rfc3339};

mod writer;

use writer::{Job, Op, Outcome};

/// The SQLite store. Cloning shares the same database and writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reads: SqlitePool,
    writes: mpsc::Sender<Job>,
}

impl SqliteStore {
    /// Opens (creating if needed) `tidewire.db` in `data_dir` and brings its schema
    /// up to date.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
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
        Ok(Self { reads, writes })
    }

    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.writes
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
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
    role: String,
    content: String,
    status: String,
    run_id: Option<String>,
    model: Option<String>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl From<ConversationRow> for Conversation {
    fn from(row: ConversationRow) -> Self {
        Self {
            id: row.id,
            title: row.title,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let usage = match (row.prompt_tokens, row.completion_tokens) {
            (Some(prompt), Some(completion)) => Some(Usage::new(count(prompt), count(completion))),
            _ => None,
        };
        Self {
            id: row.id,
            conversation_id: row.conversation_id,
            role: if row.role == "user" {
                Role::User
            } else {
                Role::Assistant
            },
            content: row.content,
            // The CHECK constraint allows only known statuses.
            status: MessageStatus::parse(&row.status).unwrap_or(MessageStatus::Failed),
            run_id: row.run_id,
            usage,
            model: row.model,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

/// The columns of a message; a running answer's content is its flushed pieces.
const MESSAGE_COLUMNS: &str = "id, conversation_id, role, \
                               content || coalesce((SELECT group_concat(p.text, '' ORDER BY p.position) \
                               FROM answer_parts p WHERE p.message_id = messages.id), '') AS content, \
                               status, run_id, model, \
                               prompt_tokens, completion_tokens, created_at, updated_at";

#[async_trait]
impl Store for SqliteStore {
    async fn start_turn(&self, turn: NewTurn) -> Result<Turn, StoreError> {
        match self.write(Op::StartTurn(turn)).await? {
            Outcome::Turn(turn) => Ok(turn),
            Outcome::Rows(_) => Err(StoreError::Closed),
        }
    }

    async fn flush_partial(&self, answers: Vec<PartialAnswer>) -> Result<(), StoreError> {
        self.write(Op::Flush(answers)).await.map(drop)
    }

    async fn finish_message(&self, message: FinishedMessage) -> Result<(), StoreError> {
        self.write(Op::Finish(message)).await.map(drop)
    }

    async fn interrupt_streaming(&self) -> Result<u64, StoreError> {
        match self.write(Op::InterruptStreaming).await? {
            Outcome::Rows(rows) => Ok(rows),
            Outcome::Turn(_) => Ok(0),
        }
    }

    async fn conversation_exists(&self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM conversations WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.is_some())
    }

    async fn list_conversations(&self, limit: u32) -> Result<Vec<Conversation>, StoreError> {
        let rows: Vec<ConversationRow> = sqlx::query_as(
            "SELECT id, title, created_at, updated_at FROM conversations \
             ORDER BY updated_at DESC, id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.into_iter().map(Conversation::from).collect())
    }

    async fn list_messages(
        &self,
        conversation_id: &str,
    ) -> Result<Option<Vec<Message>>, StoreError> {
        if !self.conversation_exists(conversation_id).await? {
            return Ok(None);
        }
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY rowid"
        ))
        .bind(conversation_id)
        .fetch_all(&self.reads)
        .await?;
        Ok(Some(rows.into_iter().map(Message::from).collect()))
    }

    async fn delete_conversation(&self, id: &str) -> Result<bool, StoreError> {
        match self.write(Op::DeleteConversation(id.to_owned())).await? {
            Outcome::Rows(rows) => Ok(rows > 0),
            Outcome::Turn(_) => Ok(false),
        }
    }

    async fn message_by_run(&self, run_id: &str) -> Result<Option<Message>, StoreError> {
        let row: Option<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE run_id = ?"
        ))
        .bind(run_id)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(Message::from))
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
            message: message.to_owned(),
            run_id: crate::store::new_id(),
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
            .list_messages(&first.conversation_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(messages.len(), 2 + 2 * 20);
        for pair in messages.chunks(2) {
            assert_eq!(pair[0].role, Role::User);
            assert_eq!(pair[1].role, Role::Assistant);
            assert_eq!(pair[1].status, MessageStatus::Streaming);
        }
        assert_eq!(store.list_conversations(500).await.unwrap().len(), 1 + 20);

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
            .message_by_run(&messages[1].run_id.clone().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.content, "whole answer");
        assert_eq!(stored.status, MessageStatus::Complete);
        assert_eq!(stored.usage, Some(Usage::new(2, 3)));

        // A delete between turns keeps its place in the order.
        let (deleted, after) = tokio::join!(
            store.delete_conversation(&first.conversation_id),
            store.start_turn(turn(Some(&first.conversation_id), "too late"))
        );
        assert!(deleted.unwrap());
        assert!(matches!(after, Err(StoreError::ConversationNotFound(_))));
        assert!(
            store
                .list_messages(&first.conversation_id)
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
            .list_messages(&turn.conversation_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(running[1].content, "half");
        assert_eq!(running[1].status, MessageStatus::Streaming);
        assert_eq!(store.interrupt_streaming().await.unwrap(), 1);
        let messages = store
            .list_messages(&turn.conversation_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(messages[1].status, MessageStatus::Interrupted);
        assert_eq!(messages[1].content, "half");
    }
}
