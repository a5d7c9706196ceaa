//! The store's write path: what a turn costs before its run can start, and what a
//! flush and a finish cost after.
//!
//! 1. Latency, one write at a time: a new turn (the write every `POST /api/chat`
//!    waits for before its first token), a turn in an existing conversation, a
//!    flush of an answer's new text, and a finish.
//! 2. Throughput, many writers at once: C tasks, each starting, flushing and
//!    finishing answers in a loop, as C concurrent runs do (group commit).
//!
//! `cargo bench -p tidewire --bench store_writes`; `TIDEWIRE_BENCH_TURNS=500` for
//! a quick run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidewire::store::{FinishedMessage, NewTurn, PartialAnswer, SqliteStore, Store};
use tidewire_protocol::MessageStatus;

const CONCURRENCY: [usize; 2] = [10, 200];

static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

#[tokio::main]
async fn main() {
    let turns: usize = std::env::var("TIDEWIRE_BENCH_TURNS")
        .unwrap_or_else(|_| "3000".into())
        .parse()
        .expect("TIDEWIRE_BENCH_TURNS: a number");
    let root = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(root.path()).await.unwrap());
    println!("## Store writes (SQLite, {turns} turns per measurement)\n");
    latency(store.as_ref(), turns).await;
    for writers in CONCURRENCY {
        throughput(&store, writers, turns).await;
    }
}

fn new_turn(conversation_id: Option<String>, index: usize) -> NewTurn {
    NewTurn {
        conversation_id,
        create_missing: false,
        message: format!("benchmark question number {index}"),
        // Each turn is its run's: run ids are unique.
        run_id: format!("run-{}", NEXT_RUN.fetch_add(1, Ordering::Relaxed)),
        user_id: String::new(),
    }
}

fn finished(message_id: String, content: String) -> FinishedMessage {
    FinishedMessage {
        message_id,
        content,
        status: MessageStatus::Complete,
        model: Some("synthetic".into()),
        usage: None,
        error: None,
        sources: Vec::new(),
        quality_score: None,
        follow_up_questions: Vec::new(),
        tool_calls: Vec::new(),
    }
}

/// Part 1: each kind of write alone, one after another.
async fn latency(store: &dyn Store, turns: usize) {
    let mut new = Vec::with_capacity(turns);
    let mut existing = Vec::with_capacity(turns);
    let mut flushes = Vec::with_capacity(turns);
    let mut finishes = Vec::with_capacity(turns);
    let warmup = turns / 10;
    let mut conversation = None;
    for index in 0..warmup + turns {
        let at = Instant::now();
        let turn = store.start_turn(new_turn(None, index)).await.unwrap();
        let new_took = at.elapsed();
        let conversation_id = conversation.get_or_insert(turn.conversation_id).clone();
        let at = Instant::now();
        let turn = store
            .start_turn(new_turn(Some(conversation_id), index))
            .await
            .unwrap();
        let existing_took = at.elapsed();
        let at = Instant::now();
        store
            .flush_partial(vec![PartialAnswer {
                message_id: turn.assistant_message_id.clone(),
                position: 0,
                text: "token ".repeat(20),
            }])
            .await
            .unwrap();
        let flush_took = at.elapsed();
        let at = Instant::now();
        store
            .finish_message(finished(turn.assistant_message_id, "token ".repeat(40)))
            .await
            .unwrap();
        let finish_took = at.elapsed();
        if index >= warmup {
            new.push(new_took);
            existing.push(existing_took);
            flushes.push(flush_took);
            finishes.push(finish_took);
        }
    }
    println!("### One write at a time\n");
    println!("| write | p50 (µs) | p99 (µs) | max (µs) |");
    println!("|---|---:|---:|---:|");
    for (name, times) in [
        ("new turn (new conversation)", &mut new),
        ("new turn (existing conversation)", &mut existing),
        ("flush", &mut flushes),
        ("finish", &mut finishes),
    ] {
        times.sort_unstable();
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            micros(quantile(times, 0.5)),
            micros(quantile(times, 0.99)),
            micros(quantile(times, 1.0)),
        );
    }
    println!();
}

/// Part 2: `writers` tasks, each a run's life in a loop: turn, two flushes, finish.
async fn throughput(store: &Arc<dyn Store>, writers: usize, turns: usize) {
    let per_writer = turns.div_ceil(writers);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut turn_times = Vec::with_capacity(per_writer);
                for k in 0..per_writer {
                    let index = writer * per_writer + k;
                    let at = Instant::now();
                    let turn = store.start_turn(new_turn(None, index)).await.unwrap();
                    turn_times.push(at.elapsed());
                    for position in [0, 6] {
                        store
                            .flush_partial(vec![PartialAnswer {
                                message_id: turn.assistant_message_id.clone(),
                                position,
                                text: "token ".into(),
                            }])
                            .await
                            .unwrap();
                    }
                    store
                        .finish_message(finished(turn.assistant_message_id, "token token ".into()))
                        .await
                        .unwrap();
                }
                turn_times
            })
        })
        .collect();
    let mut turn_times = Vec::new();
    for task in tasks {
        turn_times.extend(task.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    turn_times.sort_unstable();
    println!(
        "### {writers} writers at once\n\n{} runs (turn, 2 flushes, finish) in {seconds:.2} s: \
         {:.0} runs/s; new turn p50 {:.0} µs, p99 {:.0} µs\n",
        turn_times.len(),
        turn_times.len() as f64 / seconds,
        micros(quantile(&turn_times, 0.5)),
        micros(quantile(&turn_times, 0.99)),
    );
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
