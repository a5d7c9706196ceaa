//! A run: one answer being produced, as an append-only log of typed events.
//!
//! The producer appends [`ChatEvent`]s; subscribers are cursors into the log. The
//! log keeps the events themselves (inline: an event is 32 bytes, and a token's text
//! is the string the model's stream already made, moved in, so appending allocates
//! nothing), and beside them, per wire format that someone reads, the bytes of the
//! events encoded so far in one contiguous buffer with an offset per event. An event is encoded once per format, on first use, and those
//! bytes are shared by every subscriber of the format: replaying to any number of
//! subscribers is copying bytes. A slow subscriber costs its cursor, nothing more.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tidewire_protocol::{Answer, ChatEvent, MessageStatus};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::format::{EventEncoder, RunIdentity, WireFormat};
use crate::metrics::Metrics;

/// The most bytes one subscriber write carries when catching up, so a long replay
/// goes out in a few large writes without holding the run's lock for long.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// What an event costs in the log besides its text (its struct, its `Arc`, its
/// sequence number), for the size limit.
const EVENT_OVERHEAD: usize = 64;

/// Why a run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// `POST /api/runs/{id}/cancel`, or its conversation was deleted.
    Requested,
    /// No subscriber for the configured grace period.
    Idle,
    /// The server is shutting down.
    Shutdown,
    /// The run's log reached its size limit.
    TooLarge,
    /// Its client went away (a route whose clients cannot resume).
    Disconnected,
}

impl CancelReason {
    /// The status the answer gets when its run stops for this reason.
    pub fn status(self) -> MessageStatus {
        match self {
            Self::Requested | Self::Idle | Self::Disconnected => MessageStatus::Cancelled,
            Self::Shutdown => MessageStatus::Interrupted,
            Self::TooLarge => MessageStatus::Failed,
        }
    }

    /// Its name in metrics.
    pub fn cause(self) -> &'static str {
        match self {
            Self::Requested => "request",
            Self::Idle => "idle",
            Self::Shutdown => "shutdown",
            Self::TooLarge => "too_large",
            Self::Disconnected => "disconnect",
        }
    }
}

/// One answer being produced.
pub struct Run {
    identity: RunIdentity,
    /// The largest log, in (estimated) bytes.
    max_bytes: usize,
    state: Mutex<RunState>,
    cancel: CancellationToken,
    cancel_reason: OnceLock<CancelReason>,
    subscribers: AtomicUsize,
    /// Where its subscribers count what they send, when the server keeps metrics.
    metrics: Option<Arc<Metrics>>,
    /// A mirror of a run another node produces, filled from the shared log.
    remote: bool,
    /// Its conversation was deleted: it must not reappear in the shared log.
    forgotten: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.identity.run_id)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

struct RunState {
    events: Vec<ChatEvent>,
    /// The answer so far, folded from `events`.
    answer: Answer,
    /// The estimated size of `events`.
    bytes: usize,
    /// The encoded events, one entry per format read.
    encodings: Vec<Encoding>,
    /// How much of the answer text the store holds.
    flushed_len: usize,
    finished_at: Option<Instant>,
    /// Since when the run has had no subscriber.
    idle_since: Option<Instant>,
    /// Who waits for the next append.
    waiters: Waiters,
}

/// Those waiting for a run's next append: their wakers, all woken by it. Kept under
/// the log's own lock, so a subscriber that finds nothing new registers in the
/// same critical section that read the log: one lock a poll, where a `Notify`
/// beside the log took a lock of its own three times an event (perf: 3 % of a
/// paced stream's server time).
#[derive(Default)]
struct Waiters {
    /// How many appends have taken the list: a slot of an earlier round is gone.
    round: u64,
    wakers: Vec<Waker>,
}

/// Where one waiter's waker is in [`Waiters`], while it is there.
#[derive(Debug, Default)]
struct Slot(Option<(u64, usize)>);

