//! Prometheus metrics: what an operator watches (time to first token, open
//! streams, resumes, cancels, upstream and tool failures), served at `/metrics`.
//!
//! One [`Metrics`] per server, with its own registry (`prometheus-client`, the
//! Prometheus project's Rust client): no global state, so two servers in one
//! process (the tests) count apart. Labels are bounded by construction: route
//! templates, configured backend and tool names, status and error codes; never an
//! id. Values that exist anyway (active runs, subscribers, log memory) are read at
//! scrape time instead of being kept up to date on the hot path.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod batch;

pub use batch::{BATCH, BatchedHistogram, HistogramBatch};

macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($field:ident),+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
        pub struct $name {
            $(#[allow(missing_docs)] pub $field: String,)+
        }
    };
}

label_set!(
    /// `backend`.
    BackendLabel { backend }
);
label_set!(
    /// `status`.
    StatusLabel { status }
);
label_set!(
    /// `cause`.
    CauseLabel { cause }
);
label_set!(
    /// `backend`, `code`.
    UpstreamLabel { backend, code }
);
label_set!(
    /// `tool`, `outcome`.
    ToolLabel { tool, outcome }
);
label_set!(
    /// `reason`.
    ReasonLabel { reason }
);
label_set!(
    /// `limit`.
    LimitLabel { limit }
);
label_set!(
    /// `format`.
    FormatLabel { format }
);
label_set!(
    /// `route`, `method`, `status`.
    RequestLabel { route, method, status }
);

