//! tidewire: a streaming gateway for AI chat.
//!
//! A client posts a message; tidewire runs the answer pipeline and streams every step
//! as Server-Sent Events while it stores the conversation. Runs live independently of
//! connections: any client can re-attach with `Last-Event-ID` and get exactly the
//! events it missed. See `DESIGN.md` for the layers.
//!
//! The `tidewire` binary lives in the `tidewire-cli` crate and is thin: [`run`] serves
//! on a listener until a shutdown future resolves, and [`app`] builds the router, so
//! tests start the same server.

pub mod api;
pub mod auth;
pub mod config;
pub mod hub;
pub mod llm;
pub mod metrics;
pub mod pipeline;
pub mod retrieval;
pub mod store;
pub mod text;
pub mod tools;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::AppState;
pub use config::Config;

use crate::config::ExposeSecret;
use crate::hub::{Cluster, ClusterConfig, Hub, HubConfig, LogError, RedisLog};
use crate::llm::Backends;
use crate::pipeline::{HistoryLimits, Pipeline, PipelineSettings, Stages};
use crate::store::{PostgresStore, SqliteStore, Store, StoreError};

/// After the drain, how long connections get to close before the server stops
/// waiting for them.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shared run log could not be reached.
    #[error("cannot reach the run log's Redis: {0}")]
    RunLog(#[from] LogError),
    /// The documents' index could not be opened.
    #[error(transparent)]
    Documents(#[from] retrieval::LibraryError),
    /// A model backend could not be set up.
    #[error("cannot set up the model backends: {0}")]
    Backend(String),
    /// The tools cannot be set up.
    #[error("cannot set up the tools: {0}")]
    Tools(String),
    /// The authentication settings cannot be used.
    #[error("{0}")]
    Auth(String),
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the store (marking answers a crash left `streaming` as `interrupted`) and
/// builds the state the handlers share.
pub async fn open(config: Config) -> Result<AppState, ServeError> {
    let store: Arc<dyn Store> = match &config.postgres_url {
        Some(url) => Arc::new(
            PostgresStore::connect(
                url.expose_secret(),
                config.cluster.postgres_schema.as_deref(),
            )
            .await?,
        ),
        None => Arc::new(SqliteStore::open(&config.data_dir).await?),
    };
    let cluster = match &config.redis_url {
        Some(url) => {
            let log = RedisLog::connect(
                url.expose_secret(),
                &config.cluster.redis_prefix,
                config.retention,
            )
            .await?;
            let node_id = config.cluster.node_id.clone().unwrap_or_else(node_name);
            tracing::info!(node_id, "sharing runs through Redis");
            Some(Arc::new(Cluster::new(
                log,
                ClusterConfig {
                    node_id,
                    lease: config.cluster.lease,
                },
            )))
        }
        None => None,
    };
    if cluster.is_none() {
        // Alone, no run can be live at start. Among nodes, other nodes' runs are;
        // answers no node holds are found by the cluster's sweep instead.
        let interrupted = store.interrupt_streaming().await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "answers left streaming by an earlier stop are now interrupted"
            );
        }
    }
    let metrics = metrics::Metrics::new(config.metrics.enabled);
    let backends = Backends::from_config(&config)
        .map_err(|error| ServeError::Backend(error.to_string()))?
        .with_metrics(Arc::clone(&metrics));
    tracing::info!(default = backends.default_name(), "model backends ready");
    let documents = retrieval::Library::open(
        &config.data_dir,
        Arc::clone(&store),
        retrieval::LibrarySettings::from(&config.documents),
    )
    .await?;
    let stages = &config.pipeline;
    let tools = tools::Toolbox::from_config(
        &config.tools,
        Arc::clone(&documents) as Arc<dyn retrieval::Retriever>,
    )
    .map_err(|error| ServeError::Tools(error.to_string()))?;
    let tools = Arc::new(tools);
    let pipeline = Pipeline::new(
        backends,
        Arc::clone(&store),
        Arc::clone(&documents) as Arc<dyn retrieval::Retriever>,
        Arc::clone(&tools),
        metrics,
        PipelineSettings {
            stages: Stages {
                query_analysis: stages.query_analysis,
                retrieval: stages.retrieval,
                generation: stages.generation,
                scoring: stages.scoring,
                follow_ups: stages.follow_ups,
            },
            top_k: stages.top_k,
            max_source_chars: stages.max_source_chars,
            side_timeout: stages.side_timeout,
            system_prompt: config.llm.system_prompt.clone(),
            history: HistoryLimits {
                messages: config.llm.history_messages,
                chars: config.llm.history_chars,
            },
            default_max_tokens: config.default_max_tokens,
            max_tokens_limit: config.max_tokens_limit,
            default_tokens_per_second: config.default_tokens_per_second,
        },
    );
    let hub = Hub::clustered(
        HubConfig {
            max_concurrent_runs: config.max_concurrent_runs,
            retention: config.retention,
            max_finished_runs: config.max_finished_runs,
            max_finished_bytes: config.max_finished_bytes,
            max_run_bytes: config.max_run_bytes,
            cancel_after_idle: config.cancel_after_idle,
            flush_interval: config.flush_interval,
        },
        Arc::clone(&store),
        Arc::new(pipeline),
        cluster,
    );
    let mut auth = auth::Auth::new(&config.auth, Arc::clone(&store))
        .map_err(|error| ServeError::Auth(error.to_string()))?;
    if let Some(cluster) = hub.cluster()
        && auth.streams.is_enabled()
    {
        // An events_url minted by one node must open its run on every node.
        match cluster.shared_secret("events_url").await? {
            Some(secret) => auth.streams.share_secret(secret),
            None => tracing::error!("no randomness for the cluster's events_url secret"),
        }
    }
    let limits = auth::Limits::new(&config.auth);
    Ok(AppState {
        hub,
        store,
        documents,
        config: Arc::new(config),
        auth: Arc::new(auth),
        limits: Arc::new(limits),
    })
}

