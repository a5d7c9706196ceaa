//! The hub owns runs: it starts them, finds them, cancels them, flushes their partial
//! answers to the store, forgets them after the retention period, and drains them
//! at shutdown.
//!
//! A run does not depend on any connection. Its producer is a task of its own (the
//! pipeline), and each HTTP stream is only a [`Subscription`] into its log.

mod run;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use tidewire_protocol::{ChatEvent, MessageStatus, RunStarted};
use tokio::sync::{Notify, OnceCell};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{self, AnswerJob, Ending, EventSink};
use crate::store::{FinishedMessage, NewTurn, PartialAnswer, Store, StoreError, new_id};

pub use run::{Batch, CancelReason, Run, RunSummary, Subscription};

/// The hub's settings, taken from the configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Most runs generating at once.
    pub max_concurrent_runs: usize,
    /// How long finished runs stay attachable.
    pub retention: Duration,
    /// Cancel runs with no subscriber for this long.
    pub cancel_after_idle: Option<Duration>,
    /// How often partial answers are written to the store.
    pub flush_interval: Duration,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Too many runs are generating.
    #[error("{0} runs are already generating; try again shortly")]
    TooManyRuns(usize),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The same idempotency key came with a different request.
    #[error("idempotency key was already used for a different request")]
    KeyReused,
    /// The store refused the turn.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request for a new run.
pub struct RunRequest {
    /// Continue this conversation, or start one.
    pub conversation_id: Option<String>,
    /// The user's message.
    pub message: String,
    /// Builds the pipeline job once the answer's message id is known.
    pub job: Box<dyn FnOnce(&str) -> AnswerJob + Send>,
}

/// A client-chosen key that makes retried POSTs attach to the first run.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The `Idempotency-Key` header.
    pub key: String,
    /// A digest of the request, so a reused key with another request is refused.
    pub fingerprint: u64,
}

struct KeyEntry {
    fingerprint: u64,
    run: OnceCell<Arc<Run>>,
}

/// The registry of runs.
pub struct Hub {
    config: HubConfig,
    store: Arc<dyn Store>,
    runs: Mutex<HashMap<String, Arc<Run>>>,
    keys: Mutex<HashMap<String, Arc<KeyEntry>>>,
    active: AtomicUsize,
    idle: Notify,
    accepting: AtomicBool,
    stop_maintenance: CancellationToken,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Holds one slot of the concurrency limit; frees it when dropped.
struct Slot {
    hub: Arc<Hub>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.hub.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.hub.idle.notify_waiters();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a map insert or remove: no torn state to fear.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// A hub over `store`, with its background maintenance (flushes, expiry, idle
    /// cancel) started.
    pub fn new(config: HubConfig, store: Arc<dyn Store>) -> Arc<Self> {
        let hub = Arc::new(Self {
            config,
            store,
            runs: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            accepting: AtomicBool::new(true),
            stop_maintenance: CancellationToken::new(),
        });
        tokio::spawn(flush_loop(Arc::clone(&hub)));
        tokio::spawn(expiry_loop(Arc::clone(&hub)));
        hub
    }

    /// The store runs write to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A run in memory (running, or finished within the retention period).
    pub fn get(&self, run_id: &str) -> Option<Arc<Run>> {
        lock(&self.runs).get(run_id).cloned()
    }