/// A wait for an append ([`Run::appended_after`]): given up (a timeout), it lets
/// go of its waker at once, not at the next append.
struct Waiting<'a> {
    run: &'a Run,
    slot: Slot,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.slot.0.is_some() {
            self.run.state().waiters.leave(&self.slot);
        }
    }
}

/// Up to this many waiters are woken under the lock, keeping the list's memory;
/// more (a fan-out) take the list and are woken after it.
const WAKE_IN_PLACE: usize = 8;

impl Waiters {
    /// Adds `waker`, or replaces the one `slot` already holds in this round.
    fn register(&mut self, slot: &mut Slot, waker: &Waker) {
        if let Some((round, index)) = slot.0
            && round == self.round
            && let Some(held) = self.wakers.get_mut(index)
        {
            if !held.will_wake(waker) {
                held.clone_from(waker);
            }
            return;
        }
        slot.0 = Some((self.round, self.wakers.len()));
        self.wakers.push(waker.clone());
    }

    /// Lets go of the waker `slot` holds, so the list keeps no task alive that no
    /// longer waits.
    fn leave(&mut self, slot: &Slot) {
        if let Some((round, index)) = slot.0
            && round == self.round
            && let Some(held) = self.wakers.get_mut(index)
        {
            *held = Waker::noop().clone();
        }
    }

    /// Starts a new round: wakes a few waiters now, or returns the many to wake
    /// once the lock is released.
    fn wake(&mut self) -> Vec<Waker> {
        if self.wakers.is_empty() {
            return Vec::new();
        }
        self.round += 1;
        if self.wakers.len() <= WAKE_IN_PLACE {
            // Waking a task only schedules it: nothing runs under the lock.
            self.wakers.drain(..).for_each(Waker::wake);
            return Vec::new();
        }
        std::mem::take(&mut self.wakers)
    }
}

/// The events of a run in one wire format: their bytes end to end, and where each
/// one starts.
struct Encoding {
    format: &'static str,
    /// Dropped once every event, `done` included, is encoded.
    encoder: Option<Box<dyn EventEncoder>>,
    wire: Vec<u8>,
    starts: Vec<usize>,
    /// The newest event's bytes, shared by the subscribers that read it.
    newest: Option<(usize, Bytes)>,
}

impl Encoding {
    fn len(&self) -> usize {
        self.starts.len()
    }

    /// Where event `index` starts (the end of the log for `len`).
    fn start(&self, index: usize) -> usize {
        self.starts.get(index).copied().unwrap_or(self.wire.len())
    }

    /// Encodes the events this encoding does not have yet.
    fn catch_up(&mut self, events: &[ChatEvent], finished: bool) {
        let Some(encoder) = self.encoder.as_mut() else {
            return;
        };
        for (index, event) in events.iter().enumerate().skip(self.starts.len()) {
            self.starts.push(self.wire.len());
            encoder.encode(index as u64 + 1, event, &mut self.wire);
        }
        if finished {
            // A finished run is kept for its retention period: keep it small.
            self.encoder = None;
            self.wire.shrink_to_fit();
            self.starts.shrink_to_fit();
        }
    }
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
    /// A new run with an empty log, no subscriber, whose log may hold `max_bytes`.
    pub fn new(identity: RunIdentity, max_bytes: usize) -> Self {
        Self {
            identity,
            max_bytes,
            state: Mutex::new(RunState {
                events: Vec::new(),
                answer: Answer::default(),
                bytes: 0,
                encodings: Vec::new(),
                flushed_len: 0,
                finished_at: None,
                idle_since: Some(Instant::now()),
                waiters: Waiters::default(),
            }),
            cancel: CancellationToken::new(),
            cancel_reason: OnceLock::new(),
            subscribers: AtomicUsize::new(0),
            metrics: None,
            remote: false,
            forgotten: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A local copy of a run another node produces, filled from the shared log
    /// (its producer enforces the size limit).
    pub fn mirror(identity: RunIdentity) -> Self {
        Self {
            remote: true,
            ..Self::new(identity, usize::MAX)
        }
    }

    /// Marks the run as deleted with its conversation.
    pub fn forget(&self) {
        self.forgotten.store(true, Ordering::Release);
    }

    /// Whether the run was deleted with its conversation.
    pub fn is_forgotten(&self) -> bool {
        self.forgotten.load(Ordering::Acquire)
    }

    /// Whether this is a mirror of a run another node produces.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// The run, with its subscribers counting into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics.enabled().then_some(metrics);
        self
    }

    /// Counts the events `from..to` a subscriber is sending, and the end of a
    /// resumed subscriber's catching up (it reached the end of the log). The
    /// counts reach the server's counters in batches: a shared counter written on
    /// every batch of every stream moved its cache line between the cores each time.
    fn count_sent(&self, from: usize, to: usize, bytes: usize, tally: &mut Tally) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        if to > from {
            tally.events += (to - from) as u64;
            tally.bytes += bytes as u64;
            if tally.events >= u64::from(crate::metrics::BATCH) {
                tally.flush(metrics);
            }
        }
        if let Some(since) = tally.catching_up
            && to >= self.len()
        {
            metrics
                .resume_catch_up
                .observe(since.elapsed().as_secs_f64());
            tally.catching_up = None;
        }
    }

