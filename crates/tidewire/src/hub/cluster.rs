//! The hub across nodes, over the shared log of [`redis_log`](super::redis_log).
//!
//! A node copies the runs it produces to the shared log and holds a lease on each
//! while it lives; a node asked for a run it does not have follows the run's stream
//! into a local mirror, which its subscribers read exactly as they read a local run.
//! Cancels travel to the producing node. A node that dies stops renewing its
//! leases: another node then ends its runs as `interrupted` (an `error` and `done`
//! in the log, so every subscriber's stream ends) and stores the partial answers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tidewire_protocol::{Answer, ChatEvent, MessageStatus};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::redis_log::{FORGET, LogError, RedisLog};
use super::run::{CancelReason, Run};
use super::{Hub, finished_message, lock};
use crate::store::{Store, Timestamp, now_millis};

/// A mirror nobody has read for this long stops following its run.
const MIRROR_IDLE: Duration = Duration::from_secs(30);

/// The longest wait between attempts at reaching Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The settings of a node among others.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name, in logs and reap claims.
    pub node_id: String,
    /// How long a run stays live without its node renewing it; a node renews its
    /// runs every third of it.
    pub lease: Duration,
}

/// This node's part in the cluster.
#[derive(Debug)]
pub struct Cluster {
    log: RedisLog,
    config: ClusterConfig,
    /// Runs this node copies to the log (running, or finished but not yet copied
    /// whole): the leases it renews.
    producing: Mutex<HashSet<String>>,
    /// The cluster's secrets this node uses (name, hex), proposed again at every
    /// renewal so a Redis that lost them gets the same ones back.
    secrets: Mutex<Vec<(String, String)>>,
}

impl Cluster {
    /// This node's part, over `log`.
    pub fn new(log: RedisLog, config: ClusterConfig) -> Self {
        Self {
            log,
            config,
            producing: Mutex::new(HashSet::new()),
            secrets: Mutex::new(Vec::new()),
        }
    }

    /// A secret every node shares (32 bytes), made by the first node that asks;
    /// `None` when this machine has no randomness or the value is not one.
    pub async fn shared_secret(&self, name: &str) -> Result<Option<[u8; 32]>, LogError> {
        let mut mine = [0u8; 32];
        if getrandom::fill(&mut mine).is_err() {
            return Ok(None);
        }
        let proposal: String = mine.iter().map(|byte| format!("{byte:02x}")).collect();
        let held = self.log.shared_secret(name, &proposal).await?;
        let mut secret = [0u8; 32];
        for (at, byte) in secret.iter_mut().enumerate() {
            let pair = held.get(at * 2..at * 2 + 2);
            match pair.and_then(|pair| u8::from_str_radix(pair, 16).ok()) {
                Some(value) => *byte = value,
                None => return Ok(None),
            }
        }
        lock(&self.secrets).push((name.to_owned(), held));
        Ok(Some(secret))
    }

    /// The shared log.
    pub fn log(&self) -> &RedisLog {
        &self.log
    }

