//! The shared store: PostgreSQL, through sqlx, for several tidewire nodes on one
//! database.
//!
//! sqlx already drives SQLite here, so PostgreSQL gets the same crate, the same
//! runtime-checked queries and the same row types; only the SQL differs. What does
//! not carry over is SQLite's single writer task: several nodes write at once, so
//! there is no process to put the writes in order. Each write is its own
//! transaction instead, and where two writes could race, the rows they race on are
//! locked (the comments of each write say which, and why). PostgreSQL commits
//! concurrent transactions in groups by itself, so no batching is needed for
//! throughput.
//!
//! [`Store::interrupt_streaming`] stays what it is on SQLite (every `streaming`
//! answer), which on a shared database includes the live answers of the other
//! nodes; a cluster interrupts the runs of a dead node with
//! [`Store::interrupt_runs`] instead.
//!
//! PostgreSQL's `text` cannot hold the NUL character, which SQLite stores like any
//! other. Rather than failing a whole answer over one, every string written or
//! looked up has its NULs replaced with U+FFFD, the replacement character.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};

use super::rows::{ConversationRow, MessageRow, json_list, to_i64};
use super::{
    ApiKeyRecord, ConversationRecord, DocumentKey, DocumentRecord, FinishedMessage, MessageRecord,
    NewTurn, PartialAnswer, Store, StoreError, Timestamp, Turn, new_id, now_millis, title_of,
};

mod documents;
pub(super) mod keys;
#[cfg(test)]
pub(crate) mod tests;

/// Connections of one node to the database.
const MAX_CONNECTIONS: u32 = 10;

/// How long connecting, or waiting for a free connection, may take: an unreachable
/// server fails the start instead of hanging it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a write runs when PostgreSQL aborts it to break a deadlock.
const WRITE_ATTEMPTS: u32 = 5;

/// The advisory lock under which a node creates its schema (`tidewire` in ASCII):
/// `CREATE SCHEMA IF NOT EXISTS` is not safe against itself on another connection.
const SCHEMA_LOCK: i64 = 0x7469_6465_7769_7265;

