//! A run: one answer being produced, as an append-only log of events.
//!
//! The producer appends; subscribers are cursors into the log. Each event is encoded
//! once, when appended, in the native wire form, so replaying to any number of
//! subscribers is copying bytes. A slow subscriber costs its cursor, nothing more.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::{Bytes, BytesMut};
use tidewire_protocol::api::RunView;
use tidewire_protocol::{ChatEvent, ErrorEvent, MessageStatus, Source, Usage};
use tidewire_sse::Frame;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most bytes one subscriber write carries when catching up, so a long replay
/// goes out in a few large writes without holding the run's lock for long.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Why a run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// `POST /api/runs/{id}/cancel`.
    Requested,
    /// No subscriber for the configured grace period.
    Idle,
    /// The server is shutting down.
    Shutdown,
}

impl CancelReason {
    /// The status the answer gets when its run stops for this reason.
    pub fn status(self) -> MessageStatus {
        match self {
            Self::Requested | Self::Idle => MessageStatus::Cancelled,
            Self::Shutdown => MessageStatus::Interrupted,
        }
    }
}

/// One answer being produced.
#[derive(Debug)]
pub struct Run {
    id: String,
    conversation_id: String,
    message_id: String,
    state: Mutex<RunState>,
    /// How many events the log holds; subscribers wait on it.
    appended: watch::Sender<usize>,
    cancel: CancellationToken,
    cancel_reason: OnceLock<CancelReason>,
    subscribers: AtomicUsize,
}

#[derive(Debug)]
struct RunState {
    entries: Vec<Entry>,
    status: MessageStatus,
    /// The answer text so far: every `token` appended.
    content: String,
    /// How much of `content` the store holds.
    flushed_len: usize,
    sources: Vec<Source>,
    quality_score: Option<f64>,
    follow_up_questions: Vec<String>,
    usage: Option<Usage>,
    error: Option<ErrorEvent>,
    finished_at: Option<Instant>,
    /// Since when the run has had no subscriber.
    idle_since: Option<Instant>,
}

/// One event of the log.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The event.
    pub event: ChatEvent,
    /// Its native wire form, `id:` included.
    pub wire: Bytes,
}

/// What a run produced, for a `stream: false` answer.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// How the run ended (or `streaming`).
    pub status: MessageStatus,
    /// The answer text.
    pub content: String,
    /// Retrieved sources.
    pub sources: Vec<Source>,
    /// The quality score, if scored.
    pub quality_score: Option<f64>,
    /// Suggested next questions.
    pub follow_up_questions: Vec<String>,
    /// Token counts.
    pub usage: Option<Usage>,
    /// The error that ended the run.
    pub error: Option<ErrorEvent>,
}

/// Bytes for a subscriber, and where its cursor goes next.
#[derive(Debug)]
pub struct Batch {
    /// The wire bytes of the events after the cursor (possibly empty).
    pub bytes: Bytes,
    /// The cursor after these events.
    pub next: usize,
    /// The run is finished and the batch reaches its last event.
    pub complete: bool,
}

