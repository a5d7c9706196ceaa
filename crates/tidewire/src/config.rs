//! Configuration in layers: built-in defaults, then a TOML file, then `TIDEWIRE_*`
//! environment variables, then command-line flags; each layer overrides the one before.
//!
//! [`ConfigLayer`] is one layer: every option optional, readable from TOML and (through
//! clap) from flags and the environment. [`Config`] is the result the server runs with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// The configuration the server runs with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Directory of the SQLite database; created if missing.
    pub data_dir: PathBuf,
    /// `tracing` filter, as `RUST_LOG` (`info`, `tidewire=debug`, ...).
    pub log: String,
    /// Idle time after which a stream gets a keepalive comment.
    #[serde(with = "humantime_serde_compat")]
    pub keepalive: Duration,
    /// The reconnection delay suggested to clients with `retry:`.
    #[serde(with = "humantime_serde_compat")]
    pub retry: Duration,
    /// How long a finished run stays attachable.
    #[serde(with = "humantime_serde_compat")]
    pub retention: Duration,
    /// How often the partial answer of a running run is written to the store.
    #[serde(with = "humantime_serde_compat")]
    pub flush_interval: Duration,
    /// Cancel a run that has had no subscriber for this long; `None` lets runs finish.
    #[serde(with = "humantime_serde_compat::option")]
    pub cancel_after_idle: Option<Duration>,
    /// On shutdown, how long running runs may take to finish before they are interrupted.
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
    /// Largest accepted `message`, in bytes.
    pub max_message_bytes: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most runs generating at once; more are refused with 503.
    pub max_concurrent_runs: usize,
    /// Most finished runs kept in memory for re-attaching; the oldest go first.
    pub max_finished_runs: usize,
    /// Most bytes of finished runs kept in memory; the oldest go first.
    pub max_finished_bytes: usize,
    /// The largest event log of one run; a run over it fails.
    pub max_run_bytes: usize,
    /// Largest accepted `options.max_tokens`.
    pub max_tokens_limit: u32,
    /// `options.max_tokens` when the request gives none.
    pub default_max_tokens: u32,
    /// `options.tokens_per_second` of the synthetic backend when the request gives none.
    pub default_tokens_per_second: f64,
    /// One OpenAI-compatible backend, named `default` and used by default, from
    /// `TIDEWIRE_LLM_URL` (with `TIDEWIRE_LLM_MODEL` and `TIDEWIRE_LLM_API_KEY`).
    pub llm_url: Option<String>,
    /// The model of `llm_url`.
    pub llm_model: Option<String>,
    /// The API key of `llm_url`.
    pub llm_api_key: Option<Secret>,
    /// Model backends, history and system prompt.
    pub llm: LlmConfig,
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
    /// The backends, by name (`synthetic` always exists).
    pub backends: BTreeMap<String, BackendConfig>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            default: "synthetic".into(),
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
    #[serde(
        default,
        deserialize_with = "de_from_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<Span>,
    /// From the request to the first token [default: 60s].
    #[serde(
        default,
        deserialize_with = "de_from_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub first_token_timeout: Option<Span>,
    /// Between two pieces of the stream [default: 30s].
    #[serde(
        default,
        deserialize_with = "de_from_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Span>,
    /// For the whole answer [default: 10m].
    #[serde(
        default,
        deserialize_with = "de_from_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_timeout: Option<Span>,
}

/// A credential: shown as `<redacted>` in every debug print and rendering.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("tidewire-data"),
            log: "info".into(),
            keepalive: Duration::from_secs(15),
            retry: Duration::from_secs(1),
            retention: Duration::from_secs(600),
            flush_interval: Duration::from_millis(250),
            cancel_after_idle: None,
            drain_timeout: Duration::from_secs(30),
            max_message_bytes: 32 * 1024,
            max_body_bytes: 256 * 1024,
            max_concurrent_runs: 20_000,
            max_finished_runs: 10_000,
            max_finished_bytes: 256 * 1024 * 1024,
            max_run_bytes: 16 * 1024 * 1024,
            max_tokens_limit: 8192,
            default_max_tokens: 64,
            default_tokens_per_second: 30.0,
            llm_url: None,
            llm_model: None,
            llm_api_key: None,
            llm: LlmConfig::default(),
        }
    }
}