    /// How many runs are generating.
    pub fn active_runs(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Starts a run: stores the turn, then spawns its producer. With an idempotency
    /// key already used for the same request, returns that run instead.
    pub async fn start(
        self: &Arc<Self>,
        request: RunRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<(Arc<Run>, bool), StartError> {
        let Some(key) = key else {
            return self.start_new(request).await.map(|run| (run, true));
        };
        let entry = {
            let mut keys = lock(&self.keys);
            Arc::clone(keys.entry(key.key.clone()).or_insert_with(|| {
                Arc::new(KeyEntry {
                    fingerprint: key.fingerprint,
                    run: OnceCell::new(),
                })
            }))
        };
        if entry.fingerprint != key.fingerprint {
            return Err(StartError::KeyReused);
        }
        let mut created = false;
        // Of concurrent requests with one key, exactly one starts the run; the others
        // wait for it and attach.
        let result = entry
            .run
            .get_or_try_init(|| async {
                created = true;
                self.start_new(request).await
            })
            .await;
        match result {
            Ok(run) => {
                if created {
                    tracing::debug!(run_id = run.id(), key = %key.key, "idempotent run started");
                }
                Ok((Arc::clone(run), created))
            }
            Err(error) => {
                let mut keys = lock(&self.keys);
                if keys.get(&key.key).is_some_and(|e| e.run.get().is_none()) {
                    keys.remove(&key.key);
                }
                Err(error)
            }
        }
    }

    async fn start_new(self: &Arc<Self>, request: RunRequest) -> Result<Arc<Run>, StartError> {
        let slot = self.reserve()?;
        let run_id = new_id();
        let turn = self
            .store
            .start_turn(NewTurn {
                conversation_id: request.conversation_id,
                message: request.message,
                run_id: run_id.clone(),
            })
            .await?;
        let run = Arc::new(Run::new(
            run_id,
            turn.conversation_id.clone(),
            turn.assistant_message_id.clone(),
        ));
        run.append(ChatEvent::Run(RunStarted {
            run_id: run.id().to_owned(),
            conversation_id: turn.conversation_id,
            message_id: turn.assistant_message_id.clone(),
            events_url: run.events_url(),
        }));
        lock(&self.runs).insert(run.id().to_owned(), Arc::clone(&run));
        let job = (request.job)(&turn.assistant_message_id);
        tokio::spawn(produce(Arc::clone(self), Arc::clone(&run), job, slot));
        tracing::debug!(run_id = run.id(), "run started");
        Ok(run)
    }

    fn reserve(self: &Arc<Self>) -> Result<Slot, StartError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(StartError::ShuttingDown);
        }
        let limit = self.config.max_concurrent_runs;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| StartError::TooManyRuns(limit))?;
        Ok(Slot {
            hub: Arc::clone(self),
        })
    }

    /// Cancels the runs of a conversation (before it is deleted).
    pub fn cancel_conversation(&self, conversation_id: &str) {
        for run in lock(&self.runs).values() {
            if run.conversation_id() == conversation_id {
                run.cancel(CancelReason::Requested);
            }
        }
    }

    /// Stops accepting runs, lets running ones finish until `deadline`, then
    /// interrupts the rest (their partial answers are stored as `interrupted`).
    pub async fn drain(&self, timeout: Duration) {
        self.accepting.store(false, Ordering::Release);
        let running = self.active_runs();
        if running > 0 {
            tracing::info!(running, ?timeout, "draining runs");
        }
        if tokio::time::timeout(timeout, self.wait_idle())
            .await
            .is_err()
        {
            let runs: Vec<_> = lock(&self.runs).values().cloned().collect();
            let mut interrupted = 0;
            for run in runs.iter().filter(|run| !run.is_finished()) {
                run.cancel(CancelReason::Shutdown);
                interrupted += 1;
            }
            tracing::warn!(interrupted, "drain timeout reached; interrupting runs");
            // Producers stop at their next await; give them a moment to store.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.wait_idle()).await;
        }
        self.stop_maintenance.cancel();
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active_runs() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Writes the new text of every running answer that changed.
    async fn flush(&self) {
        let runs: Vec<_> = lock(&self.runs).values().cloned().collect();
        let mut answers = Vec::new();
        let mut flushed = Vec::new();
        for run in runs {
            if let Some((position, text)) = run.unflushed() {
                flushed.push((Arc::clone(&run), position + text.len()));
                answers.push(PartialAnswer {
                    message_id: run.message_id().to_owned(),
                    position,
                    text,
                });
            }
        }
        if answers.is_empty() {
            return;
        }
        match self.store.flush_partial(answers).await {
            Ok(()) => {
                for (run, len) in flushed {
                    run.mark_flushed(len);
                }
            }
            Err(error) => tracing::warn!(%error, "flushing partial answers failed; will retry"),
        }
    }

    /// Forgets runs finished longer ago than the retention period, and cancels runs
    /// idle longer than the grace period.
    fn expire(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let runs = lock(&self.runs);
            for run in runs.values() {
                match run.finished_at() {
                    Some(at) if now.duration_since(at) >= self.config.retention => {
                        expired.push(run.id().to_owned());
                    }
                    Some(_) => {}
                    None => {
                        let idle_for = run.idle_since().map(|since| now.duration_since(since));
                        if let (Some(grace), Some(idle_for)) =
                            (self.config.cancel_after_idle, idle_for)
                            && idle_for >= grace
                            && run.cancel_reason().is_none()
                        {
                            tracing::info!(
                                run_id = run.id(),
                                "no subscriber for {grace:?}; cancelling"
                            );
                            run.cancel(CancelReason::Idle);
                        }
                    }
                }
            }
        }
        if expired.is_empty() {
            return;
        }
        let mut runs = lock(&self.runs);
        for id in &expired {
            runs.remove(id);
        }
        drop(runs);
        lock(&self.keys).retain(|_, entry| {
            entry
                .run
                .get()
                .is_none_or(|run| !expired.iter().any(|id| id == run.id()))
        });
    }