    /// The server's metrics, when it keeps them.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The estimated bytes of its log.
    pub fn log_bytes(&self) -> usize {
        self.state().bytes
    }

    /// Who the run is.
    pub fn identity(&self) -> &RunIdentity {
        &self.identity
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        &self.identity.run_id
    }

    /// The conversation of the answer.
    pub fn conversation_id(&self) -> &str {
        &self.identity.conversation_id
    }

    /// The assistant message the run writes.
    pub fn message_id(&self) -> &str {
        &self.identity.message_id
    }

    fn state(&self) -> MutexGuard<'_, RunState> {
        // A panic while holding this lock cannot leave the log half-written (every
        // update is a push after the encoding), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends an event with the next sequence number and wakes the subscribers.
    /// Nothing is appended after `done`. An event that would take the log over its
    /// size limit is dropped and the run is cancelled (`error`, `metadata` and
    /// `done`, which end a run, always fit).
    pub fn append(&self, event: ChatEvent) {
        let many = {
            let mut guard = self.state();
            let state = &mut *guard;
            if state.finished_at.is_some() {
                return;
            }
            let size = approx_size(&event);
            let ends_run = matches!(
                event,
                ChatEvent::Error(_) | ChatEvent::Metadata(_) | ChatEvent::Done(_)
            );
            if !ends_run && state.bytes.saturating_add(size) > self.max_bytes {
                drop(guard);
                self.cancel(CancelReason::TooLarge);
                return;
            }
            state.bytes += size;
            state.answer.apply(&event);
            if let ChatEvent::Done(_) = event {
                state.finished_at = Some(Instant::now());
            }
            state.events.push(event);
            if state.finished_at.is_some() {
                state.events.shrink_to_fit();
            }
            state.waiters.wake()
        };
        many.into_iter().for_each(Waker::wake);
    }

    /// The bytes, in `format`, of the events from index `next` on (at most
    /// [`MAX_BATCH_BYTES`], but always at least one event), in one buffer.
    pub fn read_from(&self, format: &dyn WireFormat, next: usize) -> Batch {
        self.read_locked(&mut self.state(), format, next)
    }

