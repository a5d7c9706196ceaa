//! Configuration in layers, merged by figment: built-in defaults, then a TOML file,
//! then `TIDEWIRE_*` environment variables, then command-line flags; each layer
//! overrides the one before.
//!
//! [`Config`] is the one definition of every option: its field names are the TOML
//! keys, `TIDEWIRE_` and the name in capitals is the environment variable (see
//! [`Environment`]), and the command line passes its flags as one more figment
//! provider under the same names. [`Config::load`] merges the layers and checks the
//! result.
//!
//! Two oddities are kept from the first version: `system_prompt` at the top level of
//! any layer (the `TIDEWIRE_SYSTEM_PROMPT` variable, the `--system-prompt` flag) sets
//! `llm.system_prompt`; the rest of the `[llm]` table is TOML only.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Num, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// figment, re-exported so callers can build the flags layer without depending on it.
pub use figment;
/// The one way to read a [`Secret`].
pub use secrecy::ExposeSecret;

mod tools;

pub use tools::{HttpToolConfig, McpServerConfig, ToolsConfig, expand_env};

/// The configuration the server runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(with = "address")]
    pub addr: SocketAddr,
    /// Directory of the SQLite database; created if missing.
    pub data_dir: PathBuf,
    /// `tracing` filter, as `RUST_LOG` (`info`, `tidewire=debug`, ...).
    pub log: String,
    /// How log lines are written: `text` for people, `json` (one object a line,
    /// with the request's and the run's ids) for log collectors.
    pub log_format: LogFormat,
    /// An OpenTelemetry collector's OTLP/HTTP traces URL
    /// (`http://127.0.0.1:4318/v1/traces`): spans of requests and runs go there
    /// (a `tidewire` built with the `otel` feature).
    pub otlp_endpoint: Option<String>,
    /// Idle time after which a stream gets a keepalive comment.
    #[serde(with = "duration")]
    pub keepalive: Duration,
    /// The reconnection delay suggested to clients with `retry:`.
    #[serde(with = "duration")]
    pub retry: Duration,
    /// How long a finished run stays attachable.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// How often the partial answer of a running run is written to the store. Each
    /// tick writes one row per running answer: at 250 ms and 3,000 paced streams,
    /// SQLite took a fifth of the server's CPU (perf), so the default is 1 s.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// Cancel a run that has had no subscriber for this long; `None` (`off`) lets
    /// runs finish.
    #[serde(with = "duration::off")]
    pub cancel_after_idle: Option<Duration>,
    /// On shutdown, how long running runs may take to finish before they are interrupted.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// Largest accepted `message`, in bytes.
    #[serde(with = "bytes")]
    pub max_message_bytes: usize,
    /// Largest accepted request body, in bytes.
    #[serde(with = "bytes")]
    pub max_body_bytes: usize,
    /// Most runs generating at once; more are refused with 503.
    pub max_concurrent_runs: usize,
    /// Most finished runs kept in memory for re-attaching.
    pub max_finished_runs: usize,
    /// Most bytes of finished runs kept in memory.
    #[serde(with = "bytes")]
    pub max_finished_bytes: usize,
    /// Largest event log of one run, in bytes; a run over it fails.
    #[serde(with = "bytes")]
    pub max_run_bytes: usize,
    /// Largest accepted `options.max_tokens`.
    pub max_tokens_limit: u32,
    /// `options.max_tokens` when the request gives none; unset, a real model
    /// answers up to its own limit and the built-in backends up to 64 tokens.
    pub default_max_tokens: Option<u32>,
    /// `options.tokens_per_second` of the synthetic backend when the request gives none.
    pub default_tokens_per_second: f64,
    /// One OpenAI-compatible backend, named `default` and used by default, from
    /// `TIDEWIRE_LLM_URL` (with `TIDEWIRE_LLM_MODEL` and `TIDEWIRE_LLM_API_KEY`).
    pub llm_url: Option<String>,
    /// The model of `llm_url`.
    pub llm_model: Option<String>,
    /// The API key of `llm_url`.
    pub llm_api_key: Option<Secret>,
    /// How long the `llm_url` model may take to send its first token, per attempt
    /// [default: 60s].
    pub llm_first_token_timeout: Option<Span>,
    /// The longest silence of the `llm_url` model once it streams [default: 30s].
    pub llm_idle_timeout: Option<Span>,
    /// The longest answer of the `llm_url` model [default: 10m].
    pub llm_total_timeout: Option<Span>,
    /// Model backends, history and system prompt.
    pub llm: LlmConfig,
    /// Where the front ends' dialects are mounted, and how their streams behave
    /// (TOML only: the `[dialects]` table).
    pub dialects: DialectsConfig,
    /// The OpenAI-compatible routes under `/v1` (TOML only: the `[openai]` table).
    pub openai: OpenAiConfig,
    /// Who may call, and how often (TOML only: the `[auth]` table).
    pub auth: AuthConfig,
    /// The answer pipeline's stages and limits (TOML only: the `[pipeline]` table).
    pub pipeline: PipelineConfig,
    /// Documents and their search (TOML only: the `[documents]` table).
    pub documents: DocumentsConfig,
    /// The tools models may call (TOML only: the `[tools]` table).
    pub tools: ToolsConfig,
    /// Prometheus metrics at `/metrics` (TOML only: the `[metrics]` table).
    pub metrics: MetricsConfig,
    /// A Redis (`redis://host:6379`) for the run log: runs become visible to every
    /// node sharing it. Unset, runs live in this process only.
    pub redis_url: Option<Secret>,
    /// A PostgreSQL (`postgres://user@host/db`) for the store, instead of the SQLite
    /// file in the data directory.
    pub postgres_url: Option<Secret>,
    /// How nodes sharing a Redis and a PostgreSQL work together (TOML only: the
    /// `[cluster]` table).
    pub cluster: ClusterSettings,
}

/// The `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's name [default: host name and process id].
    pub node_id: Option<String>,
    /// How long a node's runs outlive it: a node that stops renewing its leases for
    /// this long has its runs ended as `interrupted` by another node.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// The prefix of tidewire's keys in Redis (several deployments can share one).
    pub redis_prefix: String,
    /// The PostgreSQL schema of tidewire's tables [default: the connection's own,
    /// usually `public`].
    pub postgres_schema: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            node_id: None,
            lease: Duration::from_secs(5),
            redis_prefix: "tidewire:".into(),
            postgres_schema: None,
        }
    }
}

