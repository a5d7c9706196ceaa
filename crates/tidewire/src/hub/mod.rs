//! The hub owns runs: it starts them, finds them, cancels them, flushes their partial
//! answers to the store, forgets them after the retention period (or sooner, past
//! the memory limits), and drains them at shutdown.
//!
//! A run does not depend on any connection. Its producer is a task of its own (the
//! pipeline), and each HTTP stream is only a [`Subscription`] into its log. The hub
//! knows no HTTP: wire formats come in through [`WireFormat`].

pub mod cluster;
mod format;
pub mod redis_log;
mod run;

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use tidewire_protocol::{Answer, ChatEvent, MessageStatus, RunStarted};
use tokio::sync::{Notify, OnceCell};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CauseLabel, StatusLabel};
use crate::pipeline::{ConversationRef, Ending, EventSink, Pipeline, RunRequest};
use crate::store::{FinishedMessage, NewTurn, PartialAnswer, Store, StoreError, Turn, new_id};

pub use cluster::{Cluster, ClusterConfig};
pub use format::{EventEncoder, RunIdentity, WireFormat};
pub use redis_log::{LogError, RedisLog};
pub use run::{Batch, CancelReason, Run, Subscription};

/// After the failure is reported, how often and how long a finished answer is
/// still offered to the store.
const LATE_FINISH_EVERY: Duration = Duration::from_secs(5);
const LATE_FINISH_FOR: Duration = Duration::from_secs(600);

/// Attempts at storing a finished answer before the failure is reported.
const FINISH_ATTEMPTS: u32 = 6;
/// The wait before the second attempt; it doubles after each failure (about 3 s in
/// all).
const FINISH_BACKOFF: Duration = Duration::from_millis(100);

/// The hub's settings, taken from the configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Most runs generating at once.
    pub max_concurrent_runs: usize,
    /// How long finished runs stay attachable.
    pub retention: Duration,
    /// Most finished runs kept in memory; the oldest are forgotten first.
    pub max_finished_runs: usize,
    /// Most bytes of finished runs kept in memory; the oldest are forgotten first.
    pub max_finished_bytes: usize,
    /// The largest log of one run; a run over it fails.
    pub max_run_bytes: usize,
    /// Cancel runs with no subscriber for this long.
    pub cancel_after_idle: Option<Duration>,
    /// How often partial answers are written to the store.
    pub flush_interval: Duration,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Too many runs are generating.
    #[error("{0} {are} already generating; try again shortly", are = if *.0 == 1 { "run is" } else { "runs are" })]
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
    /// The shared run log cannot be reached: no other node could find the run.
    #[error("the shared run log is unreachable ({0}); try again shortly")]
    LogUnavailable(LogError),
    /// Starting failed unexpectedly (the start task panicked).
    #[error("starting the run failed unexpectedly")]
    Internal,
}

/// A run that was started or found.
#[derive(Debug, Clone)]
pub struct Started {
    /// The run.
    pub run: Arc<Run>,
    /// `false` when an idempotency key found a run started earlier.
    pub created: bool,
}

/// A digest of a request, stable across builds and machines, so nodes built apart
/// agree on whether a retried request is the same one.
type Fingerprint = [u8; 32];

fn fingerprint(request: &RunRequest) -> Fingerprint {
    // Serializing plain data into memory cannot fail; an empty digest input would
    // only make two requests look alike, and both would then be this same request.
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    Sha256::digest(&bytes).into()
}

struct KeyEntry {
    fingerprint: Fingerprint,
    run: OnceCell<Arc<Run>>,
}

/// A finished run, in the order runs finished, for forgetting the oldest first.
struct FinishedRun {
    run_id: String,
    at: Instant,
    bytes: usize,
    key: Option<String>,
}

/// Finished runs still in memory, oldest first, and their total size.
#[derive(Default)]
struct Retained {
    runs: VecDeque<FinishedRun>,
    bytes: usize,
}