    /// [`Run::read_from`], with the log's lock held.
    fn read_locked(&self, state: &mut RunState, format: &dyn WireFormat, next: usize) -> Batch {
        let finished = state.finished_at.is_some();
        let index = match state
            .encodings
            .iter()
            .position(|encoding| encoding.format == format.name())
        {
            Some(index) => index,
            None => {
                // Most runs are read in one format: room for one, not the four a
                // growing Vec makes (120 bytes each, for every idle stream).
                state.encodings.reserve_exact(1);
                state.encodings.push(Encoding {
                    format: format.name(),
                    encoder: Some(format.encoder(&self.identity)),
                    wire: Vec::new(),
                    starts: Vec::new(),
                    newest: None,
                });
                state.encodings.len() - 1
            }
        };
        let log = &mut state.encodings[index];
        log.catch_up(&state.events, finished);
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
            match &log.newest {
                Some((index, bytes)) if *index == next => bytes.clone(),
                _ if self.subscribers.load(Ordering::Relaxed) > 1 => {
                    let bytes = Bytes::copy_from_slice(&log.wire[from..]);
                    log.newest = Some((next, bytes.clone()));
                    bytes
                }
                // A lone subscriber's copy, kept, would live as long as the stream
                // is quiet, for nobody.
                _ => {
                    log.newest = None;
                    Bytes::copy_from_slice(&log.wire[from..])
                }
            }
        } else {
            Bytes::copy_from_slice(&log.wire[from..log.start(until)])
        };
        Batch {
            bytes,
            next: until,
            complete: finished && until >= len,
        }
    }

    /// Returns what `check` finds in the log, waiting for appends until it finds
    /// something. `check` runs under the same lock as the waiter's registration,
    /// so no append is missed between the check and the wait.
    async fn appended_after<T>(&self, mut check: impl FnMut(&RunState) -> Option<T>) -> T {
        let mut waiting = Waiting {
            run: self,
            slot: Slot::default(),
        };
        std::future::poll_fn(|cx| {
            let mut state = self.state();
            match check(&state) {
                Some(value) => {
                    // Found after an append, which emptied the list: nothing to
                    // take back when the wait ends.
                    waiting.slot = Slot::default();
                    Poll::Ready(value)
                }
                None => {
                    state.waiters.register(&mut waiting.slot, cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits until the run is finished.
    pub async fn finished(&self) {
        self.appended_after(|state| state.finished_at.is_some().then_some(()))
            .await;
    }

    /// How many events the log holds: the id of the last one.
    pub fn len(&self) -> usize {
        self.state().events.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// At most `max` events from index `from` on.
    pub fn events_from(&self, from: usize, max: usize) -> Vec<ChatEvent> {
        let state = self.state();
        let events = state.events.get(from..).unwrap_or_default();
        events[..events.len().min(max)].to_vec()
    }

    /// Waits until the log holds at least `len` events, or the run is finished.
    pub async fn reached(&self, len: usize) {
        self.appended_after(|state| {
            (state.events.len() >= len || state.finished_at.is_some()).then_some(())
        })
        .await;
    }

    /// Waits until the log holds more than `len` events, or the run is finished.
    pub async fn grown_past(&self, len: usize) {
        self.appended_after(|state| {
            (state.events.len() > len || state.finished_at.is_some()).then_some(())
        })
        .await;
    }

    /// Whether `done` was appended.
    pub fn is_finished(&self) -> bool {
        self.state().finished_at.is_some()
    }

    /// When `done` was appended.
    pub fn finished_at(&self) -> Option<Instant> {
        self.state().finished_at
    }

    /// The answer so far.
    pub fn answer(&self) -> Answer {
        self.state().answer.clone()
    }

    /// The status: `streaming` until `done`.
    pub fn status(&self) -> MessageStatus {
        self.state().answer.status
    }

    /// The answer text so far.
    pub fn content(&self) -> String {
        self.state().answer.content.clone()
    }

    /// What the run holds in memory, in (estimated) bytes: its events and their
    /// encodings.
    pub fn retained_bytes(&self) -> usize {
        let state = self.state();
        state.bytes
            + state.events.capacity() * size_of::<ChatEvent>()
            + state
                .encodings
                .iter()
                .map(|e| e.wire.capacity() + e.starts.capacity() * size_of::<usize>())
                .sum::<usize>()
    }

    /// The text not yet flushed to the store, with where it starts, if any.
    pub fn unflushed(&self) -> Option<(usize, String)> {
        let state = self.state();
        let content = &state.answer.content;
        // `flushed_len` was the length of the text once, so it is a char boundary.
        (state.finished_at.is_none() && content.len() > state.flushed_len)
            .then(|| (state.flushed_len, content[state.flushed_len..].to_owned()))
    }

    /// Records that the store holds the first `len` bytes of the text.
    pub fn mark_flushed(&self, len: usize) {
        let mut state = self.state();
        state.flushed_len = state.flushed_len.max(len);
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

    /// A cursor into the log in `format`, positioned after the first `after` events.
    pub fn subscribe(self: &Arc<Self>, after: usize, format: Arc<dyn WireFormat>) -> Subscription {
        let mut state = self.state();
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        state.idle_since = None;
        let backlog = state.events.len().saturating_sub(after);
        drop(state);
        let resumed = after > 0;
        if let Some(metrics) = self.metrics.as_ref().filter(|_| resumed) {
            metrics.resumes.inc();
            metrics.resumed_events.inc_by(backlog as u64);
        }
        Subscription {
            run: Arc::clone(self),
            format,
            next: after,
            complete: false,
            tally: Tally {
                catching_up: resumed.then(Instant::now),
                ..Tally::default()
            },
            slot: Slot::default(),
        }
    }
}

/// The estimated size of an event in the log.
fn approx_size(event: &ChatEvent) -> usize {
    EVENT_OVERHEAD
        + match event {
            ChatEvent::Token(token) => token.token.len(),
            ChatEvent::Sources(sources) => sources
                .sources
                .iter()
                .map(|s| s.text.len() + s.document_name.len() + s.chunk_id.len() + 16)
                .sum(),
            ChatEvent::FollowUpQuestions(questions) => {
                questions.follow_up_questions.iter().map(String::len).sum()
            }
            ChatEvent::ToolStarted(call) => call.tool_name.len() + call.arguments.to_string().len(),
            ChatEvent::ToolFinished(call) => call.tool_name.len() + call.result.to_string().len(),
            ChatEvent::ToolCall(call) => call.tool_name.len() + call.arguments.len(),
            ChatEvent::Error(error) => error.error.len(),
            ChatEvent::Run(_)
            | ChatEvent::Stage(_)
            | ChatEvent::QualityScore(_)
            | ChatEvent::Metadata(_)
            | ChatEvent::Done(_) => 0,
        }
}

/// A subscriber: a cursor into a run's log, in one wire format. Dropping it
/// unsubscribes.
pub struct Subscription {
    run: Arc<Run>,
    format: Arc<dyn WireFormat>,
    next: usize,
    /// The run is finished and everything was read.
    complete: bool,
    tally: Tally,
    /// Its place among the run's waiters.
    slot: Slot,
}

/// What a subscription has to count in the server's metrics.
#[derive(Debug, Default)]
struct Tally {
    /// Since when a resumed subscription sends what it missed, until it has.
    catching_up: Option<Instant>,
    /// Events sent and not yet in the server's counter.
    events: u64,
    /// Their bytes.
    bytes: u64,
}

impl Tally {
    /// Adds the events and bytes counted so far to the server's counters.
    fn flush(&mut self, metrics: &Metrics) {
        if self.events == 0 {
            return;
        }
        metrics
            .stream_events
            .inc_by(std::mem::take(&mut self.events));
        metrics.stream_bytes.inc_by(std::mem::take(&mut self.bytes));
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("run", &self.run.id())
            .field("format", &self.format.name())
            .field("next", &self.next)
            .finish()
    }
}

impl Subscription {
    /// The run followed.
    pub fn run(&self) -> &Arc<Run> {
        &self.run
    }

    /// The name of the wire format it sends.
    pub fn format_name(&self) -> &'static str {
        self.format.name()
    }

    /// Waits for events after the cursor and returns all of them (up to the batch
    /// limit) as one buffer; `None` once the run is finished and everything was read.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next_batch(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_batch(cx)).await
    }

    /// [`Subscription::next_batch`] as a poll: when nothing is there yet, the task
    /// is woken by the next append.
    pub fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let batch = self.read(Some(cx.waker()));
        if !batch.bytes.is_empty() {
            Poll::Ready(Some(batch.bytes))
        } else if batch.complete {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// The events after the cursor that are already there, without waiting.
    pub fn ready_batch(&mut self) -> Option<Bytes> {
        let batch = self.read(None);
        (!batch.bytes.is_empty()).then_some(batch.bytes)
    }

    /// Reads the events after the cursor and moves it past them; with nothing to
    /// read, leaves `waker` (if any) to be woken by the next append, under the
    /// same lock.
    fn read(&mut self, waker: Option<&Waker>) -> Batch {
        let from = self.next;
        let batch = {
            let mut state = self.run.state();
            let batch = self.run.read_locked(&mut state, self.format.as_ref(), from);
            if let Some(waker) = waker.filter(|_| batch.bytes.is_empty() && !batch.complete) {
                state.waiters.register(&mut self.slot, waker);
            }
            batch
        };
        self.next = batch.next;
        self.complete = batch.complete;
        self.run
            .count_sent(from, batch.next, batch.bytes.len(), &mut self.tally);
        batch
    }

    /// Whether the last batch read ended the run: nothing will follow it.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Waits until the run is finished.
    pub async fn finished(&self) {
        self.run.finished().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(metrics) = &self.run.metrics {
            self.tally.flush(metrics);
        }
        let mut state = self.run.state();
        state.waiters.leave(&self.slot);
        if self.run.subscribers.fetch_sub(1, Ordering::Relaxed) == 1 {
            state.idle_since = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `seq name data` lines: enough to see ids, order and batching.
    struct Plain;

    struct PlainEncoder;

    impl WireFormat for Plain {
        fn name(&self) -> &'static str {
            "plain"
        }

        fn encoder(&self, _: &RunIdentity) -> Box<dyn EventEncoder> {
            Box::new(PlainEncoder)
        }
    }

    impl EventEncoder for PlainEncoder {
        fn encode(&mut self, seq: u64, event: &ChatEvent, out: &mut Vec<u8>) {
            out.extend_from_slice(
                format!("{seq} {} {}\n", event.name(), event.data_json()).as_bytes(),
            );
        }
    }

    /// Leaves out every event but tokens, and counts how often it encodes.
    struct TokensOnly(Arc<AtomicUsize>);

    impl WireFormat for TokensOnly {
        fn name(&self) -> &'static str {
            "tokens"
        }

        fn encoder(&self, _: &RunIdentity) -> Box<dyn EventEncoder> {
            Box::new(TokensOnlyEncoder(Arc::clone(&self.0)))
        }
    }

    struct TokensOnlyEncoder(Arc<AtomicUsize>);

    impl EventEncoder for TokensOnlyEncoder {
        fn encode(&mut self, _: u64, event: &ChatEvent, out: &mut Vec<u8>) {
            self.0.fetch_add(1, Ordering::Relaxed);
            if let ChatEvent::Token(token) = event {
                out.extend_from_slice(token.token.as_bytes());
            }
        }
    }

    fn identity(id: &str) -> RunIdentity {
        RunIdentity {
            run_id: id.into(),
            conversation_id: "c".into(),
            message_id: "m".into(),
            created: 0,
            attributes: None,
            user_id: crate::store::LOCAL_USER.into(),
        }
    }

    fn run() -> Arc<Run> {
        Arc::new(Run::new(identity("r"), usize::MAX))
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn events_get_consecutive_ids_and_nothing_follows_done() {
        let run = run();
        run.append(ChatEvent::token("a"));
        run.append(ChatEvent::token("b"));
        run.append(ChatEvent::done(MessageStatus::Complete));
        run.append(ChatEvent::token("late"));
        let batch = run.read_from(&Plain, 0);
        assert_eq!(
            text(&batch.bytes),
            "1 token {\"token\":\"a\"}\n2 token {\"token\":\"b\"}\n3 done {\"status\":\"complete\"}\n"
        );
        assert!(batch.complete);
        assert_eq!(run.content(), "ab");
        assert_eq!(run.status(), MessageStatus::Complete);
        assert_eq!(
            text(&run.read_from(&Plain, 2).bytes),
            "3 done {\"status\":\"complete\"}\n"
        );
        assert!(run.read_from(&Plain, 3).bytes.is_empty() && run.read_from(&Plain, 3).complete);
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_backlog_in_one_batch_then_the_tail() {
        let run = run();
        for n in 0..5 {
            run.append(ChatEvent::token(n.to_string()));
        }
        let mut sub = run.subscribe(2, Arc::new(Plain));
        let backlog = sub.next_batch().await.unwrap();
        assert_eq!(
            text(&backlog),
            "3 token {\"token\":\"2\"}\n4 token {\"token\":\"3\"}\n5 token {\"token\":\"4\"}\n"
        );
        let producer = Arc::clone(&run);
        tokio::spawn(async move {
            producer.append(ChatEvent::token("x"));
            producer.append(ChatEvent::done(MessageStatus::Complete));
        });
        let mut rest = Vec::new();
        while let Some(bytes) = sub.next_batch().await {
            rest.extend_from_slice(&bytes);
        }
        assert!(text(&rest).ends_with("7 done {\"status\":\"complete\"}\n"));
    }

    #[tokio::test]
    async fn each_format_encodes_each_event_once_and_may_leave_events_out() {
        let run = run();
        let encoded = Arc::new(AtomicUsize::new(0));
        let format: Arc<dyn WireFormat> = Arc::new(TokensOnly(Arc::clone(&encoded)));
        let mut subs: Vec<_> = (0..10)
            .map(|_| run.subscribe(0, Arc::clone(&format)))
            .collect();
        run.append(ChatEvent::stage("generation"));
        run.append(ChatEvent::token("Hi"));
        run.append(ChatEvent::token(" there"));
        run.append(ChatEvent::done(MessageStatus::Complete));
        for sub in &mut subs {
            let mut all = Vec::new();
            while let Some(bytes) = sub.next_batch().await {
                all.extend_from_slice(&bytes);
            }
            assert_eq!(text(&all), "Hi there");
        }
        assert_eq!(
            encoded.load(Ordering::Relaxed),
            4,
            "once per event, not per subscriber"
        );
        // Another format of the same run has its own bytes.
        assert!(text(&run.read_from(&Plain, 0).bytes).starts_with("1 stage"));
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
                let batch = run.read_from(&Plain, next);
                assert!(batch.bytes.len() <= MAX_BATCH_BYTES);
                assert!(batch.next > next, "every batch makes progress");
                assert!(batch.bytes.starts_with(format!("{} ", next + 1).as_bytes()));
                all.extend_from_slice(&batch.bytes);
                next = batch.next;
                if batch.complete {
                    break;
                }
            }
            all
        };
        assert!(whole.len() > 3 * MAX_BATCH_BYTES);
        assert!(whole.ends_with(b"1001 done {\"status\":\"complete\"}\n"));
        // One event larger than the limit still goes out, whole.
        let big = Arc::new(Run::new(identity("b"), usize::MAX));
        big.append(ChatEvent::token("y".repeat(MAX_BATCH_BYTES + 10)));
        let batch = big.read_from(&Plain, 0);
        assert_eq!(batch.next, 1);
        assert!(batch.bytes.len() > MAX_BATCH_BYTES);
    }

    #[test]
    fn a_log_over_its_limit_cancels_the_run_and_keeps_what_fit() {
        let run = Arc::new(Run::new(identity("big"), 1000));
        for _ in 0..100 {
            run.append(ChatEvent::token("x".repeat(100)));
        }
        assert_eq!(run.cancel_reason(), Some(CancelReason::TooLarge));
        assert_eq!(CancelReason::TooLarge.status(), MessageStatus::Failed);
        let kept = run.len();
        assert!(kept > 0 && kept < 10, "{kept}");
        // What ends a run still fits.
        run.append(ChatEvent::error("answer_too_large", "too large", false));
        run.append(ChatEvent::done(MessageStatus::Failed));
        assert_eq!(run.len(), kept + 2);
        assert!(run.is_finished());
    }

    #[test]
    fn subscribers_are_counted_and_idleness_tracked() {
        let run = run();
        assert!(run.idle_since().is_some());
        let a = run.subscribe(0, Arc::new(Plain));
        let b = run.subscribe(0, Arc::new(Plain));
        assert_eq!(run.subscribers(), 2);
        assert!(run.idle_since().is_none());
        drop(a);
        assert!(run.idle_since().is_none());
        drop(b);
        assert_eq!(run.subscribers(), 0);
        assert!(run.idle_since().is_some());
    }

    /// A waker that counts its wakes.
    struct Counter(AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (Arc::clone(&counter), Waker::from(Arc::clone(&counter)))
    }

    #[test]
    fn a_waiting_subscriber_is_woken_once_by_its_latest_waker_and_let_go_when_dropped() {
        let run = run();
        let mut sub = run.subscribe(0, Arc::new(Plain));
        let (first, first_waker) = counter();
        let (latest, latest_waker) = counter();
        assert!(
            sub.poll_batch(&mut Context::from_waker(&first_waker))
                .is_pending()
        );
        assert!(
            sub.poll_batch(&mut Context::from_waker(&latest_waker))
                .is_pending()
        );
        assert!(
            sub.poll_batch(&mut Context::from_waker(&latest_waker))
                .is_pending()
        );
        run.append(ChatEvent::token("a"));
        assert_eq!(first.0.load(Ordering::Relaxed), 0, "replaced by the latest");
        assert_eq!(latest.0.load(Ordering::Relaxed), 1, "one slot, one wake");
        let Poll::Ready(Some(bytes)) = sub.poll_batch(&mut Context::from_waker(&latest_waker))
        else {
            panic!("the token is there");
        };
        assert_eq!(text(&bytes), "1 token {\"token\":\"a\"}\n");

        // Waiting again, then gone: the run keeps no waker of it.
        assert!(
            sub.poll_batch(&mut Context::from_waker(&latest_waker))
                .is_pending()
        );
        drop(latest_waker);
        assert_eq!(Arc::strong_count(&latest), 2, "the run holds the waker");
        drop(sub);
        assert_eq!(
            Arc::strong_count(&latest),
            1,
            "let go with the subscription"
        );
        run.append(ChatEvent::token("b"));
        assert_eq!(latest.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_wait_given_up_lets_go_of_its_waker() {
        let run = run();
        let (counter, waker) = counter();
        let mut wait = Box::pin(run.reached(1));
        assert!(
            wait.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        drop(waker);
        assert_eq!(Arc::strong_count(&counter), 2, "the run holds the waker");
        drop(wait);
        assert_eq!(Arc::strong_count(&counter), 1, "let go with the wait");
    }

    #[tokio::test]
    async fn an_append_wakes_every_waiting_subscriber_however_many() {
        let run = run();
        let mut followers = Vec::new();
        for _ in 0..3 * WAKE_IN_PLACE {
            let mut sub = run.subscribe(0, Arc::new(Plain));
            followers.push(tokio::spawn(async move {
                let mut all = Vec::new();
                while let Some(bytes) = sub.next_batch().await {
                    all.extend_from_slice(&bytes);
                }
                all
            }));
        }
        // Every follower waits before the first append.
        while run.state().waiters.wakers.len() < 3 * WAKE_IN_PLACE {
            tokio::task::yield_now().await;
        }
        for n in 0..3 {
            run.append(ChatEvent::token(n.to_string()));
            tokio::task::yield_now().await;
        }
        run.append(ChatEvent::done(MessageStatus::Complete));
        for follower in followers {
            let all = follower.await.unwrap();
            assert!(text(&all).starts_with("1 token"), "{}", text(&all));
            assert!(text(&all).ends_with("4 done {\"status\":\"complete\"}\n"));
        }
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