impl ClusterSettings {
    fn validate(&self) -> Result<(), String> {
        if self.lease < Duration::from_millis(300) {
            return Err("cluster.lease must be at least 300ms".into());
        }
        if let Some(schema) = &self.postgres_schema
            && (schema.is_empty()
                || !schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        {
            return Err(format!(
                "cluster.postgres_schema {schema:?} must be lowercase letters, digits and _"
            ));
        }
        Ok(())
    }
}

/// The `[metrics]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Record metrics and serve them at `/metrics`.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The `[pipeline]` table: which stages run, and their limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Normalise the question (and with a language model, rewrite a follow-up).
    pub query_analysis: bool,
    /// Search the documents and send `sources`.
    pub retrieval: bool,
    /// Ask the model.
    pub generation: bool,
    /// Score the answer against its sources (`quality_score`).
    pub scoring: bool,
    /// Suggest `follow_up_questions`.
    pub follow_ups: bool,
    /// How many chunks retrieval returns.
    pub top_k: usize,
    /// The most characters of sources that go into the prompt.
    pub max_source_chars: usize,
    /// How long the pipeline's own questions to the model (the rewrite, the
    /// follow-ups) may take before it does without.
    #[serde(with = "duration")]
    pub side_timeout: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            query_analysis: true,
            retrieval: true,
            generation: true,
            scoring: true,
            follow_ups: true,
            top_k: 5,
            max_source_chars: 6000,
            side_timeout: Duration::from_secs(10),
        }
    }
}

/// The `[documents]` table: how documents are cut into chunks, how large an
/// upload may be, and whether a new data directory starts with tidewire's own
/// documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentsConfig {
    /// Longest chunk, in characters.
    pub chunk_chars: usize,
    /// How much of a chunk's end the next one repeats, in characters.
    pub chunk_overlap: usize,
    /// Largest upload (`POST /api/documents`, the whole request), in bytes; this
    /// route's body limit instead of `max_body_bytes`.
    #[serde(with = "bytes")]
    pub max_upload_bytes: usize,
    /// On the first start on a new data directory, index tidewire's own
    /// documentation (README and design notes) into the `default` collection.
    pub seed_docs: bool,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        Self {
            chunk_chars: 1200,
            chunk_overlap: 200,
            max_upload_bytes: 16 * 1024 * 1024,
            seed_docs: true,
        }
    }
}

impl PipelineConfig {
    /// Generation alone, as before the pipeline had stages: what the engine's tests
    /// and benchmarks measure.
    pub fn generation_only() -> Self {
        Self {
            query_analysis: false,
            retrieval: false,
            scoring: false,
            follow_ups: false,
            ..Self::default()
        }
    }
}

impl DocumentsConfig {
    fn validate(&self) -> Result<(), String> {
        if !(100..=100_000).contains(&self.chunk_chars) {
            return Err("documents.chunk_chars must be from 100 to 100000".into());
        }
        if self.chunk_overlap > self.chunk_chars / 2 {
            return Err(
                "documents.chunk_overlap must be at most half of documents.chunk_chars".into(),
            );
        }
        if self.max_upload_bytes == 0 {
            return Err("documents.max_upload_bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// The `[dialects]` table: one entry per front end of the seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialectsConfig {
    /// The RAG chat front end (seed 000).
    pub rag: DialectConfig,
    /// The canvas agent chat front end (seed 003); it may share `rag`'s path.
    pub canvas: DialectConfig,
    /// The ask pipeline front end (seed 001).
    pub ask: DialectConfig,
    /// The portfolio assistant front end (seed 002).
    pub portfolio: DialectConfig,
    /// The chatbot API front end (seed 004).
    pub chatbot: DialectConfig,
    /// The Vercel AI SDK's `useChat` (UI message stream); resumes on `GET
    /// {path}/{chat_id}/stream`.
    pub ui: DialectConfig,
}

impl Default for DialectsConfig {
    fn default() -> Self {
        let route = |path: &str| DialectConfig {
            path: path.to_owned(),
            keepalive: Duration::from_secs(15),
            cancel_on_disconnect: Some(Duration::from_secs(3)),
        };
        Self {
            rag: route("/api/chat/stream"),
            canvas: route("/api/chat/stream"),
            ask: route("/api/ask/stream"),
            portfolio: route("/api/v1/chat/send"),
            // Its httpx client gives up after 5 s without a byte.
            chatbot: DialectConfig {
                keepalive: Duration::from_secs(4),
                ..route("/api/v1/chat/")
            },
            ui: route("/api/ui/chat"),
        }
    }
}

impl DialectsConfig {
    /// The dialects by name, with their routes.
    pub fn all(&self) -> [(&'static str, &DialectConfig); 6] {
        [
            ("rag", &self.rag),
            ("canvas", &self.canvas),
            ("ask", &self.ask),
            ("portfolio", &self.portfolio),
            ("chatbot", &self.chatbot),
            ("ui", &self.ui),
        ]
    }

    /// Paths start with `/`, keepalives are not zero, and no two dialects (but
    /// `rag` and `canvas`, told apart by their bodies) nor a native route share a
    /// path.
    fn validate(&self) -> Result<(), String> {
        const NATIVE: [&str; 4] = ["/api/chat", "/api/conversations", "/api/tools", "/healthz"];
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (name, route) in self.all() {
            if route.path.is_empty() {
                continue;
            }
            if !route.path.starts_with('/') {
                return Err(format!("dialects.{name}.path must start with /"));
            }
            if route.keepalive.is_zero() {
                return Err(format!("dialects.{name}.keepalive must be more than 0"));
            }
            let bare = route.path.trim_end_matches('/');
            if NATIVE.contains(&bare)
                || bare.starts_with("/api/runs")
                || bare.starts_with("/api/documents")
            {
                return Err(format!(
                    "dialects.{name}.path {} is a route of the native API",
                    route.path
                ));
            }
            for (other, path) in &seen {
                let shared_ok = matches!((*other, name), ("rag", "canvas"));
                if path.trim_end_matches('/') == bare && !(shared_ok && *path == route.path) {
                    return Err(format!(
                        "dialects.{name}.path {} is already the path of dialects.{other}",
                        route.path
                    ));
                }
            }
            seen.push((name, &route.path));
        }
        Ok(())
    }
}

/// The `[auth]` table: authentication, per-user limits. With neither API keys nor
/// a JWT key configured, every request is the one local user, as on a laptop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept the API keys of `tidewire keys create`.
    pub api_keys: bool,
    /// Accept JWTs signed with this shared secret (HS256).
    pub jwt_secret: Option<Secret>,
    /// Accept JWTs signed with the key of this PEM file (RS256 or ES256).
    pub jwt_public_key: Option<PathBuf>,
    /// Accept JWTs signed with a key of this JWKS file (RS256 or ES256 keys,
    /// chosen by the token's `kid`).
    pub jwt_jwks: Option<PathBuf>,
    /// A JWT's `iss` must be this.
    pub jwt_issuer: Option<String>,
    /// A JWT's `aud` must hold this.
    pub jwt_audience: Option<String>,
    /// Clock difference tolerated on `exp` and `nbf`.
    #[serde(with = "duration")]
    pub jwt_leeway: Duration,
    /// How long the token in a run's `events_url` lets an `EventSource` read it.
    #[serde(with = "duration")]
    pub stream_token_ttl: Duration,
    /// Requests per minute per user on the routes that start answers; 0: no limit.
    pub requests_per_minute: u32,
    /// Answers a user may have running at once; 0: no limit.
    pub concurrent_runs: u32,
    /// Browser origins that may call (an origin without a port: any port; `"*"`:
    /// any origin). By default the machine's own: `http://localhost`,
    /// `http://127.0.0.1`, `http://[::1]`.
    pub cors_origins: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_keys: false,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::from_secs(30),
            stream_token_ttl: Duration::from_secs(3600),
            requests_per_minute: 0,
            concurrent_runs: 0,
            cors_origins: crate::api::DEFAULT_ORIGINS.map(String::from).to_vec(),
        }
    }
}

impl AuthConfig {
    /// Whether requests must say who they are.
    pub fn enabled(&self) -> bool {
        self.api_keys
            || self.jwt_secret.is_some()
            || self.jwt_public_key.is_some()
            || self.jwt_jwks.is_some()
    }
}

/// The `[openai]` table: the OpenAI-compatible routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Serve `/v1/chat/completions` and `/v1/models`.
    pub enabled: bool,
    /// Keepalive comment interval on their streams.
    #[serde(with = "duration")]
    pub keepalive: Duration,
    /// A client that goes away (the SDKs stop a stream by closing it) cancels its
    /// run after this long; `off` lets the run finish.
    #[serde(with = "duration::off")]
    pub cancel_on_disconnect: Option<Duration>,
    /// Offer the configured tools (`[tools]`) to models on these routes too. Off by
    /// default: OpenAI clients bring their own tools.
    pub server_tools: bool,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            keepalive: Duration::from_secs(15),
            cancel_on_disconnect: Some(Duration::from_secs(3)),
            server_tools: false,
        }
    }
}