/// One layer of configuration: a TOML file, or the environment and flags.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TIDEWIRE_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Directory of the SQLite database, created if missing [default: ./tidewire-data].
    #[arg(long, env = "TIDEWIRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter, as RUST_LOG [default: info].
    #[arg(long, env = "TIDEWIRE_LOG")]
    pub log: Option<String>,
    /// Keepalive comment interval on idle streams [default: 15s].
    #[arg(long, env = "TIDEWIRE_KEEPALIVE")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub keepalive: Option<Span>,
    /// Reconnection delay suggested to clients with `retry:` [default: 1s].
    #[arg(long, env = "TIDEWIRE_RETRY")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub retry: Option<Span>,
    /// How long a finished run stays attachable [default: 10m].
    #[arg(long, env = "TIDEWIRE_RETENTION")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub retention: Option<Span>,
    /// How often a running answer is written to the store [default: 250ms].
    #[arg(long, env = "TIDEWIRE_FLUSH_INTERVAL")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub flush_interval: Option<Span>,
    /// Cancel a run with no subscriber for this long; `off` to let it finish [default: off].
    #[arg(long, env = "TIDEWIRE_CANCEL_AFTER_IDLE")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub cancel_after_idle: Option<Span>,
    /// On shutdown, how long runs may take to finish [default: 30s].
    #[arg(long, env = "TIDEWIRE_DRAIN_TIMEOUT")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub drain_timeout: Option<Span>,
    /// Largest accepted message, in bytes (`32KiB` form accepted) [default: 32KiB].
    #[arg(long, env = "TIDEWIRE_MAX_MESSAGE_BYTES")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub max_message_bytes: Option<ByteSize>,
    /// Largest accepted request body, in bytes [default: 256KiB].
    #[arg(long, env = "TIDEWIRE_MAX_BODY_BYTES")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub max_body_bytes: Option<ByteSize>,
    /// Most runs generating at once [default: 20000].
    #[arg(long, env = "TIDEWIRE_MAX_CONCURRENT_RUNS")]
    pub max_concurrent_runs: Option<usize>,
    /// Most finished runs kept in memory for re-attaching [default: 10000].
    #[arg(long, env = "TIDEWIRE_MAX_FINISHED_RUNS")]
    pub max_finished_runs: Option<usize>,
    /// Most bytes of finished runs kept in memory [default: 256MiB].
    #[arg(long, env = "TIDEWIRE_MAX_FINISHED_BYTES")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub max_finished_bytes: Option<ByteSize>,
    /// The largest event log of one run; a run over it fails [default: 16MiB].
    #[arg(long, env = "TIDEWIRE_MAX_RUN_BYTES")]
    #[serde(default, deserialize_with = "de_from_str")]
    pub max_run_bytes: Option<ByteSize>,
    /// Largest accepted options.max_tokens [default: 8192].
    #[arg(long, env = "TIDEWIRE_MAX_TOKENS_LIMIT")]
    pub max_tokens_limit: Option<u32>,
    /// options.max_tokens when a request gives none [default: 64].
    #[arg(long, env = "TIDEWIRE_DEFAULT_MAX_TOKENS")]
    pub default_max_tokens: Option<u32>,
    /// Synthetic backend pace when a request gives none; 0 = as fast as possible [default: 30].
    #[arg(long, env = "TIDEWIRE_DEFAULT_TOKENS_PER_SECOND")]
    pub default_tokens_per_second: Option<f64>,
    /// An OpenAI-compatible base URL (such as http://127.0.0.1:11434/v1); with it,
    /// requests go to that model by default.
    #[arg(long, env = "TIDEWIRE_LLM_URL")]
    pub llm_url: Option<String>,
    /// The model to ask for at --llm-url.
    #[arg(long, env = "TIDEWIRE_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// The API key for --llm-url (never logged or shown).
    #[arg(long, env = "TIDEWIRE_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<Secret>,
    /// Instructions sent first with every question.
    #[arg(long, env = "TIDEWIRE_SYSTEM_PROMPT")]
    pub system_prompt: Option<String>,
    /// Named backends, fallback order and history limits (TOML only: the [llm] table).
    #[arg(skip)]
    #[serde(default)]
    pub llm: Option<LlmConfig>,
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
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        source: Box<toml::de::Error>,
    },
    /// A value is out of its range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the TOML file if given, then `overrides` (environment and flags).
    pub fn load(file: Option<&Path>, overrides: &ConfigLayer) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let layer: ConfigLayer =
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?;
            config.apply(&layer);
        }
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Overrides every option `layer` sets.
    pub fn apply(&mut self, layer: &ConfigLayer) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        set(&mut self.addr, &layer.addr);
        set(&mut self.data_dir, &layer.data_dir);
        set(&mut self.log, &layer.log);
        let span = |value: &Option<Span>| value.map(|span| span.0);
        set(&mut self.keepalive, &span(&layer.keepalive));
        set(&mut self.retry, &span(&layer.retry));
        set(&mut self.retention, &span(&layer.retention));
        set(&mut self.flush_interval, &span(&layer.flush_interval));
        if let Some(idle) = layer.cancel_after_idle {
            self.cancel_after_idle = (!idle.0.is_zero()).then_some(idle.0);
        }
        set(&mut self.drain_timeout, &span(&layer.drain_timeout));
        set(
            &mut self.max_message_bytes,
            &layer.max_message_bytes.map(|b| b.0),
        );
        set(&mut self.max_body_bytes, &layer.max_body_bytes.map(|b| b.0));
        set(&mut self.max_concurrent_runs, &layer.max_concurrent_runs);
        set(&mut self.max_finished_runs, &layer.max_finished_runs);
        set(
            &mut self.max_finished_bytes,
            &layer.max_finished_bytes.map(|b| b.0),
        );
        set(&mut self.max_run_bytes, &layer.max_run_bytes.map(|b| b.0));
        set(&mut self.max_tokens_limit, &layer.max_tokens_limit);
        set(&mut self.default_max_tokens, &layer.default_max_tokens);
        set(
            &mut self.default_tokens_per_second,
            &layer.default_tokens_per_second,
        );
        if let Some(llm) = &layer.llm {
            self.llm = llm.clone();
        }
        if layer.system_prompt.is_some() {
            self.llm.system_prompt.clone_from(&layer.system_prompt);
        }
        if layer.llm_url.is_some() {
            self.llm_url.clone_from(&layer.llm_url);
        }
        if layer.llm_model.is_some() {
            self.llm_model.clone_from(&layer.llm_model);
        }
        if layer.llm_api_key.is_some() {
            self.llm_api_key.clone_from(&layer.llm_api_key);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if self.keepalive.is_zero() {
            return invalid("keepalive must be more than 0");
        }
        if self.flush_interval.is_zero() {
            return invalid("flush_interval must be more than 0");
        }
        if self.max_concurrent_runs == 0 {
            return invalid("max_concurrent_runs must be at least 1");
        }
        if self.default_max_tokens == 0 || self.default_max_tokens > self.max_tokens_limit {
            return invalid("default_max_tokens must be from 1 to max_tokens_limit");
        }
        if !crate::pipeline::valid_pace(self.default_tokens_per_second) {
            return invalid(&format!(
                "default_tokens_per_second must be 0 or from {} to {}",
                crate::pipeline::MIN_TOKENS_PER_SECOND,
                crate::pipeline::MAX_TOKENS_PER_SECOND
            ));
        }
        if self.max_finished_runs == 0 || self.max_finished_bytes == 0 {
            return invalid("max_finished_runs and max_finished_bytes must be at least 1");
        }
        if self.max_run_bytes < 64 * 1024 {
            return invalid("max_run_bytes must be at least 64KiB");
        }
        if self.max_message_bytes > self.max_body_bytes {
            return invalid("max_message_bytes must not exceed max_body_bytes");
        }
        if self.llm_url.is_some() && self.llm_model.is_none() {
            return invalid("TIDEWIRE_LLM_URL (llm_url) needs TIDEWIRE_LLM_MODEL (llm_model)");
        }
        for (name, backend) in &self.llm.backends {
            if backend.kind != BackendKind::Synthetic
                && (backend.url.is_none() || backend.model.is_none())
            {
                return Err(ConfigError::Invalid(format!(
                    "backend {name:?} needs a url and a model"
                )));
            }
        }
        let known = |name: &str| {
            name == "synthetic"
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

    /// The configuration as TOML, durations in the `15s` form.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }
}

/// A duration written as `15s`, `250ms`, `10m`, a bare number of seconds, or `off`
/// (zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        humantime_serde_compat::serialize(&self.0, serializer)
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "off" {
            return Ok(Self(Duration::ZERO));
        }
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(Self(Duration::from_secs(seconds)));
        }
        humantime::parse_duration(text)
            .map(Self)
            .map_err(|error| format!("{text:?} is not a duration like 15s or 250ms: {error}"))
    }
}

