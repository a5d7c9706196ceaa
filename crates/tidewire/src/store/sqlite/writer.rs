//! The single writer of the SQLite store.
//!
//! SQLite allows one writer at a time. The writer is one connection on its own
//! thread: it takes whatever writes have queued up and commits them in one
//! transaction (group commit). A batch is one hand-over between threads, whatever
//! its length; a write costs its statements and no more (every `POST /api/chat`
//! waits for one before its first token). A write that fails is undone alone: its
//! batch is then written again one write at a time, and the rest of it commits.
//!
//! A new turn is written where it is asked for when nothing else is waiting: see
//! [`Writer::write`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::store::rows::{json_list, to_i64};
use crate::store::{
    FinishedMessage, NewTurn, PartialAnswer, StoreError, Turn, new_id, now_millis, title_of,
};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// How often the write-ahead log is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How long a write waits for a lock another process holds (`tidewire keys`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A write.
#[derive(Debug)]
pub(super) enum Op {
    StartTurn(NewTurn),
    Flush(Vec<PartialAnswer>),
    Finish(FinishedMessage),
    InterruptStreaming,
    InterruptRuns(Vec<String>),
    DeleteConversation { id: String, user_id: String },
    PutDocument(crate::store::DocumentRecord),
    DeleteDocuments(Vec<String>),
}

/// What a write returns.
#[derive(Debug)]
pub(super) enum Outcome {
    Turn(Turn),
    Rows(u64),
}

/// A write and where its outcome goes.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// Where writes go: the writer thread's queue, and the connection it writes with.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

/// What the writer thread shares with the tasks that write.
struct Shared {
    conn: Mutex<Connection>,
    /// Writes sent to the thread and not yet committed.
    queued: AtomicUsize,
    /// How many writes the thread's last transaction committed.
    last_batch: AtomicUsize,
    /// A checkpoint copied the whole log back: the next transaction starts the
    /// log over, and with it SQLite syncs the log's header to disk.
    log_restarts: AtomicBool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens the writer's connection to `database` (already migrated), starts its
    /// thread and the checkpointer on `reads`.
    pub(super) fn spawn(database: &Path, reads: SqlitePool) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            conn: Mutex::new(open(database)?),
            queued: AtomicUsize::new(0),
            last_batch: AtomicUsize::new(0),
            log_restarts: AtomicBool::new(false),
        });
        let (jobs, queue) = mpsc::channel(4 * MAX_BATCH);
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tidewire-sqlite-writer".into())
            .spawn(move || write_loop(&thread_shared, queue))
            .map_err(|error| {
                StoreError::WriteFailed(format!("cannot start the writer: {error}"))
            })?;
        tokio::spawn(checkpoint_loop(reads, Arc::clone(&shared)));
        Ok(Self { jobs, shared })
    }

    /// Commits `op` after every write sent before it.
    ///
    /// A new turn, when no write is queued and the connection is free, is committed
    /// here, on the caller's thread: it is what every `POST /api/chat` waits for
    /// before its first token, and handing it to the writer thread and back is two
    /// thread wakeups, more than the write itself costs. Once writes come together
    /// (the thread's last transaction held more than one), turns go to the thread
    /// again and commit in groups: a transaction of its own per turn, holding the
    /// connection from the thread, took 200 concurrent writers from 25,500 to
    /// 15,500 runs/s in `cargo bench -p tidewire --bench store_writes`.
    pub(super) async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        if let Some(outcome) = self.write_here(&op) {
            return outcome;
        }
        // Counted and sent with no await between: a caller that goes away cannot
        // leave a count behind that no write will take back.
        let place = self.jobs.reserve().await.map_err(|_| StoreError::Closed)?;
        let (reply, outcome) = oneshot::channel();
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        place.send(Job { op, reply });
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    /// Whether the next transaction starts the log over.
    #[cfg(test)]
    pub(super) fn log_restarts(&self) -> bool {
        self.shared.log_restarts.load(Ordering::Acquire)
    }

    /// Commits a new turn here when that keeps the order of writes; `None` when
    /// the writer thread is to commit `op`.
    fn write_here(&self, op: &Op) -> Option<Result<Outcome, StoreError>> {
        if !matches!(op, Op::StartTurn(_)) {
            return None;
        }
        let mut conn = match self.shared.conn.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        // Checked holding the connection: a write sent before this one and not yet
        // committed is counted until the thread has committed it. A transaction
        // that starts the log over waits for a disk sync: not on a runtime thread.
        if self.shared.queued.load(Ordering::Acquire) != 0
            || self.shared.last_batch.load(Ordering::Relaxed) > 1
            || self.shared.log_restarts.load(Ordering::Acquire)
        {
            return None;
        }
        // Another process holding the database (`tidewire keys`) must not make this
        // thread, one of the runtime's, sleep in SQLite's busy handler: the writer
        // thread waits for it instead (and sets its own timeout before each batch).
        let _ = conn.busy_timeout(Duration::ZERO);
        match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == ErrorCode::DatabaseBusy =>
            {
                None
            }
            Err(error) => Some(Err(failed(error))),
            Ok(tx) => Some(
                commit_in(tx, std::iter::once(op), now_millis())
                    .map(|mut outcomes| outcomes.remove(0)),
            ),
        }
    }
}

