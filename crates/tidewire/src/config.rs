//! Configuration in layers: built-in defaults, then a TOML file, then `TIDEWIRE_*`
//! environment variables, then command-line flags; each layer overrides the one before.
//!
//! [`ConfigLayer`] is one layer: every option optional, readable from TOML and (through
//! clap) from flags and the environment. [`Config`] is the result the server runs with.

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
    /// Largest accepted `options.max_tokens`.
    pub max_tokens_limit: u32,
    /// `options.max_tokens` when the request gives none.
    pub default_max_tokens: u32,
    /// `options.tokens_per_second` of the synthetic backend when the request gives none.
    pub default_tokens_per_second: f64,
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
            max_tokens_limit: 8192,
            default_max_tokens: 64,
            default_tokens_per_second: 30.0,
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
    /// Largest accepted options.max_tokens [default: 8192].
    #[arg(long, env = "TIDEWIRE_MAX_TOKENS_LIMIT")]
    pub max_tokens_limit: Option<u32>,
    /// options.max_tokens when a request gives none [default: 64].
    #[arg(long, env = "TIDEWIRE_DEFAULT_MAX_TOKENS")]
    pub default_max_tokens: Option<u32>,
    /// Synthetic backend pace when a request gives none; 0 = as fast as possible [default: 30].
    #[arg(long, env = "TIDEWIRE_DEFAULT_TOKENS_PER_SECOND")]
    pub default_tokens_per_second: Option<f64>,
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
        set(&mut self.max_tokens_limit, &layer.max_tokens_limit);
        set(&mut self.default_max_tokens, &layer.default_max_tokens);
        set(
            &mut self.default_tokens_per_second,
            &layer.default_tokens_per_second,
        );
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
        if !self.default_tokens_per_second.is_finite() || self.default_tokens_per_second < 0.0 {
            return invalid("default_tokens_per_second must be 0 or more");
        }
        if self.max_message_bytes > self.max_body_bytes {
            return invalid("max_message_bytes must not exceed max_body_bytes");
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