/// A node's default name: its host's name and its process id.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", std::process::id())
}

/// Listens with room for a burst of connections; `tidewire serve` uses it.
pub use tidewire_http::listen;

/// The router of the whole server.
pub fn app(state: AppState) -> Router {
    api::router(state)
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting, lets runs
/// finish up to the drain timeout, interrupts the rest (stored), and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = open(config).await?;
    serve(listener, state, shutdown).await
}

/// [`run`] with a state already open.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let hub = Arc::clone(&state.hub);
    let documents = Arc::clone(&state.documents);
    let tools = Arc::clone(state.hub.pipeline().tools());
    let drain_timeout = state.config.drain_timeout;
    let stop_accepting = CancellationToken::new();
    tracing::info!("tidewire listening on http://{}", listener.local_addr()?);
    // Not hyper's HTTP/1: tidewire-http holds no buffer while a stream waits,
    // which is most of what an idle stream costs (see its crate docs).
    let mut server = tokio::spawn(tidewire_http::serve(
        listener,
        app(state),
        stop_accepting.clone().cancelled_owned(),
    ));
    tokio::select! {
        () = shutdown => {}
        result = &mut server => {
            return match result {
                Ok(result) => result.map_err(ServeError::from),
                Err(join) => Err(ServeError::Io(std::io::Error::other(join))),
            };
        }
    }
    tracing::info!("shutting down");
    stop_accepting.cancel();
    // Every stream ends with its run's `done`; once runs are drained, connections close.
    hub.drain(drain_timeout).await;
    // Seeding may still run; it must not hold the data directory past the stop.
    documents.close().await;
    // Started MCP servers stop with the server.
    tools.close().await;
    match tokio::time::timeout(CLOSE_GRACE, &mut server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => return Err(ServeError::Io(std::io::Error::other(join))),
        Err(_) => {
            tracing::warn!("connections still open after the drain; closing them");
            server.abort();
        }
    }
    tracing::info!("stopped");
    Ok(())
}
