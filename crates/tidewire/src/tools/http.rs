//! HTTP tools: the model's arguments POSTed as JSON to a configured URL; the JSON
//! that comes back is the result.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError};
use crate::config::{HttpToolConfig, expand_env};
use crate::llm::ToolSpec;

/// The most of a response read: results over `tools.max_result_bytes` are
/// refused later anyway, and this keeps an endless body from holding memory.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// A tool behind an HTTP endpoint.
pub struct HttpTool {
    spec: ToolSpec,
    url: String,
    headers: HeaderMap,
    timeout: Option<Duration>,
    http: reqwest::Client,
}

impl std::fmt::Debug for HttpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the headers: they hold secrets.
        f.debug_struct("HttpTool")
            .field("name", &self.spec.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl HttpTool {
    /// The tool of one `[[tools.http]]` entry, its headers read from the
    /// environment where they say `${NAME}`.
    pub fn from_config(config: &HttpToolConfig) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let value = expand_env(value)
                .map_err(|error| format!("tools.http {:?}, header {name}: {error}", config.name))?;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!(
                    "tools.http {:?}: {name:?} is not a header name",
                    config.name
                )
            })?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                format!(
                    "tools.http {:?}: the value of header {name} is not valid in a header",
                    config.name
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| format!("tools.http {:?}: {error}", config.name))?;
        Ok(Self {
            spec: ToolSpec {
                name: config.name.clone(),
                description: config.description.clone(),
                parameters: config
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object"})),
            },
            url: config.url.clone(),
            headers,
            timeout: config.timeout.map(|span| span.0),
            http,
        })
    }
}

#[async_trait]
impl Tool for HttpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn call(&self, arguments: Value, _: &ToolContext) -> Result<Value, ToolError> {
        let response = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .json(&arguments)
            .send()
            .await
            .map_err(|error| {
                tracing::warn!(tool = %self.spec.name, %error, "an HTTP tool could not be reached");
                ToolError::new("tool_unreachable", "the tool's server could not be reached")
            })?;
        let status = response.status();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|_| {
                ToolError::new("tool_broken", "the tool's answer broke off before its end")
            })?;
            if body.len() + piece.len() > MAX_RESPONSE_BYTES {
                return Err(ToolError::new(
                    "result_too_large",
                    format!("the tool's answer is over {MAX_RESPONSE_BYTES} bytes"),
                ));
            }
            body.extend_from_slice(&piece);
        }
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let start: String = text.chars().take(300).collect();
            return Err(ToolError::new(
                "tool_failed",
                format!("the tool answered HTTP {}: {start}", status.as_u16()),
            ));
        }
        // A tool that answers with text gets it passed on as a string.
        Ok(serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(text.into_owned())))
    }
}