/// A size in bytes written as `32768`, `32KiB` or `1MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let factor = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1024,
            "m" | "mb" | "mib" => 1024 * 1024,
            _ => return Err(format!("{text:?} is not a size like 32768 or 32KiB")),
        };
        digits
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .map(Self)
            .ok_or_else(|| format!("{text:?} is not a size like 32768 or 32KiB"))
    }
}

/// Reads a value written as a string or, in TOML, as a bare number.
fn de_from_str<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }
    let text = match Raw::deserialize(deserializer)? {
        Raw::Text(text) => text,
        Raw::Number(n) => n.to_string(),
    };
    T::from_str(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Writes durations in the humantime form (`15s`), as they are read.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub mod option {
        use std::time::Duration;

        use serde::Serializer;

        pub fn serialize<S: Serializer>(
            value: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => super::serialize(value, serializer),
                None => serializer.serialize_str("off"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_override_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tidewire.toml");
        std::fs::write(
            &file,
            "addr = \"127.0.0.1:9000\"\nkeepalive = \"5s\"\nretention = 60\ncancel_after_idle = \"2m\"\nmax_message_bytes = \"4KiB\"\n",
        )
        .unwrap();
        let overrides = ConfigLayer {
            keepalive: Some(Span(Duration::from_secs(7))),
            ..ConfigLayer::default()
        };
        let config = Config::load(Some(&file), &overrides).unwrap();
        assert_eq!(config.addr, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(config.keepalive, Duration::from_secs(7));
        assert_eq!(config.retention, Duration::from_secs(60));
        assert_eq!(config.cancel_after_idle, Some(Duration::from_secs(120)));
        assert_eq!(config.max_message_bytes, 4096);
        assert_eq!(config.flush_interval, Duration::from_millis(250));
    }

    #[test]
    fn off_turns_cancel_after_idle_off() {
        let mut config = Config {
            cancel_after_idle: Some(Duration::from_secs(1)),
            ..Config::default()
        };
        config.apply(&ConfigLayer {
            cancel_after_idle: Some("off".parse().unwrap()),
            ..ConfigLayer::default()
        });
        assert_eq!(config.cancel_after_idle, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "keepalve = \"5s\"\n").unwrap();
        let error = Config::load(Some(&file), &ConfigLayer::default()).unwrap_err();
        assert!(error.to_string().contains("keepalve"), "{error}");
        std::fs::write(&file, "keepalive = \"soon\"\n").unwrap();
        let error = Config::load(Some(&file), &ConfigLayer::default()).unwrap_err();
        assert!(error.to_string().contains("not a duration"), "{error}");
    }

    #[test]
    fn sizes_and_spans_parse() {
        assert_eq!("32KiB".parse::<ByteSize>().unwrap().0, 32 * 1024);
        assert_eq!("1 MiB".parse::<ByteSize>().unwrap().0, 1024 * 1024);
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(
            "250ms".parse::<Span>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!("off".parse::<Span>().unwrap().0, Duration::ZERO);
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
        let config = Config::load(Some(&file), &ConfigLayer::default()).unwrap();
        assert_eq!(config.llm.default, "local");
        let cloud = &config.llm.backends["cloud"];
        assert_eq!(cloud.api_key.as_ref().unwrap().expose(), "sk-secret");
        assert_eq!(
            cloud.first_token_timeout,
            Some(Span(Duration::from_secs(20)))
        );
        let shown = format!("{config:?}\n{}", config.to_toml());
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));

        std::fs::write(&file, "[llm]\ndefault = \"nope\"\n").unwrap();
        assert!(Config::load(Some(&file), &ConfigLayer::default()).is_err());
        let url_without_model = ConfigLayer {
            llm_url: Some("http://127.0.0.1:1/v1".into()),
            ..ConfigLayer::default()
        };
        assert!(Config::load(None, &url_without_model).is_err());
    }

    #[test]
    fn the_effective_config_renders_as_toml_that_loads_back() {
        let config = Config::default();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("round.toml");
        std::fs::write(&file, config.to_toml()).unwrap();
        assert_eq!(
            Config::load(Some(&file), &ConfigLayer::default()).unwrap(),
            config
        );
    }
}
