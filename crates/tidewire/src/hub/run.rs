//! A run: one answer being produced, as an append-only log of events.
//!
//! The producer appends; subscribers are cursors into the log. Each event is encoded
//! once, when appended, in the native wire form, straight into one contiguous buffer
//! with an offset per event, so replaying to any number of subscribers is copying
//! bytes and a finished run costs little more than its wire bytes. A slow subscriber
//! costs its cursor, nothing more.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tidewire_protocol::api::RunView;
use tidewire_protocol::{ChatEvent, ErrorEvent, MessageStatus, Source, Usage};
use tidewire_sse::Frame;
use tokio::sync::Notify;
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
    /// Woken on every append; subscribers wait on it when caught up.
    appended: Notify,
    cancel: CancellationToken,
    cancel_reason: OnceLock<CancelReason>,
    subscribers: AtomicUsize,
}

#[derive(Debug)]
struct RunState {
    log: Log,
    /// Reused to serialize each payload before it is framed into the log.
    scratch: Vec<u8>,
    /// The newest event's bytes, shared by the subscribers that read it.
    newest: Option<(usize, Bytes)>,
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

/// The encoded events: their wire bytes end to end, and where each one starts.
#[derive(Debug, Default)]
struct Log {
    wire: Vec<u8>,
    starts: Vec<usize>,
}

impl Log {
    fn len(&self) -> usize {
        self.starts.len()
    }

    /// Where event `index` starts (the end of the log for `len`).
    fn start(&self, index: usize) -> usize {
        self.starts.get(index).copied().unwrap_or(self.wire.len())
    }
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
                log: Log::default(),
                scratch: Vec::with_capacity(128),
                newest: None,
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
            appended: Notify::new(),
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
        {
            let mut guard = self.state();
            let state = &mut *guard;
            if state.finished_at.is_some() {
                return;
            }
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
            let seq = state.log.len() + 1;
            state.log.starts.push(state.log.wire.len());
            encode_native(seq, &event, &mut state.scratch, &mut state.log.wire);
            if state.finished_at.is_some() {
                // A finished run is kept for its retention period: keep it small.
                state.log.wire.shrink_to_fit();
                state.log.starts.shrink_to_fit();
                state.scratch = Vec::new();
            }
        }
        self.appended.notify_waiters();
    }

    /// The bytes of the events from index `next` on (at most [`MAX_BATCH_BYTES`], but
    /// always at least one event), in one buffer.
    pub fn read_from(&self, next: usize) -> Batch {
        let mut guard = self.state();
        let state = &mut *guard;
        let log = &state.log;
        let len = log.len();
        let next = next.min(len);
        let from = log.start(next);
        // As many whole events as fit the batch limit, but at least one. Event i ends
        // where event i + 1 starts; the last one ends with the log.
        let until = if next >= len {
            len
        } else {
            let ends = &log.starts[next + 1..];
            let mut until = next + ends.partition_point(|&end| end - from <= MAX_BATCH_BYTES);
            if until == len - 1 && log.wire.len() - from <= MAX_BATCH_BYTES {
                until = len;
            }
            until.max(next + 1)
        };
        let bytes = if until == len && until == next + 1 {
            // Caught-up subscribers all want the newest event: copy it once and share it.
            match &state.newest {
                Some((index, bytes)) if *index == next => bytes.clone(),
                _ => {
                    let bytes = Bytes::copy_from_slice(&log.wire[from..]);
                    state.newest = Some((next, bytes.clone()));
                    bytes
                }
            }
        } else {
            Bytes::copy_from_slice(&log.wire[from..log.start(until)])
        };
        Batch {
            bytes,
            next: until,
            complete: state.finished_at.is_some() && until >= len,
        }
    }