/// The registry of runs.
pub struct Hub {
    config: HubConfig,
    store: Arc<dyn Store>,
    pipeline: Arc<Pipeline>,
    runs: Mutex<HashMap<String, Arc<Run>>>,
    keys: Mutex<HashMap<String, Arc<KeyEntry>>>,
    retained: Mutex<Retained>,
    active: AtomicUsize,
    idle: Notify,
    accepting: AtomicBool,
    stop_maintenance: CancellationToken,
    /// The other nodes, when runs are shared through Redis.
    cluster: Option<Arc<Cluster>>,
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
    // Every critical section here is a map or queue update: no torn state to fear.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// A hub over `store` that answers with `pipeline`, with its background
    /// maintenance (flushes, expiry, idle cancel) started.
    pub fn new(config: HubConfig, store: Arc<dyn Store>, pipeline: Arc<Pipeline>) -> Arc<Self> {
        Self::clustered(config, store, pipeline, None)
    }

    /// [`Hub::new`], sharing its runs with other nodes through `cluster` when given.
    pub fn clustered(
        config: HubConfig,
        store: Arc<dyn Store>,
        pipeline: Arc<Pipeline>,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Self> {
        let hub = Arc::new(Self {
            config,
            store,
            pipeline,
            runs: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            retained: Mutex::new(Retained::default()),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            accepting: AtomicBool::new(true),
            stop_maintenance: CancellationToken::new(),
            cluster,
        });
        tokio::spawn(flush_loop(Arc::clone(&hub)));
        tokio::spawn(expiry_loop(Arc::clone(&hub)));
        if let Some(cluster) = &hub.cluster {
            let weak = Arc::downgrade(&hub);
            let stop = hub.stop_maintenance.clone();
            tokio::spawn(cluster::renew_loop(
                Arc::clone(cluster),
                Weak::clone(&weak),
                stop.clone(),
            ));
            tokio::spawn(cluster::cancel_listener(
                Arc::clone(cluster),
                Weak::clone(&weak),
                stop.clone(),
            ));
            tokio::spawn(cluster::reap_loop(Arc::clone(cluster), weak, stop));
        }
        hub
    }

    /// The cluster this node is part of, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// A run, found here or, among nodes, in the shared log (then followed here
    /// from now on, for every subscriber of this node).
    pub async fn find(self: &Arc<Self>, run_id: &str) -> Result<Option<Arc<Run>>, LogError> {
        if let Some(run) = self.get(run_id) {
            return Ok(Some(run));
        }
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let Some(identity) = cluster.log().identity(run_id).await? else {
            return Ok(None);
        };
        let mirror = {
            let mut runs = lock(&self.runs);
            if let Some(run) = runs.get(run_id) {
                return Ok(Some(Arc::clone(run)));
            }
            let mirror =
                Arc::new(Run::mirror(identity).with_metrics(Arc::clone(self.pipeline.metrics())));
            runs.insert(run_id.to_owned(), Arc::clone(&mirror));
            mirror
        };
        tokio::spawn(Arc::clone(cluster).follow(Arc::downgrade(self), Arc::clone(&mirror)));
        Ok(Some(mirror))
    }

    /// Asks a run to stop: here, or on the node producing it.
    pub async fn cancel(&self, run: &Run, reason: CancelReason) -> Result<(), LogError> {
        match &self.cluster {
            Some(cluster) if run.is_remote() => cluster.request_cancel(run.id()).await,
            _ => {
                run.cancel(reason);
                Ok(())
            }
        }
    }

    /// Forgets a mirror nobody reads any more.
    fn forget_mirror(&self, mirror: &Arc<Run>) {
        let mut runs = lock(&self.runs);
        if runs
            .get(mirror.id())
            .is_some_and(|run| Arc::ptr_eq(run, mirror))
        {
            runs.remove(mirror.id());
        }
    }

    /// The store runs write to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The pipeline runs answer with.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// A run in memory (running, or finished within the retention period).
    pub fn get(&self, run_id: &str) -> Option<Arc<Run>> {
        lock(&self.runs).get(run_id).cloned()
    }

    /// How many runs of `user_id` are running.
    pub fn running_of(&self, user_id: &str) -> usize {
        lock(&self.runs)
            .values()
            .filter(|run| {
                run.identity().user_id == user_id && !run.is_finished() && !run.is_remote()
            })
            .count()
    }

    /// The newest run of `conversation_id` that is still running, if any.
    pub fn running_in(&self, conversation_id: &str) -> Option<Arc<Run>> {
        lock(&self.runs)
            .values()
            .filter(|run| run.conversation_id() == conversation_id && !run.is_finished())
            // Run ids are time-ordered: the newest is the greatest.
            .max_by(|a, b| a.id().cmp(b.id()))
            .cloned()
    }

    /// How many runs are generating.
    pub fn active_runs(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// How many runs are in memory, running or finished.
    pub fn runs_in_memory(&self) -> usize {
        lock(&self.runs).len()
    }

    /// Starts a run: stores the turn, then spawns its producer. With an idempotency
    /// key already used for the same request, returns that run instead.
    ///
    /// Starting happens in a task of its own: a caller that goes away (a client
    /// that disconnects while its POST is being handled) cannot stop it halfway, so
    /// a stored turn always has its producer, and a retried request with the same
    /// key finds the run.
    pub async fn start(
        self: &Arc<Self>,
        request: RunRequest,
        key: Option<String>,
    ) -> Result<Started, StartError> {
        let hub = Arc::clone(self);
        // The run's log lines carry the request's span (its request id) too.
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move { hub.start_here(request, key).await },
            span,
        ))
        .await
        .unwrap_or_else(|join| {
            tracing::error!(error = %join, "starting a run panicked");
            Err(StartError::Internal)
        })
    }

