//! `tidewire serve`: the server, configured from a file, the environment and flags.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::{Serialize, Serializer};
use tidewire::config::figment::providers::Serialized;
use tidewire::config::{Config, ExposeSecret, LogFormat, Secret};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Shown after the options of `serve` and `config`.
pub const ENVIRONMENT_HELP: &str = "Every option but --config can also be set in the \
environment as TIDEWIRE_ and its name in capitals (TIDEWIRE_MAX_BODY_BYTES for \
--max-body-bytes), or in the TOML file under its name with underscores (max_body_bytes). \
Durations are written 15s, 250ms, 10m or a number of seconds; sizes 32768, 32KiB or 1MiB.";

/// Options of `tidewire serve` and `tidewire config`. Each flag set overrides the
/// file and the environment; the library reads both, and parses every value.
#[derive(Debug, Args, Serialize)]
pub struct ServeArgs {
    /// A TOML file with any of the options below (file < environment < flags).
    #[arg(long, env = "TIDEWIRE_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
    /// Directory of the SQLite database, created if missing [default: ./tidewire-data].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// Log filter, as RUST_LOG [default: info].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    /// Log lines as `text` or `json` (one object a line, for log collectors) [default: text].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
    /// Send spans to this OpenTelemetry collector (OTLP/HTTP traces URL); needs a
    /// build with the `otel` feature.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    otlp_endpoint: Option<String>,
    /// Keepalive comment interval on idle streams [default: 15s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalive: Option<String>,
    /// Reconnection delay suggested to clients with `retry:` [default: 1s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<String>,
    /// How long a finished run stays attachable [default: 10m].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    retention: Option<String>,
    /// How often a running answer is written to the store [default: 1s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    flush_interval: Option<String>,
    /// Cancel a run with no subscriber for this long; `off` to let it finish [default: off].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_after_idle: Option<String>,
    /// On shutdown, how long runs may take to finish [default: 30s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_timeout: Option<String>,
    /// Largest accepted message, in bytes (`32KiB` form accepted) [default: 32KiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_bytes: Option<String>,
    /// Largest accepted request body, in bytes [default: 256KiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_body_bytes: Option<String>,
    /// Most runs generating at once [default: 20000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_runs: Option<usize>,
    /// Most finished runs kept in memory for re-attaching [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_finished_runs: Option<usize>,
    /// Most bytes of finished runs kept in memory [default: 256MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_finished_bytes: Option<String>,
    /// Largest event log of one run; a run over it fails [default: 16MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_run_bytes: Option<String>,
    /// Largest accepted options.max_tokens [default: 8192].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens_limit: Option<u32>,
    /// options.max_tokens when a request gives none [default: none: a model answers up
    /// to its own limit, the synthetic backend 64 tokens].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    default_max_tokens: Option<u32>,
    /// Synthetic backend pace when a request gives none; 0 = as fast as possible [default: 30].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    default_tokens_per_second: Option<f64>,
    /// An OpenAI-compatible base URL (such as http://127.0.0.1:11434/v1); with it,
    /// requests go to that model by default.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_url: Option<String>,
    /// The model to ask for at --llm-url.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_model: Option<String>,
    /// The API key for --llm-url (never logged or shown).
    #[arg(long)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_to_the_config"
    )]
    llm_api_key: Option<Secret>,
    /// How long the --llm-url model may take to send its first token, per attempt
    /// (llm.attempts, 2 by default) [default: 60s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_first_token_timeout: Option<String>,
    /// The longest silence of the --llm-url model once it streams [default: 30s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_idle_timeout: Option<String>,
    /// The longest answer of the --llm-url model [default: 10m].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_total_timeout: Option<String>,
    /// Instructions sent first with every question.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    system_prompt: Option<String>,
    /// A Redis for the run log, shared by every node (redis://127.0.0.1:6379)
    /// [default: none: runs live in this process].
    #[arg(long)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_to_the_config"
    )]
    redis_url: Option<Secret>,
    /// A PostgreSQL for the store (postgres://user@127.0.0.1:5432/db) [default: none:
    /// SQLite in the data directory].
    #[arg(long)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_to_the_config"
    )]
    postgres_url: Option<Secret>,
}

/// Hands the key itself to the configuration (a `Secret` serializes as `<redacted>`).
fn expose_to_the_config<S: Serializer>(
    key: &Option<Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    key.as_ref()
        .map(|key| key.expose_secret())
        .serialize(serializer)
}

impl ServeArgs {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(
            self.config.as_deref(),
            Serialized::defaults(self),
        )?)
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let filter = EnvFilter::try_new(&config.log).with_context(|| {
        format!(
            "invalid log filter {:?} (set by log, TIDEWIRE_LOG or --log)",
            config.log
        )
    })?;
    let traces = Traces::start(config.otlp_endpoint.as_deref())?;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        // Each line has its spans' fields: the request id, the run id.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces.layer())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener =
            tidewire::listen(config.addr).map_err(|error| cannot_listen(config.addr, &error))?;
        tidewire::run(listener, config, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    traces.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// Why the server cannot listen, and how to choose another address: the first
/// start often finds the default port taken.
fn cannot_listen(addr: SocketAddr, error: &std::io::Error) -> anyhow::Error {
    let why = if error.kind() == std::io::ErrorKind::AddrInUse {
        "the address is already in use (another tidewire, or another server, listens there)"
            .to_owned()
    } else {
        error.to_string()
    };
    let mut other = addr;
    other.set_port(addr.port().wrapping_add(1).max(1));
    anyhow::anyhow!(
        "cannot listen on {addr}: {why}; choose another address with --addr or TIDEWIRE_ADDR \
         (addr in the config file), such as --addr {other}"
    )
}

/// Prints the effective configuration as TOML.
pub fn print_config(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    print!("{}", args.load()?.to_toml());
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}

/// Spans sent to an OpenTelemetry collector, when configured.
struct Traces {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Traces {
    /// Starts the export to `endpoint` (OTLP over HTTP, batched on a thread of its
    /// own); nothing without an endpoint.
    #[cfg(feature = "otel")]
    fn start(endpoint: Option<&str>) -> anyhow::Result<Self> {
        use opentelemetry_otlp::WithExportConfig;
        let Some(endpoint) = endpoint else {
            return Ok(Self { provider: None });
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("cannot set up the OTLP exporter for {endpoint}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("tidewire")
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Self {
            provider: Some(provider),
        })
    }

    #[cfg(not(feature = "otel"))]
    fn start(endpoint: Option<&str>) -> anyhow::Result<Self> {
        match endpoint {
            None => Ok(Self {}),
            Some(_) => anyhow::bail!(
                "otlp_endpoint is set, but this tidewire was built without OpenTelemetry: \
                 install it with `cargo install --path crates/tidewire-cli --locked --features otel`"
            ),
        }
    }

    /// The layer that turns spans into OpenTelemetry spans, if exporting.
    fn layer<S>(&self) -> Option<Box<dyn Layer<S> + Send + Sync>>
    where
        S: tracing::Subscriber
            + for<'span> tracing_subscriber::registry::LookupSpan<'span>
            + Send
            + Sync,
    {
        #[cfg(feature = "otel")]
        if let Some(provider) = &self.provider {
            use opentelemetry::trace::TracerProvider;
            let tracer = provider.tracer("tidewire");
            return Some(tracing_opentelemetry::layer().with_tracer(tracer).boxed());
        }
        None
    }

    /// Sends what is batched, then stops.
    fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("tidewire: sending the last spans failed: {error}");
        }
    }
}
