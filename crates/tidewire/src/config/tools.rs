//! The `[tools]` table: the tools a model may call, where they come from, and the
//! limits of the tool loop.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Span, bytes, duration};

/// The `[tools]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// The most rounds of tool calls in one answer; then the model must answer.
    pub max_rounds: u32,
    /// How long one call may take, unless the tool sets its own.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// The largest result given back to the model (and streamed), in bytes; a
    /// larger one is an error result.
    #[serde(with = "bytes")]
    pub max_result_bytes: usize,
    /// Offer the built-in `search_documents` (the pipeline's retrieval) to models.
    pub search_documents: bool,
    /// HTTP tools: tidewire POSTs the arguments as JSON to `url`.
    pub http: Vec<HttpToolConfig>,
    /// MCP servers whose tools models may call.
    pub mcp: Vec<McpServerConfig>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            max_rounds: 8,
            timeout: Duration::from_secs(30),
            max_result_bytes: 64 * 1024,
            search_documents: false,
            http: Vec::new(),
            mcp: Vec::new(),
        }
    }
}

/// One `[[tools.http]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolConfig {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: String,
    /// The JSON schema of its arguments [default: any object].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// Where the arguments are POSTed.
    pub url: String,
    /// Headers sent with each call; `${NAME}` is replaced by the environment
    /// variable `NAME` at start, so secrets stay out of the file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How long a call may take [default: `tools.timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
}

/// One `[[tools.mcp]]` entry: a server started as a command (stdio) or reached at
/// a URL (streamable HTTP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// A name for logs and `GET /api/tools`.
    pub name: String,
    /// The program to start; it speaks MCP on its stdin and stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables set for it (`${NAME}` expanded as in headers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The URL of a server reached over streamable HTTP, instead of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Headers sent to a `url` server (`${NAME}` expanded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Only these of its tools are offered [default: all].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// How long a call may take [default: `tools.timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
}

impl ToolsConfig {
    /// Checks the table: names that models can use, one source per server, no name
    /// twice among the fixed tools.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("tools.timeout must be more than 0".into());
        }
        if self.max_result_bytes < 64 {
            return Err("tools.max_result_bytes must be at least 64".into());
        }
        let mut names: Vec<&str> = Vec::new();
        if self.search_documents {
            names.push(crate::tools::SEARCH_DOCUMENTS);
        }
        for tool in &self.http {
            check_name(&tool.name, "tools.http")?;
            if names.contains(&tool.name.as_str()) {
                return Err(format!(
                    "tools.http: the name {:?} is used twice",
                    tool.name
                ));
            }
            names.push(&tool.name);
            if !(tool.url.starts_with("http://") || tool.url.starts_with("https://")) {
                return Err(format!(
                    "tools.http {:?}: url must start with http:// or https://",
                    tool.name
                ));
            }
            if let Some(parameters) = &tool.parameters
                && parameters.get("type").and_then(|t| t.as_str()) != Some("object")
            {
                return Err(format!(
                    "tools.http {:?}: parameters must be a JSON schema of type \"object\"",
                    tool.name
                ));
            }
        }
        let mut servers: Vec<&str> = Vec::new();
        for server in &self.mcp {
            if server.name.trim().is_empty() {
                return Err("tools.mcp: every server needs a name".into());
            }
            if servers.contains(&server.name.as_str()) {
                return Err(format!(
                    "tools.mcp: the name {:?} is used twice",
                    server.name
                ));
            }
            servers.push(&server.name);
            match (&server.command, &server.url) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "tools.mcp {:?}: give either command (a server started here) or url \
                         (a server reached over HTTP)",
                        server.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A tool name as the model APIs accept it: 1 to 64 of `a-z A-Z 0-9 _ -`.
fn check_name(name: &str, table: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{table}: the name {name:?} must be 1 to 64 letters, digits, _ or -"
        ))
    }
}

/// Replaces each `${NAME}` in `text` with the environment variable `NAME`; a
/// variable that is not set is an error (a missing secret should stop the start,
/// not send an empty header).
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("{text:?} has a ${{ without its }}"));
        };
        let name = &after[..end];
        let value = std::env::var(name)
            .map_err(|_| format!("the environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_are_expanded_and_a_missing_one_is_an_error() {
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(
            expand_env("Bearer ${PATH}!").as_deref(),
            Ok(format!("Bearer {path}!").as_str())
        );
        assert_eq!(expand_env("plain").as_deref(), Ok("plain"));
        assert!(
            expand_env("${TIDEWIRE_SURELY_NOT_SET_ANYWHERE}")
                .unwrap_err()
                .contains("TIDEWIRE_SURELY_NOT_SET_ANYWHERE")
        );
        assert!(expand_env("${OPEN").is_err());
    }

    #[test]
    fn a_server_needs_exactly_one_of_command_and_url() {
        let mut config = ToolsConfig::default();
        config.mcp.push(McpServerConfig {
            name: "both".into(),
            command: Some("x".into()),
            args: Vec::new(),
            env: BTreeMap::new(),
            url: Some("http://127.0.0.1:1".into()),
            headers: BTreeMap::new(),
            tools: None,
            timeout: None,
        });
        assert!(config.validate().unwrap_err().contains("either command"));
    }
}