fn open(database: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // With WAL (set when the database was created), NORMAL loses no committed
    // transaction on a process crash; only a power loss can take back the last few.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The writer never checkpoints: see `checkpoint_loop`.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // A flush adds a piece to every running answer, all over the parts table: with
    // SQLite's default 2 MiB of cache, thousands of running answers made it write
    // pages out in the middle of a transaction and read them back in the next.
    conn.pragma_update(None, "cache_size", -16 * 1024)?;
    Ok(conn)
}

fn write_loop(shared: &Shared, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Ends when the store and every clone of it are gone.
    while let Some(job) = jobs.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = {
            let mut conn = lock(&shared.conn);
            // Cleared before the transaction: a checkpoint that completes during it
            // leaves the flag for the next one.
            shared.log_restarts.store(false, Ordering::Release);
            // The inline path leaves the connection without one.
            let _ = conn.busy_timeout(BUSY_TIMEOUT);
            commit(&mut conn, &batch)
        };
        shared.last_batch.store(batch.len(), Ordering::Relaxed);
        shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            // The caller may have gone away; the write is committed all the same.
            let _ = job.reply.send(outcome);
        }
    }
}

/// The writer never checkpoints: a checkpoint syncs the database file and would
/// stall every write queued behind it. This copies the log into the database beside
/// it; PASSIVE never waits for the writer, and what it cannot copy now it copies next
/// time.
///
/// A checkpoint that copied the whole log makes the next transaction start the log
/// over, which syncs the log's header: that one goes to the writer thread.
async fn checkpoint_loop(pool: SqlitePool, shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if pool.is_closed() {
            return;
        }
        // (busy, frames in the log, frames copied back)
        let done: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await;
        match done {
            Ok((_, log, copied)) if log > 0 && copied == log => {
                shared.log_restarts.store(true, Ordering::Release);
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "WAL checkpoint failed"),
        }
    }
}

/// Applies the jobs' writes in order in one transaction. When one of them fails,
/// the transaction is undone and each write is applied again in a transaction of
/// its own, so the failing one is undone alone and the rest commit.
///
/// Not a savepoint per write: inside one, every statement's journal (the pages it
/// changed, as they were) is kept until the savepoint ends, and a flush of every
/// running answer spilled it to a temporary file, a disk write per page.
fn commit(conn: &mut Connection, jobs: &[Job]) -> Vec<Result<Outcome, StoreError>> {
    let now = now_millis();
    let ops = jobs.iter().map(|job| &job.op);
    match commit_together(conn, ops, now) {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(error) if jobs.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::debug!(%error, writes = jobs.len(), "store batch failed; writing one at a time");
            jobs.iter()
                .map(|job| {
                    commit_together(conn, std::iter::once(&job.op), now)
                        .map(|mut outcomes| outcomes.remove(0))
                })
                .collect()
        }
    }
}

