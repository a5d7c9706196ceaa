//! The single writer of the SQLite store.
//!
//! SQLite allows one writer at a time, and every statement through sqlx is a round
//! trip to the connection's thread. So one task takes whatever writes have queued up
//! and commits them in one transaction (group commit), and a run of new turns,
//! flushes and finishes goes out as a few multi-row statements, whatever its length.
//! A database error rolls the batch back and each write is then retried alone, so
//! one bad write neither half-applies nor fails the others.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use tokio::sync::{mpsc, oneshot};

use crate::store::rows::{json_list, to_i64};
use crate::store::{
    FinishedMessage, NewTurn, PartialAnswer, StoreError, Turn, new_id, now_millis, title_of,
};

/// Most writes committed in one transaction (a turn binds 16 values: far under
/// SQLite's 32,766).
const MAX_BATCH: usize = 512;

/// How often the write-ahead log is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

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

/// Starts the writer on `conn` (which must not checkpoint on its own) and the
/// checkpointer on `reads`; returns where to send writes.
pub(super) fn spawn(conn: SqliteConnection, reads: SqlitePool) -> mpsc::Sender<Job> {
    let (writes, jobs) = mpsc::channel(4 * MAX_BATCH);
    tokio::spawn(write_loop(conn, jobs));
    tokio::spawn(checkpoint_loop(reads));
    writes
}

async fn write_loop(mut conn: SqliteConnection, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ops: Vec<&Op> = batch.iter().map(|job| &job.op).collect();
        let outcomes = commit_batch(&mut conn, &ops).await;
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            // The caller may have gone away; the write is committed all the same.
            let _ = job.reply.send(outcome);
        }
    }
    let _ = conn.close().await;
}

/// The writer never checkpoints: a checkpoint syncs the database file and would
/// stall every write queued behind it. This copies the log into the database beside
/// it; PASSIVE never waits for the writer, and what it cannot copy now it copies next
/// time.
async fn checkpoint_loop(pool: SqlitePool) {
    let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "WAL checkpoint failed");
        }
    }
}

async fn commit_batch(
    conn: &mut SqliteConnection,
    ops: &[&Op],
) -> Vec<Result<Outcome, StoreError>> {
    match commit(conn, ops).await {
        Ok(outcomes) => outcomes,
        Err(error) if ops.len() > 1 => {
            tracing::warn!(%error, writes = ops.len(), "store batch failed; applying its writes one by one");
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                outcomes.push(match commit(conn, std::slice::from_ref(op)).await {
                    Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Closed)),
                    Err(error) => Err(error.into()),
                });
            }
            outcomes
        }
        Err(error) => vec![Err(error.into())],
    }
}

/// Applies `ops` in one transaction; a database error rolls all of them back.
async fn commit(
    conn: &mut SqliteConnection,
    ops: &[&Op],
) -> Result<Vec<Result<Outcome, StoreError>>, sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    match apply_all(conn, ops).await {
        Ok(outcomes) => {
            if let Err(error) = sqlx::query("COMMIT").execute(&mut *conn).await {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(error);
            }
            Ok(outcomes)
        }
        Err(error) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(error)
        }
    }
}

/// Applies `ops` in order: each run of turns, flushes and finishes together, the
/// other writes one at a time between them.
async fn apply_all(
    conn: &mut SqliteConnection,
    ops: &[&Op],
) -> Result<Vec<Result<Outcome, StoreError>>, sqlx::Error> {
    let mut outcomes: Vec<Option<Result<Outcome, StoreError>>> = ops.iter().map(|_| None).collect();
    let mut run = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        match op {
            Op::StartTurn(_) | Op::Flush(_) | Op::Finish(_) => run.push(index),
            Op::InterruptStreaming
            | Op::InterruptRuns(_)
            | Op::DeleteConversation { .. }
            | Op::PutDocument(_)
            | Op::DeleteDocuments(_) => {
                apply_run(conn, ops, &run, &mut outcomes).await?;
                run.clear();
                outcomes[index] = Some(Ok(apply_alone(conn, op).await?));
            }
        }
    }
    apply_run(conn, ops, &run, &mut outcomes).await?;
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Err(StoreError::Closed)))
        .collect())
}

/// Turns, then flushes, then finishes. Within a run their order does not matter: a
/// finish follows its turn in an earlier batch, and a flush never overwrites a
/// finished answer.
async fn apply_run(
    conn: &mut SqliteConnection,
    ops: &[&Op],
    run: &[usize],
    outcomes: &mut [Option<Result<Outcome, StoreError>>],
) -> Result<(), sqlx::Error> {
    let now = now_millis();
    let mut turns = Vec::new();
    let mut answers = Vec::new();
    let mut finishes = Vec::new();
    for &index in run {
        match ops[index] {
            Op::StartTurn(turn) => turns.push((index, turn)),
            Op::Flush(partial) => answers.extend(partial),
            Op::Finish(message) => finishes.push(message),
            Op::InterruptStreaming
            | Op::InterruptRuns(_)
            | Op::DeleteConversation { .. }
            | Op::PutDocument(_)
            | Op::DeleteDocuments(_) => {}
        }
    }
    start_turns(conn, &turns, now, outcomes).await?;
    let flushed = flush(conn, &answers).await?;
    let finished = finish(conn, &finishes, now).await?;
    for &index in run {
        match ops[index] {
            Op::Flush(_) => outcomes[index] = Some(Ok(Outcome::Rows(flushed))),
            Op::Finish(_) => outcomes[index] = Some(Ok(Outcome::Rows(finished))),
            _ => {}
        }
    }
    Ok(())
}