    /// The node's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    fn lease_end(&self) -> i64 {
        now_millis().saturating_add(i64::try_from(self.config.lease.as_millis()).unwrap_or(0))
    }

    /// Makes a run started here visible to every node: its first event (with its
    /// identity) in the log, and its lease. Fails when Redis cannot be reached; the
    /// run must not start then, as no other node could find it.
    pub async fn publish(&self, run: &Run) -> Result<(), LogError> {
        lock(&self.producing).insert(run.id().to_owned());
        let published = async {
            self.log
                .append(run.identity(), 1, &run.events_from(0, 1))
                .await?;
            self.log
                .renew(&[run.id().to_owned()], self.lease_end())
                .await
        }
        .await;
        if published.is_err() {
            lock(&self.producing).remove(run.id());
        }
        published.map(drop)
    }

    /// Copies a run's events to the log as they come, in batches of whatever
    /// arrived during the previous write, until `done` is there; then gives up the
    /// lease. A failing Redis is retried (the events wait in the run), and a Redis
    /// that lost the stream gets it again from the start.
    pub async fn replicate(self: Arc<Self>, run: Arc<Run>) {
        let mut sent = 1;
        let mut backoff = Duration::from_millis(50);
        let mut failing = false;
        loop {
            run.grown_past(sent).await;
            if run.is_forgotten() {
                break;
            }
            let events = run.events_from(sent, usize::MAX);
            if events.is_empty() {
                if run.is_finished() {
                    break;
                }
                continue;
            }
            match self
                .log
                .append(run.identity(), sent as u64 + 1, &events)
                .await
            {
                // Deleted with its conversation: it stays out of the log.
                Ok(None) => break,
                Ok(Some(last)) => {
                    if failing {
                        tracing::info!(run_id = run.id(), "the shared log is reachable again");
                        failing = false;
                    }
                    sent = usize::try_from(last).unwrap_or(usize::MAX);
                    backoff = Duration::from_millis(50);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(run_id = run.id(), %error, "copying the run to the shared log failed; retrying");
                        failing = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        lock(&self.producing).remove(run.id());
        for _ in 0..5 {
            match self.log.retire(run.id()).await {
                Ok(()) => return,
                Err(_) => tokio::time::sleep(MAX_BACKOFF).await,
            }
        }
    }

    /// Asks the node producing `run_id` to stop it.
    pub async fn request_cancel(&self, run_id: &str) -> Result<(), LogError> {
        self.log.request_cancel(run_id).await
    }

    /// Follows a run another node produces into `mirror`, until its `done` (or
    /// until nobody reads it for a while). A run whose node stopped renewing its
    /// lease without finishing it is reaped from here.
    pub async fn follow(self: Arc<Self>, hub: Weak<Hub>, mirror: Arc<Run>) {
        let run_id = mirror.id().to_owned();
        let mut last = mirror.len() as u64;
        let mut reader = None;
        let mut backoff = Duration::from_millis(50);
        let mut dead_since: Option<Instant> = None;
        while !mirror.is_finished() {
            let conn = match reader.as_mut() {
                Some(conn) => conn,
                None => match self.log.reader().await {
                    Ok(conn) => reader.insert(conn),
                    Err(error) => {
                        tracing::debug!(run_id, %error, "cannot reach the shared log; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            match self.log.read_after(conn, &run_id, last).await {
                Ok(events) if !events.is_empty() => {
                    backoff = Duration::from_millis(50);
                    dead_since = None;
                    for (seq, event) in events {
                        // A stream Redis lost and its node wrote again starts over:
                        // what this mirror has already is skipped.
                        if seq == last + 1 {
                            mirror.append(event);
                            last = seq;
                        }
                    }
                }
                Ok(_) => {
                    let idle = mirror
                        .idle_since()
                        .is_some_and(|since| since.elapsed() >= MIRROR_IDLE);
                    if idle {
                        if let Some(hub) = hub.upgrade() {
                            hub.forget_mirror(&mirror);
                        }
                        return;
                    }
                    if self.log.is_live(&run_id).await.unwrap_or(true) {
                        dead_since = None;
                    } else if dead_since.get_or_insert_with(Instant::now).elapsed()
                        >= self.config.lease * 2
                    {
                        let Some(hub) = hub.upgrade() else { return };
                        if !self.reap(hub.store().as_ref(), &run_id).await {
                            // Nothing left in the log to end: end the mirror here.
                            for event in node_lost() {
                                mirror.append(event);
                            }
                        }
                        dead_since = None;
                    }
                }
                Err(error) => {
                    tracing::debug!(run_id, %error, "reading the shared log failed; retrying");
                    reader = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Some(hub) = hub.upgrade() {
            hub.retain(&mirror, None);
        }
    }

    /// Ends a run whose node died: `error` and `done` `interrupted` in the log,
    /// and the answer as the log has it in the store. Returns `false` when the log
    /// has no such run (the store's answer is interrupted with its flushed text).
    async fn reap(&self, store: &dyn Store, run_id: &str) -> bool {
        match self
            .log
            .claim_reap(run_id, &self.config.node_id, self.config.lease)
            .await
        {
            Ok(true) => {}
            // Another node reaps it, or Redis is away: try again later.
            Ok(false) | Err(_) => return true,
        }
        let (identity, events) = match (
            self.log.identity(run_id).await,
            self.log.events(run_id).await,
        ) {
            (Ok(Some(identity)), Ok(events)) => (identity, events),
            (Ok(None), _) => {
                if let Err(error) = store.interrupt_runs(vec![run_id.to_owned()]).await {
                    tracing::warn!(run_id, %error, "marking the answer interrupted failed");
                }
                let _ = self.log.retire(run_id).await;
                return false;
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(run_id, %error, "reading the log of a dead node's run failed");
                return true;
            }
        };
        if matches!(events.last(), Some(ChatEvent::Done(_))) {
            let _ = self.log.retire(run_id).await;
            return true;
        }
        tracing::warn!(
            run_id,
            events = events.len(),
            "the node producing this run stopped; ending it as interrupted"
        );
        let ending = node_lost();
        let mut answer = Answer::default();
        for event in events.iter().chain(&ending) {
            answer.apply(event);
        }
        // Store first, as a producer does: a client that sees `done` and reloads
        // finds the answer as it ended.
        let message = finished_message(&identity.message_id, answer, MessageStatus::Interrupted);
        if let Err(error) = store.finish_message(message).await {
            tracing::warn!(run_id, %error, "storing a dead node's partial answer failed");
        }
        if let Err(error) = self
            .log
            .append(&identity, events.len() as u64 + 1, &ending)
            .await
        {
            tracing::warn!(run_id, %error, "ending a dead node's run in the log failed");
            return true;
        }
        let _ = self.log.retire(run_id).await;
        true
    }
}

/// The end of a run whose node died: `error` `node_lost`, then `done` `interrupted`.
fn node_lost() -> [ChatEvent; 2] {
    [
        ChatEvent::error(
            "node_lost",
            "the server producing this answer stopped; the answer is incomplete",
            true,
        ),
        ChatEvent::done(MessageStatus::Interrupted),
    ]
}

/// Renews the leases of the runs this node produces, and stops those another
/// node asked to cancel (whose message this node may have missed).
pub(super) async fn renew_loop(cluster: Arc<Cluster>, hub: Weak<Hub>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(cluster.config.lease / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let secrets = lock(&cluster.secrets).clone();
        for (name, value) in secrets {
            let _ = cluster.log.shared_secret(&name, &value).await;
        }
        let ids: Vec<String> = lock(&cluster.producing).iter().cloned().collect();
        match cluster.log.renew(&ids, cluster.lease_end()).await {
            Ok(cancelled) => {
                let Some(hub) = hub.upgrade() else { return };
                for run_id in cancelled {
                    if let Some(run) = hub.get(&run_id).filter(|run| !run.is_remote()) {
                        run.cancel(CancelReason::Requested);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, runs = ids.len(), "renewing leases failed"),
        }
    }
}

/// Stops the runs of this node that another node's clients cancel.
pub(super) async fn cancel_listener(
    cluster: Arc<Cluster>,
    hub: Weak<Hub>,
    stop: CancellationToken,
) {
    let channel = cluster.log.cancel_channel();
    loop {
        let listened = async {
            let mut pubsub = cluster.log.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let Some(hub) = hub.upgrade() else {
                    return Ok(());
                };
                if let Some(run_id) = payload.strip_prefix(FORGET) {
                    hub.forget_run(run_id);
                    continue;
                }
                let run_id = payload;
                if let Some(run) = hub.get(&run_id).filter(|run| !run.is_remote()) {
                    tracing::debug!(run_id, "cancelled from another node");
                    run.cancel(CancelReason::Requested);
                }
            }
            Ok::<_, redis::RedisError>(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            result = listened => {
                if let Err(error) = result {
                    tracing::debug!(%error, "listening for cancels failed; reconnecting");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Ends the runs of nodes that stopped renewing their leases, and marks answers
/// `interrupted` whose run is in no node's hands (a whole cluster that stopped,
/// or a Redis that lost its data as their node died).
pub(super) async fn reap_loop(cluster: Arc<Cluster>, hub: Weak<Hub>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(cluster.config.lease / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An answer is an orphan only if it was one at two sweeps a lease apart: a
    // Redis that restarted gets its leases back within a third of one.
    let mut suspects: HashSet<String> = HashSet::new();
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(hub) = hub.upgrade() else { return };
        match cluster.log.expired(now_millis()).await {
            Ok(expired) => {
                for run_id in expired {
                    if hub.get(&run_id).is_some_and(|run| !run.is_remote()) {
                        continue;
                    }
                    cluster.reap(hub.store().as_ref(), &run_id).await;
                }
            }
            Err(error) => tracing::debug!(%error, "looking for expired leases failed"),
        }
        if last_sweep.elapsed() >= cluster.config.lease * 2 {
            last_sweep = Instant::now();
            suspects = sweep(&cluster, &hub, suspects).await;
        }
    }
}

/// One sweep for orphaned answers: interrupts those suspected last time too, and
/// returns the new suspects.
async fn sweep(cluster: &Cluster, hub: &Hub, suspects: HashSet<String>) -> HashSet<String> {
    let streaming = match hub.store().streaming_runs().await {
        Ok(streaming) => streaming,
        Err(error) => {
            tracing::debug!(%error, "listing streaming answers failed");
            return suspects;
        }
    };
    let settled = Timestamp(
        now_millis() - i64::try_from((cluster.config.lease * 2).as_millis()).unwrap_or(0),
    );
    let mut now_suspected = HashSet::new();
    for (run_id, updated_at) in streaming {
        if updated_at > settled || hub.get(&run_id).is_some_and(|run| !run.is_remote()) {
            continue;
        }
        if let Ok(false) = cluster.log.is_live(&run_id).await {
            now_suspected.insert(run_id);
        }
    }
    let orphans: Vec<String> = now_suspected.intersection(&suspects).cloned().collect();
    if !orphans.is_empty() {
        tracing::warn!(
            count = orphans.len(),
            "answers whose run no node holds; marking them interrupted"
        );
        for run_id in &orphans {
            cluster.reap(hub.store().as_ref(), run_id).await;
        }
    }
    now_suspected
}