/// One dialect's route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialectConfig {
    /// The path it answers `POST` on; empty turns the dialect off.
    pub path: String,
    /// Keepalive comment interval on its streams.
    #[serde(with = "duration")]
    pub keepalive: Duration,
    /// A client that goes away cancels its run after this long (these clients cannot
    /// resume); `off` lets the run finish.
    #[serde(with = "duration::off")]
    pub cancel_on_disconnect: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("tidewire-data"),
            log: "info".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            keepalive: Duration::from_secs(15),
            retry: Duration::from_secs(1),
            retention: Duration::from_secs(600),
            flush_interval: Duration::from_secs(1),
            cancel_after_idle: None,
            drain_timeout: Duration::from_secs(30),
            max_message_bytes: 32 * 1024,
            max_body_bytes: 256 * 1024,
            max_concurrent_runs: 20_000,
            max_finished_runs: 10_000,
            max_finished_bytes: 256 * 1024 * 1024,
            max_run_bytes: 16 * 1024 * 1024,
            max_tokens_limit: 8192,
            default_max_tokens: None,
            default_tokens_per_second: 30.0,
            llm_url: None,
            llm_model: None,
            llm_api_key: None,
            llm_first_token_timeout: None,
            llm_idle_timeout: None,
            llm_total_timeout: None,
            llm: LlmConfig::default(),
            dialects: DialectsConfig::default(),
            openai: OpenAiConfig::default(),
            auth: AuthConfig::default(),
            pipeline: PipelineConfig::default(),
            documents: DocumentsConfig::default(),
            tools: ToolsConfig::default(),
            metrics: MetricsConfig::default(),
            redis_url: None,
            postgres_url: None,
            cluster: ClusterSettings::default(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// The `[llm]` section: named backends, the default, the fallback order, the
/// system prompt and how much of the conversation goes with each question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// The backend of requests without `options.backend`.
    pub default: String,
    /// Backends tried in order when the chosen one fails before its first token.
    pub fallback: Vec<String>,
    /// Attempts per backend (the first included) before falling back.
    pub attempts: u32,
    /// Instructions sent first, as a system message.
    pub system_prompt: Option<String>,
    /// At most this many earlier messages of the conversation go with a question...
    pub history_messages: usize,
    /// ...and at most this many characters of them.
    pub history_chars: usize,
    /// The backends, by name (`extractive` and `synthetic` always exist).
    pub backends: BTreeMap<String, BackendConfig>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            // With no model configured, answers come from the documents.
            default: "extractive".into(),
            fallback: Vec::new(),
            attempts: 2,
            system_prompt: None,
            history_messages: 20,
            history_chars: 32_000,
            backends: BTreeMap::new(),
        }
    }
}

/// The kind of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// An OpenAI-compatible `/chat/completions` server.
    Openai,
    /// Ollama's native `/api/chat`.
    Ollama,
    /// The built-in deterministic backend.
    Synthetic,
    /// The built-in extractive answerer (answers from the retrieved sources).
    Extractive,
    /// An answer service that returns one JSON document (see `request_body`,
    /// `answer_path`, `confidence_path`, `sources_path`).
    Service,
}