    fn tick(&self) -> Duration {
        let mut tick = Duration::from_secs(1).min(self.config.retention / 4);
        if let Some(grace) = self.config.cancel_after_idle {
            tick = tick.min(grace / 4);
        }
        tick.max(Duration::from_millis(10))
    }
}

impl EventSink for Run {
    fn emit(&self, event: ChatEvent) {
        self.append(event);
    }
}

/// The producer of one run: the pipeline, then the stored answer, then `done`.
async fn produce(hub: Arc<Hub>, run: Arc<Run>, job: AnswerJob, slot: Slot) {
    let outcome = AssertUnwindSafe(pipeline::answer(job, run.as_ref(), run.cancel_token()))
        .catch_unwind()
        .await;
    let (status, model, usage, error) = match outcome {
        Ok(outcome) => {
            let status = match outcome.ending {
                Ending::Complete => MessageStatus::Complete,
                Ending::Failed => MessageStatus::Failed,
                Ending::Stopped => run
                    .cancel_reason()
                    .map_or(MessageStatus::Cancelled, CancelReason::status),
            };
            (
                status,
                Some(outcome.model),
                Some(outcome.usage),
                outcome.error.map(|e| (e.code, e.error)),
            )
        }
        Err(_) => {
            tracing::error!(run_id = run.id(), "the pipeline panicked");
            let message = "the answer pipeline failed unexpectedly";
            run.append(ChatEvent::error("internal_error", message, true));
            (
                MessageStatus::Failed,
                None,
                None,
                Some(("internal_error".to_owned(), message.to_owned())),
            )
        }
    };
    // Store first: a client that sees `done` and reloads the conversation finds the
    // final answer.
    let finished = FinishedMessage {
        message_id: run.message_id().to_owned(),
        content: run.content(),
        status,
        model,
        usage,
        error,
    };
    if let Err(error) = hub.store.finish_message(finished).await {
        tracing::error!(run_id = run.id(), %error, "storing the answer failed");
    }
    run.append(ChatEvent::done(status));
    tracing::debug!(run_id = run.id(), %status, "run finished");
    drop(slot);
}

async fn flush_loop(hub: Arc<Hub>) {
    let mut ticks = tokio::time::interval(hub.config.flush_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = hub.stop_maintenance.cancelled() => return,
            _ = ticks.tick() => hub.flush().await,
        }
    }
}

async fn expiry_loop(hub: Arc<Hub>) {
    let mut ticks = tokio::time::interval(hub.tick());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = hub.stop_maintenance.cancelled() => return,
            _ = ticks.tick() => hub.expire(Instant::now()),
        }
    }
}