async fn start_turns(
    conn: &mut SqliteConnection,
    turns: &[(usize, &NewTurn)],
    now: i64,
    outcomes: &mut [Option<Result<Outcome, StoreError>>],
) -> Result<(), sqlx::Error> {
    if turns.is_empty() {
        return Ok(());
    }
    let named: HashSet<&str> = turns
        .iter()
        .filter_map(|(_, turn)| turn.conversation_id.as_deref())
        .collect();
    // The named conversations that exist, with their owner and the place of their
    // last message.
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut last_seq: HashMap<String, i64> = if named.is_empty() {
        HashMap::new()
    } else {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT c.id, coalesce(max(m.seq), 0), c.user_id FROM conversations c \
             LEFT JOIN messages m ON m.conversation_id = c.id WHERE c.id IN (",
        );
        let mut ids = query.separated(", ");
        for id in &named {
            ids.push_bind(*id);
        }
        query.push(") GROUP BY c.id");
        let rows = query.build().fetch_all(&mut *conn).await?;
        rows.iter()
            .filter_map(|row| {
                let id: String = row.try_get(0).ok()?;
                owners.insert(id.clone(), row.try_get(2).ok()?);
                Some((id, row.try_get(1).ok()?))
            })
            .collect()
    };
    let found: HashSet<String> = last_seq.keys().cloned().collect();

    let mut new_conversations = Vec::new();
    let mut messages = Vec::new();
    for &(index, turn) in turns {
        let conversation_id = match &turn.conversation_id {
            // Another user's conversation is not found, whatever the client asks:
            // no answer may confirm that it exists.
            Some(id) if owners.get(id).is_some_and(|owner| *owner != turn.user_id) => {
                outcomes[index] = Some(Err(StoreError::ConversationNotFound(id.clone())));
                continue;
            }
            Some(id) if found.contains(id) || last_seq.contains_key(id) => id.clone(),
            Some(id) if turn.create_missing => {
                // Created here, once, even when several turns of the batch name it.
                last_seq.insert(id.clone(), 0);
                owners.insert(id.clone(), turn.user_id.clone());
                new_conversations.push((id.clone(), title_of(&turn.message), &turn.user_id));
                id.clone()
            }
            Some(id) => {
                outcomes[index] = Some(Err(StoreError::ConversationNotFound(id.clone())));
                continue;
            }
            None => {
                let id = new_id();
                new_conversations.push((id.clone(), title_of(&turn.message), &turn.user_id));
                id
            }
        };
        let seq = last_seq.entry(conversation_id.clone()).or_insert(0);
        let first = *seq + 1;
        *seq += 2;
        let created = Turn {
            conversation_id,
            user_message_id: new_id(),
            assistant_message_id: new_id(),
        };
        messages.push((created.clone(), turn, first));
        outcomes[index] = Some(Ok(Outcome::Turn(created)));
    }

    if !found.is_empty() {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE conversations SET updated_at = ");
        query.push_bind(now).push(" WHERE id IN (");
        let mut ids = query.separated(", ");
        for id in &found {
            ids.push_bind(id.as_str());
        }
        query.push(")");
        query.build().execute(&mut *conn).await?;
    }
    if !new_conversations.is_empty() {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO conversations (id, title, created_at, updated_at, user_id) ",
        );
        query.push_values(&new_conversations, |mut row, (id, title, user_id)| {
            row.push_bind(id)
                .push_bind(title)
                .push_bind(now)
                .push_bind(now)
                .push_bind(*user_id);
        });
        query.build().execute(&mut *conn).await?;
    }
    if !messages.is_empty() {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (id, conversation_id, seq, role, content, status, run_id, created_at, updated_at) ",
        );
        // The user message, then the answer.
        let rows = messages.iter().flat_map(|(ids, turn, first)| {
            [
                (
                    &ids.user_message_id,
                    &ids.conversation_id,
                    *first,
                    "user",
                    turn.message.as_str(),
                    "complete",
                    None,
                ),
                (
                    &ids.assistant_message_id,
                    &ids.conversation_id,
                    *first + 1,
                    "assistant",
                    "",
                    "streaming",
                    Some(turn.run_id.as_str()),
                ),
            ]
        });
        query.push_values(
            rows,
            |mut row, (id, conversation_id, seq, role, content, status, run_id)| {
                row.push_bind(id)
                    .push_bind(conversation_id)
                    .push_bind(seq)
                    .push_bind(role)
                    .push_bind(content)
                    .push_bind(status)
                    .push_bind(run_id)
                    .push_bind(now)
                    .push_bind(now);
            },
        );
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The new text of running answers, as pieces; nothing is added to an answer that
/// is no longer running.
async fn flush(
    conn: &mut SqliteConnection,
    answers: &[&PartialAnswer],
) -> Result<u64, sqlx::Error> {
    if answers.is_empty() {
        return Ok(0);
    }
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT OR REPLACE INTO answer_parts (message_id, position, text) \
         SELECT v.column1, v.column2, v.column3 FROM (",
    );
    query.push_values(answers, |mut row, answer| {
        row.push_bind(&answer.message_id)
            .push_bind(i64::try_from(answer.position).unwrap_or(i64::MAX))
            .push_bind(&answer.text);
    });
    query.push(") AS v JOIN messages m ON m.id = v.column1 WHERE m.status = 'streaming'");
    Ok(query.build().execute(&mut *conn).await?.rows_affected())
}