/// One named backend of `[llm.backends.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// What speaks at `url`.
    pub kind: BackendKind,
    /// Base URL: `http://127.0.0.1:8000/v1` for OpenAI-compatible servers,
    /// `http://127.0.0.1:11434` for Ollama.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The model to ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer`; never logged or shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// To open a connection [default: 10s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Span>,
    /// From the request to the first token [default: 60s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_timeout: Option<Span>,
    /// Between two pieces of the stream [default: 30s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Span>,
    /// For the whole answer [default: 10m; 30s for a `service`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_timeout: Option<Span>,
    /// For a `service`: the JSON request body, with `{query}` where the question
    /// goes [default: `{"query": "{query}"}`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// For a `service`: the JSON pointer to the answer text [default: `/response`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_path: Option<String>,
    /// For a `service`: the JSON pointer to its confidence [default: `/confidence`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_path: Option<String>,
    /// For a `service`: the JSON pointer to its sources [default: `/sources`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources_path: Option<String>,
}

/// A credential, kept in a [`SecretString`]: `<redacted>` in every debug print and
/// rendering (`tidewire config` included); [`ExposeSecret::expose_secret`] reads it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl ExposeSecret<str> for Secret {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// Two secrets are equal when their texts are (so configurations compare).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose_secret() == other.expose_secret()
    }
}

impl Eq for Secret {}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text.into())
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.into()))
    }
}

/// A duration written as `15s`, `250ms`, `10m`, a bare number of seconds, or `off`
/// (zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        duration::parse(text).map(Self)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        duration::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        duration::deserialize(deserializer).map(Self)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A layer is not valid for this configuration: bad TOML, an unknown key, a value
    /// of the wrong form. The message names the key and where it was set.
    #[error("invalid configuration: {0}")]
    Load(Box<figment::Error>),
    /// A value is out of its range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the TOML file if given, then the `TIDEWIRE_*` variables of this
    /// process, then `flags` (a provider whose keys are the option names, such as
    /// `figment::providers::Serialized::defaults(args)`); checked.
    pub fn load(file: Option<&Path>, flags: impl Provider) -> Result<Self, ConfigError> {
        Self::load_with(file, Environment::process(), flags)
    }

    /// [`Config::load`] with the environment given instead of read from the process.
    pub fn load_with(
        file: Option<&Path>,
        env: Environment,
        flags: impl Provider,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            // figment reads a missing file as an empty one: a named file must exist.
            std::fs::File::open(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            figment = figment.merge(Layer {
                provider: Toml::file_exact(path),
                name: format!("config file {}", path.display()),
                spell: |keys| keys.join("."),
            });
        }
        let figment = figment
            .merge(Layer {
                provider: env,
                name: "the environment".to_owned(),
                spell: |keys| format!("TIDEWIRE_{}", flat_name(keys).to_ascii_uppercase()),
            })
            .merge(Layer {
                provider: flags,
                name: "the command line".to_owned(),
                spell: |keys| format!("--{}", flat_name(keys).replace('_', "-")),
            });
        let mut config: Self = figment
            .extract()
            .map_err(|error| ConfigError::Load(Box::new(error)))?;
        config.validate()?;
        if config.llm_url.is_some() {
            // The `llm_url` model answers by default: said in the configuration
            // itself, so `tidewire config` prints what is in effect.
            config.llm.default = "default".into();
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        self.dialects.validate().map_err(ConfigError::Invalid)?;
        if self.openai.keepalive.is_zero() {
            return Err(ConfigError::Invalid(
                "openai.keepalive must be more than 0".into(),
            ));
        }
        self.documents.validate().map_err(ConfigError::Invalid)?;
        self.tools.validate().map_err(ConfigError::Invalid)?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        if let Some(url) = &self.redis_url
            && !url.expose_secret().starts_with("redis://")
        {
            return invalid("redis_url must start with redis:// (redis://127.0.0.1:6379)");
        }
        if let Some(url) = &self.postgres_url
            && !(url.expose_secret().starts_with("postgres://")
                || url.expose_secret().starts_with("postgresql://"))
        {
            return invalid(
                "postgres_url must start with postgres:// (postgres://user@127.0.0.1:5432/db)",
            );
        }
        match (&self.llm_url, &self.llm_model) {
            (Some(url), _) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(ConfigError::Invalid(format!(
                    "llm_url {url:?} has no scheme: write it as http://{url} (or https://)"
                )));
            }
            (Some(_), None) => {
                return invalid(
                    "llm_url is set but llm_model is not: name the model too \
                     (--llm-model, TIDEWIRE_LLM_MODEL)",
                );
            }
            (None, Some(_)) => {
                return invalid(
                    "llm_model is set but llm_url is not: give the model server's URL too \
                     (--llm-url, TIDEWIRE_LLM_URL)",
                );
            }
            _ => {}
        }
        for (name, timeout) in [
            ("llm_first_token_timeout", self.llm_first_token_timeout),
            ("llm_idle_timeout", self.llm_idle_timeout),
            ("llm_total_timeout", self.llm_total_timeout),
        ] {
            let Some(timeout) = timeout else { continue };
            if timeout.0.is_zero() {
                return invalid(&format!("{name} must be more than 0"));
            }
            if self.llm_url.is_none() {
                // Said rather than ignored: the named backends have their own.
                return invalid(&format!(
                    "{name} applies to the llm_url model, and llm_url is not set; a backend \
                     of [llm.backends] takes its timeouts in its own table"
                ));
            }
        }
        if self.keepalive.is_zero() {
            return invalid("keepalive must be more than 0");
        }
        if self.flush_interval.is_zero() {
            return invalid("flush_interval must be more than 0");
        }
        if self.max_concurrent_runs == 0 {
            return invalid("max_concurrent_runs must be at least 1");
        }
        if self.max_finished_runs == 0 {
            return invalid("max_finished_runs must be at least 1");
        }
        if self.max_finished_bytes == 0 {
            return invalid("max_finished_bytes must be at least 1");
        }
        if self.max_run_bytes < 64 * 1024 {
            return invalid("max_run_bytes must be at least 64KiB");
        }
        if self
            .default_max_tokens
            .is_some_and(|n| n == 0 || n > self.max_tokens_limit)
        {
            return invalid("default_max_tokens must be from 1 to max_tokens_limit");
        }
        if !crate::pipeline::valid_pace(self.default_tokens_per_second) {
            return invalid(&format!(
                "default_tokens_per_second must be 0 or from {} to {}",
                crate::pipeline::MIN_TOKENS_PER_SECOND,
                crate::pipeline::MAX_TOKENS_PER_SECOND
            ));
        }
        if self.max_message_bytes > self.max_body_bytes {
            return invalid("max_message_bytes must not exceed max_body_bytes");
        }
        if self.llm_url.is_some() && self.llm_model.is_none() {
            return invalid("TIDEWIRE_LLM_URL (llm_url) needs TIDEWIRE_LLM_MODEL (llm_model)");
        }
        for (name, backend) in &self.llm.backends {
            if !matches!(
                backend.kind,
                BackendKind::Synthetic | BackendKind::Extractive
            ) && (backend.url.is_none() || backend.model.is_none())
            {
                return Err(ConfigError::Invalid(format!(
                    "backend {name:?} needs a url and a model"
                )));
            }
        }
        let known = |name: &str| {
            name == "synthetic"
                || name == "extractive"
                || self.llm.backends.contains_key(name)
                || (name == "default" && self.llm_url.is_some())
        };
        for name in std::iter::once(&self.llm.default).chain(&self.llm.fallback) {
            if !known(name) && self.llm_url.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "no backend named {name:?} is configured"
                )));
            }
        }
        Ok(())
    }

    /// The configuration as TOML, durations in the `15s` form, sizes in bytes and
    /// secrets as `<redacted>`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }
}

