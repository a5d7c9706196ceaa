//! [`Backends`]: the configured model backends by name, and the failover chain of a
//! request (the chosen backend, then the fallback list).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{
    Backend, Extractive, Failover, Ollama, OpenAi, Service, ServiceShape, Synthetic, Timeouts,
};
use crate::config::{BackendConfig, BackendKind, Config, ExposeSecret, Span};

/// The first retry of a failed upstream request waits this long (then doubles).
const BACKOFF: Duration = Duration::from_millis(200);

/// A request named a backend that is not configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no backend named {name:?} is configured; the configured ones are {}", known.join(", "))]
pub struct UnknownBackend {
    /// The name asked for.
    pub name: String,
    /// The names there are.
    pub known: Vec<String>,
}

/// The configured backends.
pub struct Backends {
    named: BTreeMap<String, Arc<dyn Backend>>,
    default: String,
    fallback: Vec<String>,
    attempts: u32,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("names", &self.named.keys().collect::<Vec<_>>())
            .field("default", &self.default)
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl Backends {
    /// The backends of the configuration: `synthetic` always, every `[llm.backends]`
    /// entry, and with `llm_url` one named `default` (with the `llm_*_timeout`
    /// options), which is then the default.
    pub fn from_config(config: &Config) -> Result<Self, reqwest::Error> {
        let mut named: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
        named.insert("synthetic".into(), Arc::new(Synthetic));
        named.insert("extractive".into(), Arc::new(Extractive));
        for (name, backend) in &config.llm.backends {
            named.insert(name.clone(), build(backend)?);
        }
        let mut default = config.llm.default.clone();
        if let (Some(url), Some(model)) = (&config.llm_url, &config.llm_model) {
            let key = config
                .llm_api_key
                .as_ref()
                .map(|key| key.expose_secret().to_owned());
            let defaults = Timeouts::default();
            let timeouts = Timeouts {
                first_token: span(config.llm_first_token_timeout, defaults.first_token),
                idle: span(config.llm_idle_timeout, defaults.idle),
                total: span(config.llm_total_timeout, defaults.total),
                ..defaults
            };
            named.insert(
                "default".into(),
                Arc::new(OpenAi::new(url, model, key, timeouts)?),
            );
            default = "default".into();
        }
        Ok(Self {
            named,
            default,
            fallback: config.llm.fallback.clone(),
            attempts: config.llm.attempts,
            metrics: None,
        })
    }

    /// Only the synthetic backend.
    pub fn synthetic() -> Self {
        Self {
            named: BTreeMap::from([(
                "synthetic".to_owned(),
                Arc::new(Synthetic) as Arc<dyn Backend>,
            )]),
            default: "synthetic".into(),
            fallback: Vec::new(),
            attempts: 1,
            metrics: None,
        }
    }

    /// The names of the configured backends, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.keys().map(String::as_str)
    }

    /// The backends, counting their retries and fallbacks into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics.enabled().then_some(metrics);
        self
    }

    /// The name of the default backend.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The configured backends that have a server, by name, with its URL.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.named
            .iter()
            .filter_map(|(name, backend)| Some((name.clone(), backend.endpoint()?.to_owned())))
            .collect()
    }

    /// The backend for a request: `name` (or the default), then the fallback list.
    pub fn select(&self, name: Option<&str>) -> Result<Arc<dyn Backend>, UnknownBackend> {
        let name = name.unwrap_or(&self.default);
        let first = self.named.get(name).ok_or_else(|| UnknownBackend {
            name: name.to_owned(),
            known: self.named.keys().cloned().collect(),
        })?;
        let mut chain = vec![Arc::clone(first)];
        for other in self.fallback.iter().filter(|other| *other != name) {
            if let Some(backend) = self.named.get(other) {
                chain.push(Arc::clone(backend));
            }
        }
        let failover = Failover::new(chain, self.attempts, BACKOFF);
        Ok(Arc::new(match &self.metrics {
            Some(metrics) => failover.with_metrics(Arc::clone(metrics)),
            None => failover,
        }))
    }
}

/// A configured timeout, or its default.
fn span(value: Option<Span>, default: Duration) -> Duration {
    value.map_or(default, |span| span.0)
}

fn build(config: &BackendConfig) -> Result<Arc<dyn Backend>, reqwest::Error> {
    let defaults = Timeouts::default();
    let timeouts = Timeouts {
        connect: span(config.connect_timeout, defaults.connect),
        first_token: span(config.first_token_timeout, defaults.first_token),
        idle: span(config.idle_timeout, defaults.idle),
        total: span(config.total_timeout, defaults.total),
    };
    // Validation made sure remote kinds have both.
    let url = config.url.as_deref().unwrap_or_default();
    let model = config.model.as_deref().unwrap_or_default();
    Ok(match config.kind {
        BackendKind::Openai => {
            let key = config
                .api_key
                .as_ref()
                .map(|key| key.expose_secret().to_owned());
            Arc::new(OpenAi::new(url, model, key, timeouts)?)
        }
        BackendKind::Ollama => Arc::new(Ollama::new(url, model, timeouts)?),
        BackendKind::Synthetic => Arc::new(Synthetic),
        BackendKind::Extractive => Arc::new(Extractive),
        BackendKind::Service => {
            let defaults = ServiceShape::default();
            let shape = ServiceShape {
                // Validated as JSON with the configuration.
                body: config
                    .request_body
                    .as_deref()
                    .and_then(|body| serde_json::from_str(body).ok())
                    .unwrap_or(defaults.body),
                answer: config.answer_path.clone().unwrap_or(defaults.answer),
                confidence: config.confidence_path.clone().or(defaults.confidence),
                sources: config.sources_path.clone().or(defaults.sources),
            };
            let total = span(config.total_timeout, Duration::from_secs(30));
            let name = config.model.as_deref().unwrap_or("service");
            Arc::new(Service::new(name, url, shape, total, timeouts.connect)?)
        }
    })
}