    /// Returns what `check` finds, waiting for appends until it finds something.
    /// `check` runs after the waiter is registered, so no append is missed between
    /// the check and the wait.
    async fn appended_after<T>(&self, mut check: impl FnMut() -> Option<T>) -> T {
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = check() {
                return value;
            }
            notified.await;
        }
    }

    /// Waits until the run is finished.
    pub async fn finished(&self) {
        self.appended_after(|| self.is_finished().then_some(()))
            .await;
    }

    /// How many events the log holds: the id of the last one.
    pub fn len(&self) -> usize {
        self.state().log.len()
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

    /// The text not yet flushed to the store, with where it starts, if any.
    pub fn unflushed(&self) -> Option<(usize, String)> {
        let state = self.state();
        // `flushed_len` was the length of the text once, so it is a char boundary.
        (state.finished_at.is_none() && state.content.len() > state.flushed_len).then(|| {
            (
                state.flushed_len,
                state.content[state.flushed_len..].to_owned(),
            )
        })
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
            last_event_id: state.log.len() as u64,
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
        }
    }
}

/// A subscriber: a cursor into a run's log. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    run: Arc<Run>,
    next: usize,
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
        let run = Arc::clone(&self.run);
        let next = &mut self.next;
        run.appended_after(|| {
            let batch = run.read_from(*next);
            *next = batch.next;
            if !batch.bytes.is_empty() {
                Some(Some(batch.bytes))
            } else if batch.complete {
                Some(None)
            } else {
                None
            }
        })
        .await
    }

    /// The events after the cursor that are already there, without waiting.
    pub fn ready_batch(&mut self) -> Option<Bytes> {
        let batch = self.run.read_from(self.next);
        self.next = batch.next;
        (!batch.bytes.is_empty()).then_some(batch.bytes)
    }

    /// Waits until the run is finished.
    pub async fn finished(&self) {
        self.run.finished().await;
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

/// Appends `id: <seq>`, `event: <name>` and one `data:` line of JSON to `wire`.
fn encode_native(seq: usize, event: &ChatEvent, scratch: &mut Vec<u8>, wire: &mut Vec<u8>) {
    scratch.clear();
    // Serializing the protocol's plain structs into memory cannot fail, and JSON
    // escapes every line break, so the data is one line.
    let _ = event.write_data(scratch);
    let data = String::from_utf8_lossy(scratch);
    let mut digits = [0u8; 20];
    let id = format_decimal(seq, &mut digits);
    // Ids are digits and names fixed identifiers: neither can hold CR or LF.
    let _ = Frame::new(&data).id(id).event(event.name()).encode(wire);
}

/// `n` in decimal, written into `buf`, without allocating.
fn format_decimal(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
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
    fn a_long_backlog_goes_out_in_batches_of_whole_events_under_the_limit() {
        let run = run();
        let token = "x".repeat(1000);
        for _ in 0..1000 {
            run.append(ChatEvent::token(token.clone()));
        }
        run.append(ChatEvent::done(MessageStatus::Complete));
        let whole = {
            let mut all = Vec::new();
            let mut next = 0;
            loop {
                let batch = run.read_from(next);
                assert!(batch.bytes.len() <= MAX_BATCH_BYTES);
                assert!(batch.next > next, "every batch makes progress");
                assert!(
                    batch
                        .bytes
                        .starts_with(format!("id: {}\n", next + 1).as_bytes())
                );
                all.extend_from_slice(&batch.bytes);
                next = batch.next;
                if batch.complete {
                    break;
                }
            }
            all
        };
        assert!(whole.len() > 3 * MAX_BATCH_BYTES);
        assert!(whole.ends_with(b"id: 1001\nevent: done\ndata: {\"status\":\"complete\"}\n\n"));
        // One event larger than the limit still goes out, whole.
        let big = Arc::new(Run::new("b".into(), "c".into(), "m".into()));
        big.append(ChatEvent::token("y".repeat(MAX_BATCH_BYTES + 10)));
        let batch = big.read_from(0);
        assert_eq!(batch.next, 1);
        assert!(batch.bytes.len() > MAX_BATCH_BYTES);
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