/// The options set in the environment, as a figment provider: `TIDEWIRE_` and the
/// name in capitals for every option of the top level (`TIDEWIRE_MAX_BODY_BYTES` for
/// `max_body_bytes`), and `TIDEWIRE_SYSTEM_PROMPT` for `llm.system_prompt`.
///
/// Values are read as the text they are, and as a number where the option is a
/// number, so `60`, `4KiB` and `off` mean what they mean in TOML, and a model name or
/// a key that looks like a number stays text. Other variables, such as
/// `TIDEWIRE_CONFIG` (the file) or `TIDEWIRE_URL` (of `tidewire chat`), are not
/// options and are ignored.
pub struct Environment {
    vars: BTreeMap<String, String>,
    /// `TIDEWIRE_*` variables whose value is not Unicode.
    not_unicode: Vec<String>,
}

impl Environment {
    /// The variables of this process.
    pub fn process() -> Self {
        let mut vars = BTreeMap::new();
        let mut not_unicode = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|name| name.starts_with("TIDEWIRE_")) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    vars.insert(name.to_owned(), value);
                }
                Err(_) => not_unicode.push(name.to_owned()),
            }
        }
        Self { vars, not_unicode }
    }

    /// These variables instead of the process's (for tests and embedding).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
            not_unicode: Vec::new(),
        }
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named("the environment")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        // The options of the top level, and the kind of each, from the defaults.
        let defaults = match Value::serialize(Config::default())? {
            Value::Dict(_, defaults) => defaults,
            _ => Dict::new(),
        };
        let options = defaults
            .into_iter()
            .filter(|(_, default)| !matches!(default, Value::Dict(..)))
            .chain([("system_prompt".to_owned(), Value::from(String::new()))]);
        for (key, default) in options {
            let name = format!("TIDEWIRE_{}", key.to_ascii_uppercase());
            if self.not_unicode.contains(&name) {
                return Err(format!("{name} is not valid Unicode").into());
            }
            if let Some(text) = self.vars.get(&name) {
                // An unset number has no kind to read from its default.
                let default = if OPTIONAL_NUMBERS.contains(&key.as_str()) {
                    Value::from(0u64)
                } else {
                    default
                };
                dict.insert(key, typed(text, &default));
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Top-level numbers that are unset by default.
const OPTIONAL_NUMBERS: [&str; 1] = ["default_max_tokens"];

/// `text` as a number when `default` is one (and `text` reads as one), else as text.
fn typed(text: &str, default: &Value) -> Value {
    let number = match default {
        Value::Num(_, Num::F32(_) | Num::F64(_)) => {
            text.trim().parse::<f64>().ok().map(Value::from)
        }
        Value::Num(..) => (text.trim().parse::<u64>().ok().map(Value::from))
            .or_else(|| text.trim().parse::<i64>().ok().map(Value::from)),
        _ => None,
    };
    number.unwrap_or_else(|| Value::from(text.to_owned()))
}

/// The name of an option in a flat layer (environment, flags): `system_prompt` for
/// `llm.system_prompt`, else the keys joined with `_`.
fn flat_name(keys: &[&str]) -> String {
    match keys {
        ["llm", "system_prompt"] => "system_prompt".to_owned(),
        _ => keys.join("_"),
    }
}

/// One layer as figment reads it: a top-level `system_prompt` moved to
/// `llm.system_prompt` (it wins over one already there), and errors naming the layer
/// and the key as the layer spells it.
struct Layer<P> {
    provider: P,
    name: String,
    spell: fn(&[&str]) -> String,
}

impl<P: Provider> Provider for Layer<P> {
    fn metadata(&self) -> Metadata {
        let spell = self.spell;
        Metadata::named(self.name.clone()).interpolater(move |_, keys| spell(keys))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = self.provider.data()?;
        for dict in data.values_mut() {
            let Some(prompt) = dict.remove("system_prompt") else {
                continue;
            };
            match dict
                .entry("llm".to_owned())
                .or_insert_with(|| Value::from(Dict::new()))
            {
                Value::Dict(_, llm) => {
                    llm.insert("system_prompt".to_owned(), prompt);
                }
                // Not a table: leave both for the extraction to report.
                _ => {
                    dict.insert("system_prompt".to_owned(), prompt);
                }
            }
        }
        Ok(data)
    }
}

/// Durations: written `15s` with humantime-serde; read from `15s`, `250ms`, `10m`
/// (humantime), a bare number of seconds (`60`, as a number or as text) or `off`
/// (zero).
mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Reads `15s`, `250ms`, `10m`, a number of seconds or `off` (zero).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if text == "off" {
            return Ok(Duration::ZERO);
        }
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(Duration::from_secs(seconds));
        }
        humantime_serde::re::humantime::parse_duration(text)
            .map_err(|error| format!("{text:?} is not a duration like 15s or 250ms: {error}"))
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(value, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration like 15s or 250ms, a number of seconds, or off")
        }

        fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(seconds))
        }

        fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
            u64::try_from(seconds)
                .map(Duration::from_secs)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(seconds), &self))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse(text).map_err(E::custom)
        }
    }

    /// An optional duration: `off` (or zero) is `None`, and `None` is written `off`.
    pub mod off {
        use std::time::Duration;

        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            value: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => super::serialize(value, serializer),
                None => serializer.serialize_str("off"),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            let value = super::deserialize(deserializer)?;
            Ok((!value.is_zero()).then_some(value))
        }
    }
}