/// The final text and state of answers.
async fn finish(
    conn: &mut SqliteConnection,
    messages: &[&FinishedMessage],
    now: i64,
) -> Result<u64, sqlx::Error> {
    if messages.is_empty() {
        return Ok(0);
    }
    let mut query = QueryBuilder::<Sqlite>::new(
        "UPDATE messages SET content = v.column2, status = v.column3, model = v.column4, \
         prompt_tokens = v.column5, completion_tokens = v.column6, error_code = v.column7, \
         error_message = v.column8, sources = v.column9, quality_score = v.column10, \
         follow_up_questions = v.column11, tool_calls = v.column12, updated_at = ",
    );
    query.push_bind(now).push(" FROM (");
    query.push_values(messages, |mut row, message| {
        let (code, text) = message.error.clone().unzip();
        row.push_bind(&message.message_id)
            .push_bind(&message.content)
            .push_bind(message.status.as_str())
            .push_bind(&message.model)
            .push_bind(message.usage.map(|u| to_i64(u.prompt_tokens)))
            .push_bind(message.usage.map(|u| to_i64(u.completion_tokens)))
            .push_bind(code)
            .push_bind(text)
            .push_bind(json_list(&message.sources))
            .push_bind(message.quality_score)
            .push_bind(json_list(&message.follow_up_questions))
            .push_bind(json_list(&message.tool_calls));
    });
    query.push(") AS v WHERE messages.id = v.column1");
    let rows = query.build().execute(&mut *conn).await?.rows_affected();
    // The final text holds every piece.
    let mut parts = QueryBuilder::<Sqlite>::new("DELETE FROM answer_parts WHERE message_id IN (");
    let mut ids = parts.separated(", ");
    for message in messages {
        ids.push_bind(&message.message_id);
    }
    parts.push(")");
    parts.build().execute(&mut *conn).await?;
    Ok(rows)
}

async fn apply_alone(conn: &mut SqliteConnection, op: &Op) -> Result<Outcome, sqlx::Error> {
    let now = now_millis();
    let rows = match op {
        Op::InterruptStreaming => {
            let mut query = QueryBuilder::<Sqlite>::new(INTERRUPT);
            query.push_bind(now).push(" WHERE status = 'streaming'");
            let rows = query.build().execute(&mut *conn).await?;
            delete_folded_pieces(conn).await?;
            rows
        }
        Op::InterruptRuns(run_ids) => {
            const IDS_PER_STATEMENT: usize = 500;
            let mut marked = 0;
            for run_ids in run_ids.chunks(IDS_PER_STATEMENT) {
                let mut query = QueryBuilder::<Sqlite>::new(INTERRUPT);
                query
                    .push_bind(now)
                    .push(" WHERE status = 'streaming' AND run_id IN (");
                let mut list = query.separated(", ");
                for run_id in run_ids {
                    list.push_bind(run_id);
                }
                query.push(")");
                marked += query.build().execute(&mut *conn).await?.rows_affected();
            }
            delete_folded_pieces(conn).await?;
            return Ok(Outcome::Rows(marked));
        }
        Op::DeleteConversation { id, user_id } => {
            sqlx::query("DELETE FROM conversations WHERE id = ? AND user_id = ?")
                .bind(id)
                .bind(user_id)
                .execute(&mut *conn)
                .await?
        }
        Op::PutDocument(document) => super::documents::put(conn, document, now).await?,
        Op::DeleteDocuments(ids) => {
            return Ok(Outcome::Rows(super::documents::delete(conn, ids).await?));
        }
        Op::StartTurn(_) | Op::Flush(_) | Op::Finish(_) => return Ok(Outcome::Rows(0)),
    };
    Ok(Outcome::Rows(rows.rows_affected()))
}

/// Marks answers `interrupted` (those of the WHERE clause that follows the bound
/// time), their flushed pieces becoming their text, as a finish would write it.
const INTERRUPT: &str = "UPDATE messages SET status = 'interrupted', \
     content = content || coalesce((SELECT group_concat(p.text, '' ORDER BY p.position) \
     FROM answer_parts p WHERE p.message_id = messages.id), ''), updated_at = ";

/// Deletes the pieces of answers no longer running: their text holds them.
async fn delete_folded_pieces(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM answer_parts WHERE message_id IN \
         (SELECT id FROM messages WHERE status <> 'streaming')",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