/// Every metric of a server.
pub struct Metrics {
    enabled: bool,
    registry: Registry,
    /// Time from the start of a run to its first token, by backend.
    pub time_to_first_token: Family<BackendLabel, Histogram>,
    /// Time between two tokens of an answer.
    pub token_gap: BatchedHistogram,
    /// How long runs took, by how they ended.
    pub run_duration: Family<StatusLabel, Histogram>,
    /// How long a resumed stream took to send what it had missed.
    pub resume_catch_up: Histogram,
    /// Latency of the routes that do not stream.
    pub request_duration: Family<RequestLabel, Histogram>,
    /// Runs started.
    pub runs_started: Counter,
    /// Runs ended, by status.
    pub runs_finished: Family<StatusLabel, Counter>,
    /// Streams resumed with `Last-Event-ID`.
    pub resumes: Counter,
    /// Events sent again to resumed streams.
    pub resumed_events: Counter,
    /// Runs stopped before their end, by cause.
    pub cancels: Family<CauseLabel, Counter>,
    /// Model server failures, by backend and error code.
    pub upstream_errors: Family<UpstreamLabel, Counter>,
    /// Attempts of a model server again after a failure before the first token.
    pub upstream_retries: Family<BackendLabel, Counter>,
    /// Answers handed to the next backend of the fallback list.
    pub upstream_fallbacks: Family<BackendLabel, Counter>,
    /// Tool calls, by tool and outcome (`ok` or the error code).
    pub tool_calls: Family<ToolLabel, Counter>,
    /// Requests refused as unauthenticated, by reason.
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Requests refused by a per-user limit.
    pub rate_limited: Family<LimitLabel, Counter>,
    /// Bytes written to streams.
    pub stream_bytes: Counter,
    /// Events written to streams.
    pub stream_events: Counter,
    /// Streams open now, by wire format (native, each front end's, OpenAI's).
    pub open_streams: Family<FormatLabel, Gauge>,
    /// Runs generating now (set at scrape time).
    pub active_runs: Gauge,
    /// Subscribers following runs now (set at scrape time).
    pub subscribers: Gauge,
    /// Bytes held by run logs, running and retained (set at scrape time).
    pub log_bytes: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Latency buckets from 1 ms to about 65 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// The metrics of a server; `enabled = false` records nothing (for measuring
    /// what recording costs) and `/metrics` is not served.
    pub fn new(enabled: bool) -> Arc<Self> {
        let mut registry = Registry::with_prefix("tidewire");
        let metrics = Self {
            enabled,
            time_to_first_token: Family::new_with_constructor(latency),
            token_gap: BatchedHistogram::doubling(0.0001, 18),
            run_duration: Family::new_with_constructor(latency),
            resume_catch_up: latency(),
            request_duration: Family::new_with_constructor(latency),
            runs_started: Counter::default(),
            runs_finished: Family::default(),
            resumes: Counter::default(),
            resumed_events: Counter::default(),
            cancels: Family::default(),
            upstream_errors: Family::default(),
            upstream_retries: Family::default(),
            upstream_fallbacks: Family::default(),
            tool_calls: Family::default(),
            auth_failures: Family::default(),
            rate_limited: Family::default(),
            stream_bytes: Counter::default(),
            stream_events: Counter::default(),
            open_streams: Family::default(),
            active_runs: Gauge::default(),
            subscribers: Gauge::default(),
            log_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        let Self {
            time_to_first_token,
            token_gap,
            run_duration,
            resume_catch_up,
            request_duration,
            runs_started,
            runs_finished,
            resumes,
            resumed_events,
            cancels,
            upstream_errors,
            upstream_retries,
            upstream_fallbacks,
            tool_calls,
            auth_failures,
            rate_limited,
            stream_bytes,
            stream_events,
            open_streams,
            active_runs,
            subscribers,
            log_bytes,
            ..
        } = &metrics;
        let r = &mut registry;
        r.register(
            "time_to_first_token_seconds",
            "Time from the start of a run to its first token",
            time_to_first_token.clone(),
        );
        r.register(
            "token_gap_seconds",
            "Time between two tokens of an answer",
            token_gap.clone(),
        );
        r.register(
            "run_duration_seconds",
            "How long runs took, by how they ended",
            run_duration.clone(),
        );
        r.register(
            "resume_catch_up_seconds",
            "How long a resumed stream took to send the events it had missed",
            resume_catch_up.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Latency of the routes that do not stream",
            request_duration.clone(),
        );
        r.register("runs_started", "Runs started", runs_started.clone());
        r.register(
            "runs_finished",
            "Runs ended, by status",
            runs_finished.clone(),
        );
        r.register(
            "resumes",
            "Streams resumed with Last-Event-ID",
            resumes.clone(),
        );
        r.register(
            "resumed_events",
            "Events sent again to resumed streams",
            resumed_events.clone(),
        );
        r.register(
            "cancels",
            "Runs stopped before their end, by cause",
            cancels.clone(),
        );
        r.register(
            "upstream_errors",
            "Model server failures, by backend and code",
            upstream_errors.clone(),
        );
        r.register(
            "upstream_retries",
            "Model server attempts again after a failure",
            upstream_retries.clone(),
        );
        r.register(
            "upstream_fallbacks",
            "Answers handed to the next backend",
            upstream_fallbacks.clone(),
        );
        r.register(
            "tool_calls",
            "Tool calls, by tool and outcome",
            tool_calls.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused as unauthenticated, by reason",
            auth_failures.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by a per-user limit",
            rate_limited.clone(),
        );
        r.register(
            "stream_bytes",
            "Bytes written to streams",
            stream_bytes.clone(),
        );
        r.register(
            "stream_events",
            "Events written to streams",
            stream_events.clone(),
        );
        r.register(
            "open_streams",
            "Streams open now, by wire format",
            open_streams.clone(),
        );
        r.register("active_runs", "Runs generating now", active_runs.clone());
        r.register(
            "subscribers",
            "Subscribers following runs now",
            subscribers.clone(),
        );
        r.register("log_bytes", "Bytes held by run logs", log_bytes.clone());
        let mut metrics = metrics;
        metrics.registry = registry;
        Arc::new(metrics)
    }

    /// Whether metrics are recorded and served.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The metrics in Prometheus' text format (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "encoding the metrics failed");
        }
        out
    }

    /// Adds 1 to `family`'s counter of `labels`, when enabled.
    pub fn count<L>(&self, family: &Family<L, Counter>, labels: L)
    where
        L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    {
        if self.enabled {
            family.get_or_create(&labels).inc();
        }
    }

    /// Adds `n` to `counter`, when enabled.
    pub fn add(&self, counter: &Counter<u64, AtomicU64>, n: u64) {
        if self.enabled {
            counter.inc_by(n);
        }
    }

    /// A batch of observations for `histogram`, when enabled.
    pub fn batch<'h>(&self, histogram: &'h BatchedHistogram) -> Option<HistogramBatch<'h>> {
        self.enabled.then(|| histogram.batch())
    }

    /// Records `duration` in `family`'s histogram of `labels`, when enabled.
    pub fn observe_in<L>(&self, family: &Family<L, Histogram>, labels: L, duration: Duration)
    where
        L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    {
        if self.enabled {
            family
                .get_or_create(&labels)
                .observe(duration.as_secs_f64());
        }
    }
}