/// Socket addresses, read with a message that shows the value and the form expected
/// (serde's own says only "invalid socket address syntax").
mod address {
    use std::fmt;
    use std::net::SocketAddr;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
        deserializer.deserialize_str(AddressVisitor)
    }

    struct AddressVisitor;

    impl Visitor<'_> for AddressVisitor {
        type Value = SocketAddr;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an address like 127.0.0.1:8080")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<SocketAddr, E> {
            text.trim().parse().map_err(|_| {
                E::custom(format!(
                    "{text:?} is not an address like 127.0.0.1:8080 (an IP address and a port)"
                ))
            })
        }
    }
}

/// Sizes in bytes: written as a number of bytes; read from a number or from text
/// parsed by bytesize (`32768`, `32KiB`, `1 MiB`).
mod bytes {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Reads `32768`, `32KiB` or `1 MiB`.
    pub fn parse(text: &str) -> Result<usize, String> {
        let text = text.trim();
        let size = text
            .parse::<bytesize::ByteSize>()
            .map_err(|error| format!("{text:?} is not a size like 32768 or 32KiB: {error}"))?;
        usize::try_from(size.as_u64()).map_err(|_| format!("{text:?} is too large"))
    }

    pub fn serialize<S: Serializer>(value: &usize, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*value as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size like 32768 or 32KiB")
        }

        fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<usize, E> {
            usize::try_from(bytes)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(bytes), &self))
        }

        fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<usize, E> {
            usize::try_from(bytes)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(bytes), &self))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<usize, E> {
            parse(text).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::Serialized;

    use super::*;

    fn no_env() -> Environment {
        Environment::from_vars(Vec::<(String, String)>::new())
    }

    fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with(file, no_env(), Figment::new())
    }

    fn flags(pairs: &[(&str, &str)]) -> Serialized<BTreeMap<String, String>> {
        Serialized::defaults(
            pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tidewire.toml");
        std::fs::write(
            &file,
            "addr = \"127.0.0.1:9000\"\nkeepalive = \"5s\"\nretention = 60\ncancel_after_idle = \"2m\"\nmax_message_bytes = \"4KiB\"\ndrain_timeout = \"9s\"\nmax_concurrent_runs = 7\n",
        )
        .unwrap();
        let env = Environment::from_vars([
            ("TIDEWIRE_KEEPALIVE", "6s"),
            ("TIDEWIRE_DRAIN_TIMEOUT", "8"),
            ("TIDEWIRE_MAX_CONCURRENT_RUNS", "9"),
            ("TIDEWIRE_MAX_BODY_BYTES", "1 MiB"),
            ("TIDEWIRE_CONFIG", "/not/an/option.toml"),
            ("TIDEWIRE_URL", "http://127.0.0.1:1"),
        ]);
        let config = Config::load_with(Some(&file), env, flags(&[("keepalive", "7s")])).unwrap();
        assert_eq!(config.addr, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(config.keepalive, Duration::from_secs(7));
        assert_eq!(config.drain_timeout, Duration::from_secs(8));
        assert_eq!(config.max_concurrent_runs, 9);
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.retention, Duration::from_secs(60));
        assert_eq!(config.cancel_after_idle, Some(Duration::from_secs(120)));
        assert_eq!(config.max_message_bytes, 4096);
        assert_eq!(config.flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn dialects_mount_where_the_file_says_and_paths_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dialects.toml");
        std::fs::write(
            &file,
            "[dialects.canvas]\npath = \"/canvas/stream\"\nkeepalive = \"5s\"\ncancel_on_disconnect = \"off\"\n\
             [dialects.ask]\npath = \"\"\nkeepalive = 15\ncancel_on_disconnect = \"10s\"\n",
        )
        .unwrap();
        let config = load(Some(&file)).unwrap();
        assert_eq!(config.dialects.canvas.path, "/canvas/stream");
        assert_eq!(config.dialects.canvas.cancel_on_disconnect, None);
        assert_eq!(config.dialects.ask.path, "", "off");
        assert_eq!(config.dialects.rag.path, "/api/chat/stream");
        assert_eq!(config.dialects.chatbot.keepalive, Duration::from_secs(4));
        for (toml, complaint) in [
            (
                "[dialects.ask]\npath = \"/api/v1/chat/send\"\nkeepalive = 1\ncancel_on_disconnect = 1\n",
                "already the path of dialects.ask",
            ),
            (
                "[dialects.ask]\npath = \"/api/chat\"\nkeepalive = 1\ncancel_on_disconnect = 1\n",
                "native API",
            ),
            (
                "[dialects.ask]\npath = \"/api/documents\"\nkeepalive = 1\ncancel_on_disconnect = 1\n",
                "native API",
            ),
            (
                "[dialects.ask]\npath = \"ask\"\nkeepalive = 1\ncancel_on_disconnect = 1\n",
                "must start with /",
            ),
        ] {
            std::fs::write(&file, toml).unwrap();
            let error = load(Some(&file)).unwrap_err().to_string();
            assert!(error.contains(complaint), "{error}");
        }
    }

    #[test]
    fn the_documents_table_loads_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("documents.toml");
        std::fs::write(
            &file,
            "[documents]\nchunk_chars = 800\nmax_upload_bytes = \"2 MiB\"\nseed_docs = false\n",
        )
        .unwrap();
        let config = load(Some(&file)).unwrap();
        assert_eq!(config.documents.chunk_chars, 800);
        assert_eq!(config.documents.chunk_overlap, 200);
        assert_eq!(config.documents.max_upload_bytes, 2 * 1024 * 1024);
        assert!(!config.documents.seed_docs);
        assert!(Config::default().documents.seed_docs);
        for (toml, complaint) in [
            ("[documents]\nchunk_chars = 10\n", "chunk_chars"),
            ("[documents]\nchunk_overlap = 700\n", "chunk_overlap"),
            ("[documents]\nmax_upload_bytes = 0\n", "max_upload_bytes"),
            ("[documents]\nchunk_size = 10\n", "chunk_size"),
        ] {
            std::fs::write(&file, toml).unwrap();
            let error = load(Some(&file)).unwrap_err().to_string();
            assert!(error.contains(complaint), "{error}");
        }
    }

    #[test]
    fn off_turns_cancel_after_idle_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("idle.toml");
        std::fs::write(&file, "cancel_after_idle = \"1s\"\n").unwrap();
        let on = load(Some(&file)).unwrap();
        assert_eq!(on.cancel_after_idle, Some(Duration::from_secs(1)));
        let env = Environment::from_vars([("TIDEWIRE_CANCEL_AFTER_IDLE", "off")]);
        let off = Config::load_with(Some(&file), env, Figment::new()).unwrap();
        assert_eq!(off.cancel_after_idle, None);
        let zero =
            Config::load_with(Some(&file), no_env(), flags(&[("cancel_after_idle", "0")])).unwrap();
        assert_eq!(zero.cancel_after_idle, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "keepalve = \"5s\"\n").unwrap();
        let error = load(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("keepalve"), "{error}");
        std::fs::write(&file, "keepalive = \"soon\"\n").unwrap();
        let error = load(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("not a duration"), "{error}");
        assert!(error.contains("\"keepalive\""), "{error}");
        std::fs::write(&file, "keepalive = \n").unwrap();
        let error = load(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("bad.toml"), "{error}");

        let env = Environment::from_vars([("TIDEWIRE_MAX_BODY_BYTES", "12 parsecs")]);
        let error = Config::load_with(None, env, Figment::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("12 parsecs"), "{error}");
        assert!(error.contains("TIDEWIRE_MAX_BODY_BYTES"), "{error}");

        let error = Config::load_with(None, no_env(), flags(&[("retry", "later")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"later\" is not a duration"), "{error}");
        assert!(error.contains("--retry"), "{error}");

        let error = Config::load_with(None, no_env(), flags(&[("max_run_bytes", "1KiB")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("max_run_bytes must be at least 64KiB"),
            "{error}"
        );

        let missing = dir.path().join("missing.toml");
        let error = load(Some(&missing)).unwrap_err().to_string();
        assert!(error.contains("cannot read config file"), "{error}");
    }

    #[test]
    fn sizes_and_spans_parse() {
        assert_eq!(bytes::parse("32768").unwrap(), 32 * 1024);
        assert_eq!(bytes::parse("32KiB").unwrap(), 32 * 1024);
        assert_eq!(bytes::parse("1 MiB").unwrap(), 1024 * 1024);
        assert!(bytes::parse("12 parsecs").is_err());
        assert_eq!(
            "250ms".parse::<Span>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!("60".parse::<Span>().unwrap().0, Duration::from_secs(60));
        assert_eq!("off".parse::<Span>().unwrap().0, Duration::ZERO);
        assert!("soon".parse::<Span>().is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sizes.toml");
        std::fs::write(
            &file,
            "max_body_bytes = 32768\nmax_message_bytes = \"1KiB\"\nmax_finished_bytes = \"1 MiB\"\nmax_run_bytes = \"64KiB\"\nmax_finished_runs = 3\n",
        )
        .unwrap();
        let config = load(Some(&file)).unwrap();
        assert_eq!(config.max_body_bytes, 32768);
        assert_eq!(config.max_message_bytes, 1024);
        assert_eq!(config.max_finished_bytes, 1024 * 1024);
        assert_eq!(config.max_run_bytes, 64 * 1024);
        assert_eq!(config.max_finished_runs, 3);
        let defaults = Config::default();
        assert_eq!(defaults.max_finished_runs, 10_000);
        assert_eq!(defaults.max_finished_bytes, 256 * 1024 * 1024);
        assert_eq!(defaults.max_run_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn a_model_url_needs_a_scheme_and_a_model_and_becomes_the_default() {
        let load = |vars: &[(&str, &str)]| {
            Config::load_with(
                None,
                Environment::from_vars(vars.iter().copied()),
                Figment::new(),
            )
        };
        let error = load(&[
            ("TIDEWIRE_LLM_URL", "localhost:11434/v1"),
            ("TIDEWIRE_LLM_MODEL", "m"),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("http://localhost:11434/v1"), "{error}");
        let error = load(&[("TIDEWIRE_LLM_MODEL", "m")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("llm_url"), "{error}");
        let error = load(&[("TIDEWIRE_LLM_URL", "http://h/v1")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("llm_model"), "{error}");
        let config = load(&[
            ("TIDEWIRE_LLM_URL", "http://h/v1"),
            ("TIDEWIRE_LLM_MODEL", "m"),
        ])
        .unwrap();
        assert_eq!(config.llm.default, "default");
        assert_eq!(Config::default().default_max_tokens, None);
    }

    #[test]
    fn the_llm_url_timeouts_load_from_every_layer_and_need_llm_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("timeouts.toml");
        std::fs::write(
            &file,
            "llm_url = \"http://h/v1\"\nllm_model = \"m\"\nllm_first_token_timeout = \"2m\"\n\
             llm_idle_timeout = 45\n",
        )
        .unwrap();
        let env = Environment::from_vars([
            ("TIDEWIRE_LLM_IDLE_TIMEOUT", "90"),
            ("TIDEWIRE_LLM_TOTAL_TIMEOUT", "20m"),
        ]);
        let config = Config::load_with(
            Some(&file),
            env,
            flags(&[("llm_first_token_timeout", "3m")]),
        )
        .unwrap();
        assert_eq!(
            config.llm_first_token_timeout,
            Some(Span(Duration::from_secs(180)))
        );
        assert_eq!(config.llm_idle_timeout, Some(Span(Duration::from_secs(90))));
        assert_eq!(
            config.llm_total_timeout,
            Some(Span(Duration::from_secs(1200)))
        );
        let shown = config.to_toml();
        assert!(
            shown.contains("llm_first_token_timeout = \"3m\""),
            "{shown}"
        );
        assert!(!Config::default().to_toml().contains("llm_idle_timeout"));

        let env = Environment::from_vars([("TIDEWIRE_LLM_FIRST_TOKEN_TIMEOUT", "soon")]);
        let error = Config::load_with(Some(&file), env, Figment::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("TIDEWIRE_LLM_FIRST_TOKEN_TIMEOUT"),
            "{error}"
        );
        assert!(error.contains("not a duration"), "{error}");
        let env = Environment::from_vars([("TIDEWIRE_LLM_TOTAL_TIMEOUT", "0")]);
        let error = Config::load_with(Some(&file), env, Figment::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("llm_total_timeout must be more than 0"),
            "{error}"
        );
        let env = Environment::from_vars([("TIDEWIRE_LLM_IDLE_TIMEOUT", "5s")]);
        let error = Config::load_with(None, env, Figment::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("llm_url is not set"), "{error}");
    }

    #[test]
    fn text_options_stay_text_and_numbers_read_as_numbers() {
        let env = Environment::from_vars([
            ("TIDEWIRE_LLM_URL", "http://127.0.0.1:11434/v1"),
            ("TIDEWIRE_LLM_MODEL", "7"),
            ("TIDEWIRE_LLM_API_KEY", "12345"),
            ("TIDEWIRE_SYSTEM_PROMPT", "[be brief]"),
            ("TIDEWIRE_DEFAULT_TOKENS_PER_SECOND", "30.1"),
            ("TIDEWIRE_DEFAULT_MAX_TOKENS", "65"),
        ]);
        let config = Config::load_with(None, env, Figment::new()).unwrap();
        assert_eq!(config.llm_url.as_deref(), Some("http://127.0.0.1:11434/v1"));
        assert_eq!(config.llm_model.as_deref(), Some("7"));
        assert_eq!(
            config.llm_api_key.as_ref().unwrap().expose_secret(),
            "12345"
        );
        assert_eq!(config.llm.system_prompt.as_deref(), Some("[be brief]"));
        assert_eq!(config.default_tokens_per_second, 30.1);
        assert_eq!(config.default_max_tokens, Some(65));
    }

    #[test]
    fn the_system_prompt_of_a_later_layer_keeps_the_llm_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prompt.toml");
        std::fs::write(
            &file,
            "[llm]\nsystem_prompt = \"from the file\"\nhistory_messages = 3\n",
        )
        .unwrap();
        let config = load(Some(&file)).unwrap();
        assert_eq!(config.llm.system_prompt.as_deref(), Some("from the file"));
        let env = Environment::from_vars([("TIDEWIRE_SYSTEM_PROMPT", "from the environment")]);
        let config = Config::load_with(Some(&file), env, Figment::new()).unwrap();
        assert_eq!(
            config.llm.system_prompt.as_deref(),
            Some("from the environment")
        );
        assert_eq!(config.llm.history_messages, 3);
        let config = Config::load_with(
            Some(&file),
            no_env(),
            flags(&[("system_prompt", "from a flag")]),
        )
        .unwrap();
        assert_eq!(config.llm.system_prompt.as_deref(), Some("from a flag"));
    }

    #[test]
    fn named_backends_load_and_keys_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("llm.toml");
        std::fs::write(
            &file,
            "[llm]\ndefault = \"local\"\nfallback = [\"cloud\"]\nsystem_prompt = \"Be brief.\"\n\
             [llm.backends.local]\nkind = \"ollama\"\nurl = \"http://127.0.0.1:11434\"\nmodel = \"llama3.2\"\n\
             [llm.backends.cloud]\nkind = \"openai\"\nurl = \"https://api.example.com/v1\"\nmodel = \"m\"\napi_key = \"sk-secret\"\nfirst_token_timeout = \"20s\"\n",
        )
        .unwrap();
        let env = Environment::from_vars([("TIDEWIRE_LLM_API_KEY", "sk-env-secret")]);
        let config = Config::load_with(Some(&file), env, Figment::new()).unwrap();
        assert_eq!(config.llm.default, "local");
        let cloud = &config.llm.backends["cloud"];
        assert_eq!(cloud.api_key.as_ref().unwrap().expose_secret(), "sk-secret");
        assert_eq!(
            cloud.first_token_timeout,
            Some(Span(Duration::from_secs(20)))
        );
        let shown = format!("{config:?}\n{}", config.to_toml());
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(!shown.contains("sk-env-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));

        std::fs::write(&file, "[llm]\ndefault = \"nope\"\n").unwrap();
        assert!(load(Some(&file)).is_err());
        let url_without_model = flags(&[("llm_url", "http://127.0.0.1:1/v1")]);
        let error = Config::load_with(None, no_env(), url_without_model)
            .unwrap_err()
            .to_string();
        assert!(error.contains("TIDEWIRE_LLM_MODEL"), "{error}");
    }

    #[test]
    fn the_effective_config_renders_as_toml_that_loads_back() {
        let config = Config {
            cancel_after_idle: Some(Duration::from_secs(90)),
            max_finished_bytes: 3 * 1024 * 1024,
            ..Config::default()
        };
        for config in [Config::default(), config] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("round.toml");
            std::fs::write(&file, config.to_toml()).unwrap();
            assert_eq!(load(Some(&file)).unwrap(), config);
        }
        let shown = Config::default().to_toml();
        assert!(shown.contains("keepalive = \"15s\""), "{shown}");
        assert!(shown.contains("cancel_after_idle = \"off\""), "{shown}");
        assert!(shown.contains("max_message_bytes = 32768"), "{shown}");
    }
}