/// The PostgreSQL store. Cloning shares the same pool of connections.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL) and brings its schema
    /// up to date. With `schema`, tidewire's tables live in that PostgreSQL schema
    /// (created if missing; 1 to 63 of `a-z`, `0-9` and `_`) instead of the
    /// connection's default one, so that several tidewires can share a database.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        Ok(Self {
            pool: connect_pool(url, schema, MAX_CONNECTIONS).await?,
        })
    }

    /// Stores a turn; the transaction of [`Store::start_turn`], once.
    ///
    /// Two nodes may start turns of the same conversation at once, and both would
    /// read the same last `seq`. The conversation's row is locked (`FOR UPDATE`)
    /// before that read, so they take turns: the second reads only after the first
    /// has committed, and each statement of a READ COMMITTED transaction sees what
    /// committed before it began. The alternative, retrying the transaction when the
    /// unique index on (conversation_id, seq) refuses a place, would redo whole turns
    /// under contention and could still give up; the lock costs one row, held for a
    /// transaction of five short statements, and nothing is ever retried for it.
    async fn start_turn_once(&self, turn: &NewTurn) -> Result<Turn, StoreError> {
        let now = now_millis();
        let user_id = text(&turn.user_id);
        let mut tx = self.pool.begin().await?;
        let (conversation_id, last_seq) = match &turn.conversation_id {
            None => {
                let id = new_id();
                insert_conversation(&mut tx, &id, turn, now).await?;
                (id, 0)
            }
            Some(given) => {
                let id = text(given);
                // Inserting first makes a concurrent creation of the same id wait
                // for this one, then find the row.
                let created =
                    turn.create_missing && insert_conversation(&mut tx, &id, turn, now).await? > 0;
                let owner: Option<String> = sqlx::query_scalar(
                    "SELECT user_id FROM conversations WHERE id = $1 FOR UPDATE",
                )
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
                // Another user's conversation is not found, whatever the client asks:
                // no answer may confirm that it exists.
                if owner.is_none_or(|owner| owner != user_id) {
                    // At once, rather than when the connection goes back to the pool.
                    tx.rollback().await?;
                    return Err(StoreError::ConversationNotFound(given.clone()));
                }
                if !created {
                    sqlx::query("UPDATE conversations SET updated_at = $2 WHERE id = $1")
                        .bind(&id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                let last: i64 = sqlx::query_scalar(
                    "SELECT coalesce(max(seq), 0) FROM messages WHERE conversation_id = $1",
                )
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
                (id.into_owned(), last)
            }
        };
        let created = Turn {
            conversation_id,
            user_message_id: new_id(),
            assistant_message_id: new_id(),
        };
        // The user message, then the answer.
        sqlx::query(
            "INSERT INTO messages \
             (id, conversation_id, seq, role, content, status, run_id, created_at, updated_at) \
             VALUES ($1, $3, $4, 'user', $5, 'complete', NULL, $7, $7), \
             ($2, $3, $4 + 1, 'assistant', '', 'streaming', $6, $7, $7)",
        )
        .bind(&created.user_message_id)
        .bind(&created.assistant_message_id)
        .bind(&created.conversation_id)
        .bind(last_seq + 1)
        .bind(text(&turn.message))
        .bind(text(&turn.run_id))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Marks the `streaming` answers of `run_ids` (all of them when `None`)
    /// `interrupted`, folding their pieces into their text.
    ///
    /// The answers are locked first, in a statement of their own: a flush holding one
    /// (see [`Store::flush_partial`]) commits its piece before this goes on, and the
    /// UPDATE, a later statement, sees that piece; a flush after it waits, then finds
    /// the answer no longer running. Locking in id order, as flushes do, keeps the
    /// two from deadlocking.
    async fn interrupt(&self, run_ids: Option<&[String]>) -> Result<u64, StoreError> {
        let run_ids: Option<Vec<Cow<'_, str>>> =
            run_ids.map(|ids| ids.iter().map(|id| text(id)).collect());
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM messages \
             WHERE status = 'streaming' AND ($1::text[] IS NULL OR run_id = ANY($1)) \
             ORDER BY id FOR UPDATE",
        )
        .bind(&run_ids)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let marked = sqlx::query(
            "UPDATE messages SET status = 'interrupted', updated_at = $2, \
             content = content || coalesce((SELECT string_agg(p.text, '' ORDER BY p.position) \
             FROM answer_parts p WHERE p.message_id = messages.id), '') \
             WHERE id = ANY($1) AND status = 'streaming'",
        )
        .bind(&ids)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM answer_parts WHERE message_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(marked)
    }
}

/// Inserts the conversation `id` of `turn` unless it exists; the rows inserted.
async fn insert_conversation(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
    turn: &NewTurn,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO conversations (id, title, created_at, updated_at, user_id) \
         VALUES ($1, $2, $3, $3, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(text(&title_of(&turn.message)))
    .bind(now)
    .bind(text(&turn.user_id))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Checks a schema name: it goes into SQL and into the connection's options, so
/// only names that need no quoting rules beyond a pair of double quotes.
fn valid_schema(schema: &str) -> Result<&str, StoreError> {
    let valid = (1..=63).contains(&schema.len())
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(schema)
    } else {
        Err(StoreError::InvalidSchema(schema.to_owned()))
    }
}

/// A pool of at most `max_connections` on the database at `url`, with `search_path`
/// set to `schema` on every connection, after the schema has been created and
/// migrated on a connection of its own.
///
/// Nodes starting together are safe: the schema is created under an advisory
/// lock, and sqlx's migrator takes one too (per database) while it migrates, so the
/// second node waits, then finds the migrations applied.
pub(super) async fn connect_pool(
    url: &str,
    schema: Option<&str>,
    max_connections: u32,
) -> Result<PgPool, StoreError> {
    let schema = schema.map(valid_schema).transpose()?;
    let mut options: PgConnectOptions = url.parse()?;
    if let Some(schema) = schema {
        options = options.options([("search_path", format!("\"{schema}\""))]);
    }
    // A connection of its own, first: its error says why the server cannot be
    // reached, where the pool's would only say that it timed out.
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer from the PostgreSQL server within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            ))
        })??;
    if let Some(schema) = schema {
        create_schema(&mut conn, schema).await?;
    }
    // run_direct: `run` takes an `Acquire`, whose future is not `Send` for every
    // lifetime, and the server starts inside `tokio::spawn`.
    sqlx::migrate!("./migrations-postgres")
        .run_direct(&mut conn)
        .await?;
    conn.close().await?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await?)
}