/// Applies `ops` in one transaction: all of them, or none.
fn commit_together<'a>(
    conn: &mut Connection,
    ops: impl ExactSizeIterator<Item = &'a Op>,
    now: i64,
) -> Result<Vec<Outcome>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    commit_in(tx, ops, now)
}

/// Applies `ops` in `tx` and commits it: all of them, or none.
fn commit_in<'a>(
    tx: Transaction<'_>,
    ops: impl ExactSizeIterator<Item = &'a Op>,
    now: i64,
) -> Result<Vec<Outcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        // Dropped on the way out, the transaction rolls back.
        outcomes.push(apply(&tx, op, now)?);
    }
    tx.commit().map_err(failed)?;
    Ok(outcomes)
}

fn failed(error: rusqlite::Error) -> StoreError {
    tracing::warn!(%error, "store transaction failed");
    StoreError::WriteFailed(error.to_string())
}

/// The connection, even if a panic while it was held poisoned its lock: every
/// transaction is undone when dropped.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

fn apply(conn: &Connection, op: &Op, now: i64) -> Result<Outcome, StoreError> {
    let rows = match op {
        Op::StartTurn(turn) => return start_turn(conn, turn, now).map(Outcome::Turn),
        Op::Flush(answers) => flush(conn, answers)?,
        Op::Finish(message) => finish(conn, message, now)?,
        Op::InterruptStreaming => {
            let rows = conn
                .prepare_cached(&format!("{INTERRUPT} WHERE status = 'streaming'"))?
                .execute([now])?;
            delete_folded_pieces(conn)?;
            rows
        }
        Op::InterruptRuns(run_ids) => {
            let mut marked = 0;
            let mut statement = conn.prepare_cached(&format!(
                "{INTERRUPT} WHERE status = 'streaming' AND run_id = ?2"
            ))?;
            for run_id in run_ids {
                marked += statement.execute(params![now, run_id])?;
            }
            delete_folded_pieces(conn)?;
            marked
        }
        Op::DeleteConversation { id, user_id } => conn
            .prepare_cached("DELETE FROM conversations WHERE id = ?1 AND user_id = ?2")?
            .execute(params![id, user_id])?,
        Op::PutDocument(document) => super::documents::put(conn, document, now)?,
        Op::DeleteDocuments(ids) => super::documents::delete(conn, ids)?,
    };
    Ok(Outcome::Rows(rows as u64))
}

/// Stores the question and an empty `streaming` answer after the conversation's
/// last message, creating the conversation when asked to.
fn start_turn(conn: &Connection, turn: &NewTurn, now: i64) -> Result<Turn, StoreError> {
    let (conversation_id, last_seq) = match &turn.conversation_id {
        Some(id) => {
            // `max` in a subquery of its own reads one entry of the (conversation,
            // seq) index, however long the conversation.
            let found: Option<(String, i64)> = conn
                .prepare_cached(
                    "SELECT user_id, coalesce((SELECT max(seq) FROM messages \
                     WHERE conversation_id = ?1), 0) FROM conversations WHERE id = ?1",
                )?
                .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            match found {
                // Another user's conversation is not found, whatever the client
                // asks: no answer may confirm that it exists.
                Some((owner, _)) if owner != turn.user_id => {
                    return Err(StoreError::ConversationNotFound(id.clone()));
                }
                Some((_, last_seq)) => {
                    conn.prepare_cached("UPDATE conversations SET updated_at = ?2 WHERE id = ?1")?
                        .execute(params![id, now])?;
                    (id.clone(), last_seq)
                }
                None if turn.create_missing => {
                    insert_conversation(conn, id, turn, now)?;
                    (id.clone(), 0)
                }
                None => return Err(StoreError::ConversationNotFound(id.clone())),
            }
        }
        None => {
            let id = new_id();
            insert_conversation(conn, &id, turn, now)?;
            (id, 0)
        }
    };
    let created = Turn {
        conversation_id,
        user_message_id: new_id(),
        assistant_message_id: new_id(),
    };
    let mut insert = conn.prepare_cached(
        "INSERT INTO messages (id, conversation_id, seq, role, content, status, run_id, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
    )?;
    insert.execute(params![
        created.user_message_id,
        created.conversation_id,
        last_seq + 1,
        "user",
        turn.message,
        "complete",
        None::<&str>,
        now,
    ])?;
    insert.execute(params![
        created.assistant_message_id,
        created.conversation_id,
        last_seq + 2,
        "assistant",
        "",
        "streaming",
        turn.run_id,
        now,
    ])?;
    Ok(created)
}