impl Run {
    /// A new run with an empty log, no subscriber.
    pub fn new(id: String, conversation_id: String, message_id: String) -> Self {
        Self {
            id,
            conversation_id,
            message_id,
            state: Mutex::new(RunState {
                entries: Vec::new(),
                status: MessageStatus::Streaming,
                content: String::new(),
                flushed_len: 0,
                sources: Vec::new(),
                quality_score: None,
                follow_up_questions: Vec::new(),
                usage: None,
                error: None,
                finished_at: None,
                idle_since: Some(Instant::now()),
            }),
            appended: watch::channel(0).0,
            cancel: CancellationToken::new(),
            cancel_reason: OnceLock::new(),
            subscribers: AtomicUsize::new(0),
        }
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The conversation of the answer.
    pub fn conversation_id(&self) -> &str {
        &self.conversation_id
    }

    /// The assistant message the run writes.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The URL that attaches to this run.
    pub fn events_url(&self) -> String {
        format!("/api/runs/{}/events", self.id)
    }

    fn state(&self) -> MutexGuard<'_, RunState> {
        // A panic while holding this lock cannot leave the log half-written (every
        // update is a push after the encoding), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends an event with the next sequence number and wakes the subscribers.
    /// Nothing is appended after `done`.
    pub fn append(&self, event: ChatEvent) {
        let len = {
            let mut state = self.state();
            if state.finished_at.is_some() {
                return;
            }
            let seq = state.entries.len() + 1;
            let wire = encode_native(seq, &event);
            match &event {
                ChatEvent::Token(token) => state.content.push_str(&token.token),
                ChatEvent::Sources(sources) => state.sources.clone_from(&sources.sources),
                ChatEvent::QualityScore(score) => state.quality_score = Some(score.quality_score),
                ChatEvent::FollowUpQuestions(questions) => {
                    state
                        .follow_up_questions
                        .clone_from(&questions.follow_up_questions);
                }
                ChatEvent::Metadata(metadata) => state.usage = Some(metadata.usage),
                ChatEvent::Error(error) => state.error = Some(error.clone()),
                ChatEvent::Done(done) => {
                    state.status = done.status;
                    state.finished_at = Some(Instant::now());
                }
                _ => {}
            }
            state.entries.push(Entry { event, wire });
            state.entries.len()
        };
        self.appended.send_replace(len);
    }

    /// The bytes of the events from index `next` on (at most [`MAX_BATCH_BYTES`], but
    /// always at least one event), in one buffer.
    pub fn read_from(&self, next: usize) -> Batch {
        let state = self.state();
        let entries = state.entries.get(next..).unwrap_or_default();
        let mut taken = 0;
        let mut size = 0;
        for entry in entries {
            if taken > 0 && size + entry.wire.len() > MAX_BATCH_BYTES {
                break;
            }
            size += entry.wire.len();
            taken += 1;
        }
        let bytes = match &entries[..taken] {
            [] => Bytes::new(),
            [one] => one.wire.clone(),
            many => {
                let mut buf = BytesMut::with_capacity(size);
                for entry in many {
                    buf.extend_from_slice(&entry.wire);
                }
                buf.freeze()
            }
        };
        let next = next + taken;
        Batch {
            bytes,
            next,
            complete: state.finished_at.is_some() && next >= state.entries.len(),
        }
    }

    /// A receiver that changes whenever an event is appended.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.appended.subscribe()
    }

    /// How many events the log holds: the id of the last one.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `done` was appended.
    pub fn is_finished(&self) -> bool {
        self.state().finished_at.is_some()
    }

    /// When `done` was appended.
    pub fn finished_at(&self) -> Option<Instant> {
        self.state().finished_at
    }

    /// The answer text so far.
    pub fn content(&self) -> String {
        self.state().content.clone()
    }

    /// The text not yet flushed to the store, with its length, if any.
    pub fn unflushed(&self) -> Option<(String, usize)> {
        let state = self.state();
        (state.finished_at.is_none() && state.content.len() > state.flushed_len)
            .then(|| (state.content.clone(), state.content.len()))
    }

    /// Records that the store holds the first `len` bytes of the text.
    pub fn mark_flushed(&self, len: usize) {
        let mut state = self.state();
        state.flushed_len = state.flushed_len.max(len);
    }

    /// What the run produced so far.
    pub fn summary(&self) -> RunSummary {
        let state = self.state();
        RunSummary {
            status: state.status,
            content: state.content.clone(),
            sources: state.sources.clone(),
            quality_score: state.quality_score,
            follow_up_questions: state.follow_up_questions.clone(),
            usage: state.usage,
            error: state.error.clone(),
        }
    }

    /// The run as `GET /api/runs/{id}` shows it.
    pub fn view(&self) -> RunView {
        let state = self.state();
        RunView {
            run_id: self.id.clone(),
            conversation_id: self.conversation_id.clone(),
            message_id: self.message_id.clone(),
            status: state.status,
            last_event_id: state.entries.len() as u64,
            events_url: self.events_url(),
            content: state.content.clone(),
            subscribers: self.subscribers.load(Ordering::Relaxed),
        }
    }

    /// Asks the producer to stop. The first reason given wins; asking again is harmless.
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self.cancel_reason.set(reason);
        self.cancel.cancel();
    }

    /// Why the run was asked to stop, if it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cancel_reason.get().copied()
    }

    /// Fires when the run is asked to stop.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// How many subscribers follow the run.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Since when the run has had no subscriber, if it has none.
    pub fn idle_since(&self) -> Option<Instant> {
        self.state().idle_since
    }

    /// A cursor into the log, positioned after the first `after` events.
    pub fn subscribe(self: &Arc<Self>, after: usize) -> Subscription {
        let mut state = self.state();
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        state.idle_since = None;
        drop(state);
        Subscription {
            run: Arc::clone(self),
            next: after,
            changes: self.watch(),
        }
    }
}

/// A subscriber: a cursor into a run's log. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    run: Arc<Run>,
    next: usize,
    changes: watch::Receiver<usize>,
}