/// Creates `schema` unless it exists. Looking first lets a user without the right to
/// create schemas use one made for it.
async fn create_schema(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// A string as PostgreSQL can store it: NUL, which `text` refuses, becomes U+FFFD.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Runs `write` again (up to [`WRITE_ATTEMPTS`] times in all) when PostgreSQL
/// aborted it to break a deadlock or a serialization conflict: the writes of
/// several nodes can take row locks in different orders (a conversation deleted
/// while its answers are flushed), and such an abort is safe to retry.
async fn retrying<T, F, Fut>(mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match write().await {
            Err(error) if attempt < WRITE_ATTEMPTS && is_conflict(&error) => {
                tracing::debug!(%error, attempt, "store write aborted by a conflict; retrying");
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Whether PostgreSQL aborted a transaction to break a deadlock or a serialization
/// conflict.
fn is_conflict(error: &StoreError) -> bool {
    match error {
        StoreError::Database(sqlx::Error::Database(error)) => {
            matches!(error.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// The columns of a message; a running answer's content is its flushed pieces.
const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, role, \
                               content || coalesce((SELECT string_agg(p.text, '' ORDER BY p.position) \
                               FROM answer_parts p WHERE p.message_id = messages.id), '') AS content, \
                               status, run_id, model, \
                               prompt_tokens, completion_tokens, error_code, error_message, \
                               sources, quality_score, follow_up_questions, tool_calls, \
                               created_at, updated_at";

#[async_trait]
impl Store for PostgresStore {
    fn is_shared(&self) -> bool {
        true
    }

    async fn start_turn(&self, turn: NewTurn) -> Result<Turn, StoreError> {
        retrying(|| self.start_turn_once(&turn)).await
    }

    /// The pieces go in with one statement, which first locks the answers still
    /// running (`FOR SHARE`, in id order): a finish or an interrupt of one of them
    /// waits for the piece, or the piece waits for it and is then left out.
    async fn flush_partial(&self, answers: Vec<PartialAnswer>) -> Result<(), StoreError> {
        if answers.is_empty() {
            return Ok(());
        }
        let ids: Vec<Cow<'_, str>> = answers.iter().map(|a| text(&a.message_id)).collect();
        let positions: Vec<i64> = answers
            .iter()
            .map(|a| i64::try_from(a.position).unwrap_or(i64::MAX))
            .collect();
        let texts: Vec<Cow<'_, str>> = answers.iter().map(|a| text(&a.text)).collect();
        retrying(|| async {
            sqlx::query(
                "WITH live AS (SELECT id FROM messages \
                 WHERE id = ANY($1) AND status = 'streaming' ORDER BY id FOR SHARE) \
                 INSERT INTO answer_parts (message_id, position, text) \
                 SELECT v.message_id, v.position, v.text \
                 FROM unnest($1::text[], $2::bigint[], $3::text[]) AS v (message_id, position, text) \
                 WHERE v.message_id IN (SELECT id FROM live) \
                 ON CONFLICT (message_id, position) DO NOTHING",
            )
            .bind(&ids)
            .bind(&positions)
            .bind(&texts)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// The UPDATE waits for a flush of the answer in progress; the DELETE, a later
    /// statement, then sees its piece.
    async fn finish_message(&self, message: FinishedMessage) -> Result<bool, StoreError> {
        let now = now_millis();
        let id = text(&message.message_id);
        let (code, error) = message.error.clone().unzip();
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(
                "UPDATE messages SET content = $2, status = $3, model = $4, \
                 prompt_tokens = $5, completion_tokens = $6, error_code = $7, \
                 error_message = $8, sources = $9, quality_score = $10, \
                 follow_up_questions = $11, tool_calls = $12, updated_at = $13 WHERE id = $1",
            )
            .bind(&id)
            .bind(text(&message.content))
            .bind(message.status.as_str())
            .bind(message.model.as_deref().map(text))
            .bind(message.usage.map(|u| to_i64(u.prompt_tokens)))
            .bind(message.usage.map(|u| to_i64(u.completion_tokens)))
            .bind(code.as_deref().map(text))
            .bind(error.as_deref().map(text))
            .bind(json_list(&message.sources))
            .bind(message.quality_score)
            .bind(json_list(&message.follow_up_questions))
            .bind(json_list(&message.tool_calls))
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // The final text holds every piece.
            sqlx::query("DELETE FROM answer_parts WHERE message_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(rows > 0)
        })
        .await
    }

    async fn interrupt_streaming(&self) -> Result<u64, StoreError> {
        retrying(|| self.interrupt(None)).await
    }

    async fn streaming_runs(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT run_id, updated_at FROM messages \
             WHERE status = 'streaming' AND run_id IS NOT NULL ORDER BY updated_at, run_id",
        )
        .fetch_all(&self.pool)
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
        retrying(|| self.interrupt(Some(&run_ids))).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn conversation_exists(&self, id: &str, user_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2")
            .bind(text(id))
            .bind(text(user_id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn list_conversations(
        &self,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let rows: Vec<ConversationRow> = sqlx::query_as(
            "SELECT id, title, created_at, updated_at FROM conversations WHERE user_id = $1 \
             ORDER BY updated_at DESC, id DESC LIMIT $2",
        )
        .bind(text(user_id))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY seq"
        ))
        .bind(text(conversation_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(rows.into_iter().map(MessageRecord::from).collect()))
    }

    async fn delete_conversation(&self, id: &str, user_id: &str) -> Result<bool, StoreError> {
        let (id, user_id) = (text(id), text(user_id));
        retrying(|| async {
            let done = sqlx::query("DELETE FROM conversations WHERE id = $1 AND user_id = $2")
                .bind(&id)
                .bind(&user_id)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn message_by_run(
        &self,
        run_id: &str,
        user_id: &str,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let row: Option<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE run_id = $1 AND conversation_id IN \
             (SELECT id FROM conversations WHERE user_id = $2)"
        ))
        .bind(text(run_id))
        .bind(text(user_id))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(MessageRecord::from))
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(keys::find(&self.pool, key_hash).await?)
    }

    async fn find_document(&self, key: &DocumentKey) -> Result<Option<DocumentRecord>, StoreError> {
        Ok(documents::find(&self.pool, key).await?)
    }

    async fn get_document(&self, id: &str) -> Result<Option<DocumentRecord>, StoreError> {
        Ok(documents::get(&self.pool, id).await?)
    }

    async fn list_documents(
        &self,
        collection: Option<&str>,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        Ok(documents::list(&self.pool, collection).await?)
    }

    async fn put_document(&self, document: DocumentRecord) -> Result<(), StoreError> {
        retrying(|| async { Ok(documents::put(&self.pool, &document, now_millis()).await?) }).await
    }

    async fn delete_documents(&self, ids: Vec<String>) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        retrying(|| async { Ok(documents::delete(&self.pool, &ids).await?) }).await
    }
}
