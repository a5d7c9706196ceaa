//! The embedded store: SQLite in WAL mode.
//!
//! Every write goes through the single connection of [`writer`] (rusqlite): on its
//! thread, in groups, or a lone new turn on the caller's. Reads go through a small sqlx pool; WAL lets them run beside the
//! writer and see every acknowledged write.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::rows::{ConversationRow, MessageRow};
use super::{
    ApiKeyRecord, ConversationRecord, DocumentKey, DocumentRecord, FinishedMessage, MessageRecord,
    NewTurn, PartialAnswer, Store, StoreError, Timestamp, Turn,
};

mod documents;
pub(super) mod keys;
mod writer;

use writer::{Op, Outcome, Writer};

/// The SQLite store. Cloning shares the same database and writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reads: SqlitePool,
    writes: Writer,
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
        let database = data_dir.join("tidewire.db");
        let options = SqliteConnectOptions::new()
            .filename(&database)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction on a process crash; only
            // a power loss can take back the last few.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&reads).await?;
        let writes = Writer::spawn(&database, reads.clone())?;
        Ok(Self {
            reads,
            writes,
            _lock: Arc::new(lock),
        })
    }

    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        self.writes.write(op).await
    }

    /// A write whose outcome is a row count.
    async fn write_rows(&self, op: Op) -> Result<u64, StoreError> {
        match self.write(op).await? {
            Outcome::Rows(rows) => Ok(rows),
            Outcome::Turn(_) => Err(StoreError::Internal("a row write answered with a turn")),
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
    use crate::store::contract_tests::Backend;
    use crate::store::{ApiKeys, LOCAL_USER};

    impl Backend for SqliteStore {
        type Place = tempfile::TempDir;

        fn place() -> Self::Place {
            tempfile::tempdir().unwrap()
        }

        async fn open(place: &Self::Place) -> (Self, ApiKeys) {
            let store = SqliteStore::open(place.path()).await.unwrap();
            (store, ApiKeys::open(place.path()).await.unwrap())
        }

        async fn pieces(&self) -> i64 {
            sqlx::query_scalar("SELECT count(*) FROM answer_parts")
                .fetch_one(&self.reads)
                .await
                .unwrap()
        }

        async fn bare_content(&self, message_id: &str) -> String {
            sqlx::query_scalar("SELECT content FROM messages WHERE id = ?")
                .bind(message_id)
                .fetch_one(&self.reads)
                .await
                .unwrap()
        }
    }

    fn turn(conversation_id: Option<&str>, message: &str) -> NewTurn {
        NewTurn {
            conversation_id: conversation_id.map(str::to_owned),
            create_missing: false,
            message: message.to_owned(),
            run_id: crate::store::new_id(),
            user_id: LOCAL_USER.into(),
        }
    }

    #[tokio::test]
    async fn writes_sent_together_are_applied_in_the_order_they_were_sent() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let first = store.start_turn(turn(None, "first")).await.unwrap();
        // A delete between turns of one batch keeps its place in the order.
        let (before, deleted, after) = tokio::join!(
            store.start_turn(turn(Some(&first.conversation_id), "in time")),
            store.delete_conversation(&first.conversation_id, LOCAL_USER),
            store.start_turn(turn(Some(&first.conversation_id), "too late"))
        );
        before.unwrap();
        assert!(deleted.unwrap());
        assert!(matches!(after, Err(StoreError::ConversationNotFound(_))));
        assert!(
            store
                .list_messages(&first.conversation_id, LOCAL_USER)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_arriving_together_each_get_their_own_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let first = store.start_turn(turn(None, "first")).await.unwrap();
        let id = first.conversation_id;
        // Some are committed by the tasks themselves, some by the writer thread,
        // from both runtime threads: no two may take the same place.
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                let id = id.clone();
                tokio::spawn(
                    async move { store.start_turn(turn(Some(&id), &format!("q{i}"))).await },
                )
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let messages = store.list_messages(&id, LOCAL_USER).await.unwrap().unwrap();
        let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=402).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_turn_after_a_whole_checkpoint_is_left_to_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.start_turn(turn(None, "before")).await.unwrap();
        // The checkpointer runs every second.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !store.writes.log_restarts() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("no checkpoint copied the log back");
        // Only the thread clears the mark: a turn committed here would leave it.
        store.start_turn(turn(None, "after")).await.unwrap();
        assert!(!store.writes.log_restarts());
    }

    #[tokio::test]
    async fn a_turn_waits_for_another_process_holding_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        // As `tidewire keys` does from another process: a write lock on the file.
        let other = rusqlite::Connection::open(dir.path().join("tidewire.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.start_turn(turn(None, "while locked")).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the turn did not wait for the lock");
        other.execute_batch("COMMIT").unwrap();
        let turn = waiting.await.unwrap().unwrap();
        let messages = store
            .list_messages(&turn.conversation_id, LOCAL_USER)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(messages[0].content, "while locked");
    }

    #[tokio::test]
    async fn a_failing_write_is_undone_alone_and_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let first = store.start_turn(turn(None, "first")).await.unwrap();
        // A new conversation whose answer reuses a run id: its conversation row goes
        // in before the message fails, and must go out with it.
        let mut reused = turn(None, "reused run");
        reused.run_id = "run-1".into();
        let mut original = turn(None, "original run");
        original.run_id = "run-1".into();
        store.start_turn(original).await.unwrap();
        let (before, failed, after) = tokio::join!(
            store.start_turn(turn(Some(&first.conversation_id), "before")),
            store.start_turn(reused),
            store.start_turn(turn(None, "after"))
        );
        before.unwrap();
        after.unwrap();
        assert!(matches!(failed, Err(StoreError::Sqlite(_))), "{failed:?}");
        let titles: Vec<String> = store
            .list_conversations(LOCAL_USER, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.title)
            .collect();
        assert_eq!(titles.len(), 3, "{titles:?}");
        assert!(!titles.iter().any(|t| t.contains("reused")), "{titles:?}");
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
        let messages = store.list_messages(&id, LOCAL_USER).await.unwrap().unwrap();
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