    async fn start_here(
        self: &Arc<Self>,
        request: RunRequest,
        key: Option<String>,
    ) -> Result<Started, StartError> {
        let Some(key) = key else {
            let run = self.start_new(request, None, new_id()).await?;
            return Ok(Started { run, created: true });
        };
        let fingerprint = fingerprint(&request);
        if let Some(cluster) = &self.cluster {
            return self.start_shared(cluster, request, key, fingerprint).await;
        }
        let entry = {
            let mut keys = lock(&self.keys);
            Arc::clone(keys.entry(key.clone()).or_insert_with(|| {
                Arc::new(KeyEntry {
                    fingerprint,
                    run: OnceCell::new(),
                })
            }))
        };
        if entry.fingerprint != fingerprint {
            return Err(StartError::KeyReused);
        }
        let mut created = false;
        // Of concurrent requests with one key, exactly one starts the run; the others
        // wait for it and attach.
        let result = entry
            .run
            .get_or_try_init(|| async {
                created = true;
                self.start_new(request, Some(key.clone()), new_id()).await
            })
            .await;
        match result {
            Ok(run) => {
                if created {
                    tracing::debug!(run_id = run.id(), %key, "idempotent run started");
                }
                Ok(Started {
                    run: Arc::clone(run),
                    created,
                })
            }
            Err(error) => {
                let mut keys = lock(&self.keys);
                if keys.get(&key).is_some_and(|e| e.run.get().is_none()) {
                    keys.remove(&key);
                }
                Err(error)
            }
        }
    }

