//! The embedded store: SQLite in WAL mode, through sqlx.
//!
//! SQLite allows one writer at a time, so every write goes to a single writer task
//! that commits whatever has queued up in one transaction (group commit): thousands
//! of concurrent runs cost a few transactions per flush interval, not thousands.
//! Reads go through a small pool and see every acknowledged write.

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

use super::{
    FinishedMessage, NewTurn, PartialAnswer, Store, StoreError, Turn, new_id, now_millis, rfc3339,
    title_of,
};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// The SQLite store. Cloning shares the same database and writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reads: SqlitePool,
    writes: mpsc::Sender<Job>,
}

/// A write for the writer task.
#[derive(Debug)]
enum Op {
    StartTurn(NewTurn),
    Flush(Vec<PartialAnswer>),
    Finish(FinishedMessage),
    InterruptStreaming,
    DeleteConversation(String),
}

/// What a write returns.
#[derive(Debug)]
enum Outcome {
    Turn(Turn),
    Rows(u64),
}

#[derive(Debug)]
struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
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
        let writer = SqliteConnection::connect_with(&options).await?;
        let (writes, jobs) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_loop(writer, jobs));
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

async fn write_loop(mut conn: SqliteConnection, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcomes = commit_batch(&mut conn, &batch).await;
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            // The caller may have gone away; the write is committed all the same.
            let _ = job.reply.send(outcome);
        }
    }
    let _ = conn.close().await;
}

/// Applies every job in one transaction, each inside a savepoint so one failing
/// write leaves no half of itself behind and does not fail the others.
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &[Job],
) -> Vec<Result<Outcome, StoreError>> {
    let failed_all = |error: &sqlx::Error| {
        tracing::error!(%error, jobs = batch.len(), "store write batch failed");
        batch
            .iter()
            .map(|_| Err(StoreError::WriteFailed(error.to_string())))
            .collect()
    };
    if let Err(error) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        return failed_all(&error);
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        outcomes.push(apply_in_savepoint(conn, &job.op).await);
    }
    if let Err(error) = sqlx::query("COMMIT").execute(&mut *conn).await {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return failed_all(&error);
    }
    outcomes
}

async fn apply_in_savepoint(conn: &mut SqliteConnection, op: &Op) -> Result<Outcome, StoreError> {
    sqlx::query("SAVEPOINT op").execute(&mut *conn).await?;
    let outcome = apply(conn, op).await;
    if outcome.is_err() {
        sqlx::query("ROLLBACK TO op").execute(&mut *conn).await?;
    }
    sqlx::query("RELEASE op").execute(&mut *conn).await?;
    outcome
}

async fn apply(conn: &mut SqliteConnection, op: &Op) -> Result<Outcome, StoreError> {
    let now = now_millis();
    match op {
        Op::StartTurn(turn) => {
            let conversation_id = match &turn.conversation_id {
                Some(id) => {
                    let updated =
                        sqlx::query("UPDATE conversations SET updated_at = ? WHERE id = ?")
                            .bind(now)
                            .bind(id)
                            .execute(&mut *conn)
                            .await?;
                    if updated.rows_affected() == 0 {
                        return Err(StoreError::ConversationNotFound(id.clone()));
                    }
                    id.clone()
                }
                None => {
                    let id = new_id();
                    sqlx::query(
                        "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                    )
                    .bind(&id)
                    .bind(title_of(&turn.message))
                    .bind(now)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                    id
                }
            };
            let user_message_id = new_id();
            insert_message(
                conn,
                &user_message_id,
                &conversation_id,
                Role::User,
                &turn.message,
                MessageStatus::Complete,
                None,
                now,
            )
            .await?;
            let assistant_message_id = new_id();
            insert_message(
                conn,
                &assistant_message_id,
                &conversation_id,
                Role::Assistant,
                "",
                MessageStatus::Streaming,
                Some(&turn.run_id),
                now,
            )
            .await?;
            Ok(Outcome::Turn(Turn {
                conversation_id,
                user_message_id,
                assistant_message_id,
            }))
        }
        Op::Flush(answers) => {
            let mut rows = 0;
            for answer in answers {
                rows += sqlx::query(
                    "UPDATE messages SET content = ?, updated_at = ? WHERE id = ? AND status = 'streaming'",
                )
                .bind(&answer.content)
                .bind(now)
                .bind(&answer.message_id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            }
            Ok(Outcome::Rows(rows))
        }
        Op::Finish(message) => {
            let (error_code, error_message) = message.error.clone().unzip();
            let usage = message.usage;
            let rows = sqlx::query(
                "UPDATE messages SET content = ?, status = ?, model = ?, prompt_tokens = ?, \
                 completion_tokens = ?, error_code = ?, error_message = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&message.content)
            .bind(message.status.as_str())
            .bind(&message.model)
            .bind(usage.map(|u| to_i64(u.prompt_tokens)))
            .bind(usage.map(|u| to_i64(u.completion_tokens)))
            .bind(error_code)
            .bind(error_message)
            .bind(now)
            .bind(&message.message_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            sqlx::query(
                "UPDATE conversations SET updated_at = ? WHERE id = (SELECT conversation_id FROM messages WHERE id = ?)",
            )
            .bind(now)
            .bind(&message.message_id)
            .execute(&mut *conn)
            .await?;
            Ok(Outcome::Rows(rows))
        }
        Op::InterruptStreaming => {
            let rows = sqlx::query("UPDATE messages SET status = 'interrupted', updated_at = ? WHERE status = 'streaming'")
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(Outcome::Rows(rows))
        }
        Op::DeleteConversation(id) => {
            let rows = sqlx::query("DELETE FROM conversations WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(Outcome::Rows(rows))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert_message(
    conn: &mut SqliteConnection,
    id: &str,
    conversation_id: &str,
    role: Role,
    content: &str,
    status: MessageStatus,
    run_id: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, role, content, status, run_id, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(conversation_id)
    .bind(role.as_str())
    .bind(content)
    .bind(status.as_str())
    .bind(run_id)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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

const MESSAGE_COLUMNS: &str = "id, conversation_id, role, content, status, run_id, model, \
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