fn insert_conversation(
    conn: &Connection,
    id: &str,
    turn: &NewTurn,
    now: i64,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO conversations (id, title, created_at, updated_at, user_id) \
         VALUES (?1, ?2, ?3, ?3, ?4)",
    )?
    .execute(params![id, title_of(&turn.message), now, turn.user_id])?;
    Ok(())
}

/// The new text of running answers, as pieces; nothing is added to an answer that
/// is no longer running.
fn flush(conn: &Connection, answers: &[PartialAnswer]) -> Result<usize, rusqlite::Error> {
    let mut statement = conn.prepare_cached(
        "INSERT OR REPLACE INTO answer_parts (message_id, position, text) \
         SELECT ?1, ?2, ?3 WHERE EXISTS \
         (SELECT 1 FROM messages WHERE id = ?1 AND status = 'streaming')",
    )?;
    let mut rows = 0;
    for answer in answers {
        rows += statement.execute(params![
            answer.message_id,
            i64::try_from(answer.position).unwrap_or(i64::MAX),
            answer.text,
        ])?;
    }
    Ok(rows)
}

/// The final text and state of an answer, which then holds every piece.
fn finish(
    conn: &Connection,
    message: &FinishedMessage,
    now: i64,
) -> Result<usize, rusqlite::Error> {
    let (code, text) = message.error.clone().unzip();
    let rows = conn
        .prepare_cached(
            "UPDATE messages SET content = ?2, status = ?3, model = ?4, prompt_tokens = ?5, \
             completion_tokens = ?6, error_code = ?7, error_message = ?8, sources = ?9, \
             quality_score = ?10, follow_up_questions = ?11, tool_calls = ?12, \
             updated_at = ?13 WHERE id = ?1",
        )?
        .execute(params![
            message.message_id,
            message.content,
            message.status.as_str(),
            message.model,
            message.usage.map(|u| to_i64(u.prompt_tokens)),
            message.usage.map(|u| to_i64(u.completion_tokens)),
            code,
            text,
            json_list(&message.sources),
            message.quality_score,
            json_list(&message.follow_up_questions),
            json_list(&message.tool_calls),
            now,
        ])?;
    conn.prepare_cached("DELETE FROM answer_parts WHERE message_id = ?1")?
        .execute([&message.message_id])?;
    Ok(rows)
}

/// Marks answers `interrupted` (those of the WHERE clause that follows; `?1` is
/// the time), their flushed pieces becoming their text, as a finish would write it.
const INTERRUPT: &str = "UPDATE messages SET status = 'interrupted', \
     content = content || coalesce((SELECT group_concat(p.text, '' ORDER BY p.position) \
     FROM answer_parts p WHERE p.message_id = messages.id), ''), updated_at = ?1";

/// Deletes the pieces of answers no longer running: their text holds them.
fn delete_folded_pieces(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "DELETE FROM answer_parts WHERE message_id IN \
         (SELECT id FROM messages WHERE status <> 'streaming')",
    )?
    .execute([])?;
    Ok(())
}