    /// Starts a run with an idempotency key that holds across nodes: the first
    /// request to claim it in the shared log starts the run; the others, on any
    /// node, attach to it.
    async fn start_shared(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        request: RunRequest,
        key: String,
        fingerprint: Fingerprint,
    ) -> Result<Started, StartError> {
        let hex: String = fingerprint.iter().map(|b| format!("{b:02x}")).collect();
        let run_id = new_id();
        // Kept as long as any node may hold the run, and longer than a run lasts.
        let ttl = self.config.retention + Duration::from_secs(3600);
        let claim = cluster
            .log()
            .claim_key(&key, &hex, &run_id, ttl)
            .await
            .map_err(StartError::LogUnavailable)?;
        match claim {
            redis_log::KeyClaim::Claimed => {
                match self.start_new(request, Some(key.clone()), run_id).await {
                    Ok(run) => Ok(Started { run, created: true }),
                    Err(error) => {
                        let _ = cluster.log().release_key(&key).await;
                        Err(error)
                    }
                }
            }
            redis_log::KeyClaim::Taken { fingerprint, .. } if fingerprint != hex => {
                Err(StartError::KeyReused)
            }
            redis_log::KeyClaim::Taken { run_id, .. } => {
                // The request that claimed the key may still be starting its run.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if let Some(run) = self
                        .find(&run_id)
                        .await
                        .map_err(StartError::LogUnavailable)?
                    {
                        return Ok(Started {
                            run,
                            created: false,
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(StartError::Internal);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn start_new(
        self: &Arc<Self>,
        request: RunRequest,
        key: Option<String>,
        run_id: String,
    ) -> Result<Arc<Run>, StartError> {
        let slot = self.reserve()?;
        let turn = self
            .store
            .start_turn(NewTurn {
                conversation_id: request.stored_conversation().map(str::to_owned),
                create_missing: matches!(request.conversation, ConversationRef::Named(_)),
                message: request.message.clone(),
                run_id: run_id.clone(),
                user_id: request.user.clone(),
            })
            .await?;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let run = Arc::new(
            Run::new(
                RunIdentity {
                    run_id,
                    conversation_id: turn.conversation_id.clone(),
                    message_id: turn.assistant_message_id.clone(),
                    created,
                    attributes: request.attributes.clone(),
                    user_id: request.user.clone(),
                },
                self.config.max_run_bytes,
            )
            .with_metrics(Arc::clone(self.pipeline.metrics())),
        );
        self.pipeline
            .metrics()
            .add(&self.pipeline.metrics().runs_started, 1);
        run.append(ChatEvent::Run(Box::new(RunStarted {
            run_id: run.id().to_owned(),
            conversation_id: turn.conversation_id.clone(),
            message_id: turn.assistant_message_id.clone(),
            // Where to attach is the api's business; its formats fill this in.
            events_url: String::new(),
        })));
        if let Some(cluster) = &self.cluster {
            if let Err(error) = cluster.publish(&run).await {
                tracing::warn!(run_id = run.id(), %error, "cannot publish the run to the shared log");
                // The turn is stored: its answer must not stay `streaming`.
                let mut answer = run.answer();
                answer.apply(&ChatEvent::error(
                    "run_log_unavailable",
                    "the shared run log could not be reached",
                    true,
                ));
                let _ = self
                    .store
                    .finish_message(finished_message(
                        run.message_id(),
                        answer,
                        MessageStatus::Failed,
                    ))
                    .await;
                return Err(StartError::LogUnavailable(error));
            }
            tokio::spawn(Arc::clone(cluster).replicate(Arc::clone(&run)));
        }
        lock(&self.runs).insert(run.id().to_owned(), Arc::clone(&run));
        let span = tracing::info_span!("run", run_id = run.id());
        tokio::spawn(tracing::Instrument::instrument(
            produce(
                Arc::clone(self),
                Arc::clone(&run),
                Box::new(Job { request, turn, key }),
                slot,
            ),
            span,
        ));
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

    /// Forgets runs on every node (their conversation is being deleted): out of
    /// the shared log, stopped where they are produced, dropped wherever held.
    pub async fn forget_everywhere(&self, run_ids: &[String]) -> Result<(), LogError> {
        for run_id in run_ids {
            self.forget_run(run_id);
        }
        match &self.cluster {
            Some(cluster) => cluster.log().forget(run_ids).await,
            None => Ok(()),
        }
    }

    /// Stops a run produced here and forgets it (or its mirror).
    fn forget_run(&self, run_id: &str) {
        let Some(run) = lock(&self.runs).remove(run_id) else {
            return;
        };
        run.forget();
        if !run.is_remote() {
            run.cancel(CancelReason::Requested);
        }
        lock(&self.keys)
            .retain(|_, entry| entry.run.get().is_none_or(|held| !Arc::ptr_eq(held, &run)));
    }

    /// Stops the runs of a conversation and forgets them (before the conversation is
    /// deleted): a deleted conversation's runs are gone on every route at once.
    pub fn forget_conversation(&self, conversation_id: &str) {
        let ids: Vec<String> = lock(&self.runs)
            .values()
            .filter(|run| run.conversation_id() == conversation_id)
            .map(|run| run.id().to_owned())
            .collect();
        for id in ids {
            self.forget_run(&id);
        }
    }

    /// Subscribers following runs now, and the bytes of every log in memory
    /// (read at scrape time).
    pub fn gauges(&self) -> (usize, usize) {
        let runs: Vec<Arc<Run>> = lock(&self.runs).values().cloned().collect();
        let subscribers = runs.iter().map(|run| run.subscribers()).sum();
        let bytes = runs.iter().map(|run| run.log_bytes()).sum();
        (subscribers, bytes)
    }

    /// Whether the hub stopped accepting runs (the server is shutting down).
    pub fn is_draining(&self) -> bool {
        !self.accepting.load(Ordering::Acquire)
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
            for run in runs
                .iter()
                .filter(|run| !run.is_finished() && !run.is_remote())
            {
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
        for run in runs.into_iter().filter(|run| !run.is_remote()) {
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

    /// Records a run that just finished, for [`Hub::expire`].
    fn retain(&self, run: &Run, key: Option<String>) {
        let bytes = run.retained_bytes();
        let mut retained = lock(&self.retained);
        retained.bytes += bytes;
        retained.runs.push_back(FinishedRun {
            run_id: run.id().to_owned(),
            at: Instant::now(),
            bytes,
            key,
        });
    }

    /// Forgets finished runs older than the retention period, then the oldest ones
    /// while more than the memory limits are kept (their answers stay stored), and
    /// cancels runs idle longer than the grace period.
    fn expire(&self, now: Instant) {
        let mut forgotten = Vec::new();
        {
            let mut retained = lock(&self.retained);
            while let Some(oldest) = retained.runs.front() {
                let expired = now.duration_since(oldest.at) >= self.config.retention;
                let over = retained.runs.len() > self.config.max_finished_runs
                    || retained.bytes > self.config.max_finished_bytes;
                if !expired && !over {
                    break;
                }
                if let Some(oldest) = retained.runs.pop_front() {
                    retained.bytes -= oldest.bytes;
                    forgotten.push(oldest);
                }
            }
        }
        if !forgotten.is_empty() {
            let mut runs = lock(&self.runs);
            for run in &forgotten {
                runs.remove(&run.run_id);
            }
            drop(runs);
            let mut keys = lock(&self.keys);
            for run in &forgotten {
                if let Some(key) = &run.key {
                    keys.remove(key);
                }
            }
        }
        if let Some(grace) = self.config.cancel_after_idle {
            for run in lock(&self.runs).values() {
                let idle_for = run.idle_since().map(|since| now.duration_since(since));
                if !run.is_finished()
                    && !run.is_remote()
                    && idle_for.is_some_and(|idle_for| idle_for >= grace)
                    && run.cancel_reason().is_none()
                {
                    tracing::info!(run_id = run.id(), "no subscriber for {grace:?}; cancelling");
                    run.cancel(CancelReason::Idle);
                }
            }
        }
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

/// What a producer works on.
struct Job {
    request: RunRequest,
    turn: Turn,
    key: Option<String>,
}

/// The producer of one run: the pipeline, then the stored answer, then `done`.
/// The job comes boxed: an async fn keeps its arguments twice (as given, and as
/// locals), and this future lives in every run's task for the whole answer.
async fn produce(hub: Arc<Hub>, run: Arc<Run>, job: Box<Job>, slot: Slot) {
    let started = Instant::now();
    let answered = hub
        .pipeline
        .answer(&job.request, &job.turn, run.as_ref(), run.cancel_token());
    let status = match AssertUnwindSafe(answered).catch_unwind().await {
        Ok(Ending::Complete) => MessageStatus::Complete,
        Ok(Ending::Failed) => MessageStatus::Failed,
        Ok(Ending::Stopped) => match run.cancel_reason() {
            Some(CancelReason::TooLarge) => {
                run.append(ChatEvent::error(
                    "answer_too_large",
                    format!(
                        "the answer reached the limit of {} bytes for one run",
                        hub.config.max_run_bytes
                    ),
                    false,
                ));
                MessageStatus::Failed
            }
            reason => reason.map_or(MessageStatus::Cancelled, CancelReason::status),
        },
        Err(_) => {
            tracing::error!(run_id = run.id(), "the pipeline panicked");
            run.append(ChatEvent::error(
                "internal_error",
                "the answer pipeline failed unexpectedly",
                true,
            ));
            MessageStatus::Failed
        }
    };
    let metrics = hub.pipeline.metrics();
    let status_label = StatusLabel {
        status: status.as_str().to_owned(),
    };
    metrics.count(&metrics.runs_finished, status_label.clone());
    metrics.observe_in(&metrics.run_duration, status_label, started.elapsed());
    if let Some(reason) = run.cancel_reason() {
        metrics.count(
            &metrics.cancels,
            CauseLabel {
                cause: reason.cause().to_owned(),
            },
        );
    }
    // Store first: a client that sees `done` and reloads the conversation finds the
    // final answer.
    let finished = finished_message(run.message_id(), run.answer(), status);
    if !store_finished(hub.store.as_ref(), &run, finished.clone()).await {
        run.append(ChatEvent::error(
            "answer_not_stored",
            "the answer could not be saved yet; the server keeps trying while it runs",
            true,
        ));
        // The database may be away for longer than the attempts above: the answer
        // is kept and written once it is back (the write is idempotent).
        let store = Arc::clone(&hub.store);
        let run_id = run.id().to_owned();
        tokio::spawn(async move {
            let deadline = Instant::now() + LATE_FINISH_FOR;
            while Instant::now() < deadline {
                tokio::time::sleep(LATE_FINISH_EVERY).await;
                match store.finish_message(finished.clone()).await {
                    Ok(_) => {
                        tracing::info!(run_id, "the answer was stored late");
                        return;
                    }
                    Err(StoreError::Closed) => return,
                    Err(_) => {}
                }
            }
            tracing::error!(
                run_id,
                "the answer could not be stored in {LATE_FINISH_FOR:?}; it is lost"
            );
        });
    }
    run.append(ChatEvent::done(status));
    hub.retain(&run, job.key);
    tracing::debug!(run_id = run.id(), %status, "run finished");
    drop(slot);
}

/// What the store keeps of an answer that ended with `status`.
fn finished_message(message_id: &str, answer: Answer, status: MessageStatus) -> FinishedMessage {
    FinishedMessage {
        message_id: message_id.to_owned(),
        content: answer.content,
        status,
        model: answer.model,
        usage: answer.usage,
        error: answer.error.map(|e| (e.code, e.error)),
        sources: answer.sources,
        quality_score: answer.quality_score,
        follow_up_questions: answer.follow_up_questions,
        tool_calls: answer.tool_calls,
    }
}

/// Stores a finished answer, retrying (the write is idempotent) with backoff while
/// the store fails. Returns whether it was stored; a failure that lasts is logged.
async fn store_finished(store: &dyn Store, run: &Run, message: FinishedMessage) -> bool {
    let mut backoff = FINISH_BACKOFF;
    for attempt in 1..=FINISH_ATTEMPTS {
        match store.finish_message(message.clone()).await {
            Ok(_) => return true,
            Err(StoreError::Closed) => {
                tracing::error!(
                    run_id = run.id(),
                    "the store closed before the answer was stored"
                );
                return false;
            }
            Err(error) if attempt < FINISH_ATTEMPTS => {
                tracing::warn!(run_id = run.id(), %error, attempt, "storing the answer failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(error) => {
                tracing::error!(run_id = run.id(), %error, attempts = FINISH_ATTEMPTS, "storing the answer failed; giving up");
            }
        }
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::RunOptions;

    #[test]
    fn fingerprints_are_sha256_of_the_request_and_stable_across_builds() {
        let request = RunRequest {
            conversation: ConversationRef::Existing("c1".into()),
            message: "hi".into(),
            scope: crate::retrieval::Scope::collection("default"),
            options: RunOptions {
                backend: None,
                max_tokens: Some(64),
                tokens_per_second: 30.0,
                sampling: Default::default(),
                tools: None,
                client_tools: None,
            },
            attributes: None,
            user: crate::store::LOCAL_USER.into(),
        };
        let hex: String = fingerprint(&request)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        // sha256 of {"conversation":{"existing":"c1"},"message":"hi","scope":
        // {"collection":"default","documents":null},"options":{"backend":null,
        // "max_tokens":64,"tokens_per_second":30.0}}, computed apart.
        assert_eq!(
            hex,
            "c971dce782e96ab192aca107fb4f09a849321a5ec848494a3d0d0cacf7eedb49"
        );
        let other = RunRequest {
            message: "hi!".into(),
            ..request.clone()
        };
        assert_ne!(fingerprint(&other), fingerprint(&request));
    }
}