impl Subscription {
    /// The run followed.
    pub fn run(&self) -> &Arc<Run> {
        &self.run
    }

    /// Waits for events after the cursor and returns all of them (up to the batch
    /// limit) as one buffer; `None` once the run is finished and everything was read.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next_batch(&mut self) -> Option<Bytes> {
        loop {
            // Mark the current length seen before reading, so an append between the
            // read and the wait still wakes us.
            self.changes.borrow_and_update();
            let batch = self.run.read_from(self.next);
            self.next = batch.next;
            if !batch.bytes.is_empty() {
                return Some(batch.bytes);
            }
            if batch.complete {
                return None;
            }
            // The sender lives in the run, which we hold: this cannot fail.
            if self.changes.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Waits until the run is finished.
    pub async fn finished(&mut self) {
        while !self.run.is_finished() {
            if self.changes.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.run.state();
        if self.run.subscribers.fetch_sub(1, Ordering::Relaxed) == 1 {
            state.idle_since = Some(Instant::now());
        }
    }
}

/// `id: <seq>`, `event: <name>`, one `data:` line of JSON.
fn encode_native(seq: usize, event: &ChatEvent) -> Bytes {
    let mut data = Vec::with_capacity(64);
    // Serializing the protocol's plain structs into memory cannot fail.
    let _ = event.write_data(&mut data);
    let data = String::from_utf8_lossy(&data);
    let id = seq.to_string();
    let mut wire = Vec::with_capacity(data.len() + 40);
    // Ids are digits and names are fixed identifiers: neither can hold CR or LF.
    let _ = Frame::new(&data)
        .id(&id)
        .event(event.name())
        .encode(&mut wire);
    Bytes::from(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Arc<Run> {
        Arc::new(Run::new("r".into(), "c".into(), "m".into()))
    }

    #[test]
    fn events_get_consecutive_ids_and_nothing_follows_done() {
        let run = run();
        run.append(ChatEvent::token("a"));
        run.append(ChatEvent::token("b"));
        run.append(ChatEvent::done(MessageStatus::Complete));
        run.append(ChatEvent::token("late"));
        let batch = run.read_from(0);
        assert_eq!(
            std::str::from_utf8(&batch.bytes).unwrap(),
            "id: 1\nevent: token\ndata: {\"token\":\"a\"}\n\n\
             id: 2\nevent: token\ndata: {\"token\":\"b\"}\n\n\
             id: 3\nevent: done\ndata: {\"status\":\"complete\"}\n\n"
        );
        assert!(batch.complete);
        assert_eq!(run.content(), "ab");
        assert!(run.read_from(2).bytes.starts_with(b"id: 3\nevent: done\n"));
        assert!(run.read_from(3).bytes.is_empty() && run.read_from(3).complete);
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_backlog_in_one_batch_then_the_tail() {
        let run = run();
        for n in 0..5 {
            run.append(ChatEvent::token(n.to_string()));
        }
        let mut sub = run.subscribe(2);
        let backlog = sub.next_batch().await.unwrap();
        assert!(
            std::str::from_utf8(&backlog)
                .unwrap()
                .starts_with("id: 3\n")
        );
        assert_eq!(backlog.iter().filter(|&&b| b == b'\n').count(), 3 * 4);
        let producer = Arc::clone(&run);
        tokio::spawn(async move {
            producer.append(ChatEvent::token("x"));
            producer.append(ChatEvent::done(MessageStatus::Complete));
        });
        let mut rest = Vec::new();
        while let Some(bytes) = sub.next_batch().await {
            rest.extend_from_slice(&bytes);
        }
        assert!(
            String::from_utf8(rest)
                .unwrap()
                .ends_with("id: 7\nevent: done\ndata: {\"status\":\"complete\"}\n\n")
        );
    }

    #[test]
    fn subscribers_are_counted_and_idleness_tracked() {
        let run = run();
        assert!(run.idle_since().is_some());
        let a = run.subscribe(0);
        let b = run.subscribe(0);
        assert_eq!(run.subscribers(), 2);
        assert!(run.idle_since().is_none());
        drop(a);
        assert!(run.idle_since().is_none());
        drop(b);
        assert_eq!(run.subscribers(), 0);
        assert!(run.idle_since().is_some());
    }

    #[test]
    fn the_first_cancel_reason_wins() {
        let run = run();
        run.cancel(CancelReason::Requested);
        run.cancel(CancelReason::Shutdown);
        assert_eq!(run.cancel_reason(), Some(CancelReason::Requested));
        assert!(run.cancel_token().is_cancelled());
    }
}
