//! Tools a model may call while it answers: where they come from, and how one call
//! is checked and run.
//!
//! A [`Tool`] has a [`ToolSpec`] (what the model sees) and runs a call. They come
//! from the configuration only, never from a request:
//! - [`HttpTool`]: arguments POSTed as JSON to a configured URL;
//! - [`McpServers`]: the tools of MCP servers, started as commands (stdio) or
//!   reached over streamable HTTP, kept running and listed as they change;
//! - [`SearchDocuments`]: the pipeline's retrieval, so a model can search the
//!   ingested documents itself.
//!
//! The [`Toolbox`] holds them all; a run takes the [`ToolSet`] its request allows.
//! [`ToolSet::call`] checks a call (known tool, JSON arguments that match the
//! tool's schema), runs it within its timeout and bounds its result: every failure
//! becomes an error result for the model, never an error of the answer.

mod http;
mod mcp;
mod search;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

pub use http::HttpTool;
pub use mcp::{McpServers, ServerState, ServerStatus};
pub use search::{SEARCH_DOCUMENTS, SearchDocuments};

use crate::config::ToolsConfig;
use crate::llm::ToolSpec;
use crate::retrieval::{Retriever, Scope};

/// What a call knows of the run that makes it.
#[derive(Debug, Clone, Default)]
pub struct ToolContext {
    /// Where the run's retrieval searches (for `search_documents`).
    pub scope: Scope,
    /// Who asks.
    pub user: String,
}

/// Why a call failed: given to the model as `{"error": message, "code": code}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    /// A `snake_case` code.
    pub code: &'static str,
    /// What happened, for the model (and the person reading the stream).
    pub message: String,
}

impl ToolError {
    /// An error with this code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The result the model gets.
    pub fn to_result(&self) -> Value {
        json!({"error": self.message, "code": self.code})
    }
}

/// A tool a model may call.
#[async_trait]
pub trait Tool: Send + Sync + 'static {
    /// How the model sees it.
    fn spec(&self) -> &ToolSpec;

    /// Its own timeout, when configured (else the toolbox's).
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Runs one call with arguments already checked against the schema. Dropping
    /// the future abandons the call.
    async fn call(&self, arguments: Value, context: &ToolContext) -> Result<Value, ToolError>;
}

/// A tool with its compiled argument schema.
#[derive(Clone)]
pub struct Registered {
    tool: Arc<dyn Tool>,
    schema: Option<Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("name", &self.tool.spec().name)
            .finish_non_exhaustive()
    }
}

impl Registered {
    /// `tool`, with its schema compiled; a schema that does not compile is
    /// reported and leaves the arguments unchecked (the tool still checks them).
    pub fn new(tool: Arc<dyn Tool>) -> Self {
        let spec = tool.spec();
        let schema = match jsonschema::validator_for(&spec.parameters) {
            Ok(validator) => Some(Arc::new(validator)),
            Err(error) => {
                tracing::warn!(tool = %spec.name, %error, "the tool's schema does not compile; its arguments are not checked");
                None
            }
        };
        Self { tool, schema }
    }

    /// The tool's spec.
    pub fn spec(&self) -> &ToolSpec {
        self.tool.spec()
    }

    /// What is wrong with `arguments`, when anything is.
    fn check(&self, arguments: &Value) -> Option<String> {
        let schema = self.schema.as_ref()?;
        let problems: Vec<String> = schema
            .iter_errors(arguments)
            .take(5)
            .map(|error| {
                let at = error.instance_path().to_string();
                if at.is_empty() {
                    error.to_string()
                } else {
                    format!("{at}: {error}")
                }
            })
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// Settings of every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// The most rounds of calls in one answer.
    pub max_rounds: u32,
    /// A call's timeout, unless its tool sets one.
    pub timeout: Duration,
    /// The largest result, in bytes of JSON.
    pub max_result_bytes: usize,
}

/// Every configured tool.
pub struct Toolbox {
    fixed: Vec<Registered>,
    servers: McpServers,
    limits: CallLimits,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolbox")
            .field("fixed", &self.fixed)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A tool configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ToolSetupError(pub String);

impl Toolbox {
    /// No tools.
    pub fn empty() -> Self {
        Self {
            fixed: Vec::new(),
            servers: McpServers::none(),
            limits: CallLimits {
                max_rounds: 0,
                timeout: Duration::from_secs(30),
                max_result_bytes: 64 * 1024,
            },
        }
    }

    /// The tools of `config`: HTTP tools and `search_documents` at once; MCP
    /// servers are started in the background and their tools appear as they are
    /// listed.
    pub fn from_config(
        config: &ToolsConfig,
        retriever: Arc<dyn Retriever>,
    ) -> Result<Self, ToolSetupError> {
        let mut fixed = Vec::new();
        if config.search_documents {
            fixed.push(Registered::new(Arc::new(SearchDocuments::new(retriever))));
        }
        for tool in &config.http {
            let tool = HttpTool::from_config(tool).map_err(ToolSetupError)?;
            fixed.push(Registered::new(Arc::new(tool)));
        }
        let servers = McpServers::start(&config.mcp).map_err(ToolSetupError)?;
        Ok(Self {
            fixed,
            servers,
            limits: CallLimits {
                max_rounds: config.max_rounds,
                timeout: config.timeout,
                max_result_bytes: config.max_result_bytes,
            },
        })
    }

    /// The limits of calls.
    pub fn limits(&self) -> CallLimits {
        self.limits
    }

    /// Every tool available now, by name (a fixed tool wins over a server's tool
    /// of the same name, and the first server over later ones).
    pub fn available(&self) -> BTreeMap<String, Registered> {
        let mut tools = BTreeMap::new();
        for tool in self.fixed.iter().cloned().chain(self.servers.tools()) {
            tools.entry(tool.spec().name.clone()).or_insert(tool);
        }
        tools
    }

    /// The MCP servers and their state.
    pub fn servers(&self) -> Vec<ServerStatus> {
        self.servers.statuses()
    }

    /// The tools a run may use: all, or those of `allowed`. `Err` names an allowed
    /// tool that does not exist now.
    pub fn select(&self, allowed: Option<&[String]>) -> Result<ToolSet, String> {
        let mut available = self.available();
        let tools = match allowed {
            None => available.into_values().collect(),
            Some(names) => {
                let mut chosen = Vec::with_capacity(names.len());
                for name in names {
                    match available.remove(name) {
                        Some(tool) => chosen.push(tool),
                        None if chosen.iter().any(|t: &Registered| &t.spec().name == name) => {}
                        None => return Err(name.clone()),
                    }
                }
                chosen
            }
        };
        Ok(ToolSet {
            tools,
            limits: self.limits,
        })
    }

    /// Stops the MCP servers.
    pub async fn close(&self) {
        self.servers.close().await;
    }
}

/// The tools of one run.
#[derive(Debug, Clone)]
pub struct ToolSet {
    tools: Vec<Registered>,
    limits: CallLimits,
}

impl ToolSet {
    /// No tools.
    pub fn none() -> Self {
        Self {
            tools: Vec::new(),
            limits: Toolbox::empty().limits,
        }
    }

    /// Whether there is any tool to offer.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty() || self.limits.max_rounds == 0
    }

    /// The limits of calls.
    pub fn limits(&self) -> CallLimits {
        self.limits
    }

    /// The tools as the model sees them.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec().clone()).collect()
    }

    /// Runs a call the model asked for: `arguments` is the JSON text it wrote.
    /// Returns the arguments as read (for `tool_started`) and a future of the
    /// result; every failure is an `Err` result for the model.
    pub fn call(
        &self,
        name: &str,
        arguments: &str,
        context: &ToolContext,
    ) -> (
        Value,
        impl Future<Output = Result<Value, ToolError>> + Send + 'static,
    ) {
        let parsed = parse_arguments(arguments);
        let shown = match &parsed {
            Ok(value) => value.clone(),
            Err(_) => Value::String(arguments.to_owned()),
        };
        let tool = self.tools.iter().find(|t| t.spec().name == name).cloned();
        let limits = self.limits;
        let context = context.clone();
        let name = name.to_owned();
        let run = async move {
            let Some(tool) = tool else {
                return Err(ToolError::new(
                    "unknown_tool",
                    format!("there is no tool named {name:?}"),
                ));
            };
            let arguments = parsed?;
            if let Some(problems) = tool.check(&arguments) {
                return Err(ToolError::new(
                    "invalid_arguments",
                    format!("the arguments do not match the tool's schema: {problems}"),
                ));
            }
            let timeout = tool.tool.timeout().unwrap_or(limits.timeout);
            let result = tokio::time::timeout(timeout, tool.tool.call(arguments, &context))
                .await
                .map_err(|_| {
                    ToolError::new(
                        "tool_timeout",
                        format!(
                            "the tool did not answer within {}",
                            humantime::format_duration(timeout)
                        ),
                    )
                })??;
            bounded(result, limits.max_result_bytes)
        };
        (shown, run)
    }
}

/// The arguments the model wrote, as a JSON object (empty text is no arguments).
fn parse_arguments(text: &str) -> Result<Value, ToolError> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(ToolError::new(
            "invalid_arguments",
            "the arguments must be a JSON object",
        )),
        Err(error) => Err(ToolError::new(
            "invalid_arguments",
            format!("the arguments are not valid JSON: {error}"),
        )),
    }
}

/// `result`, unless its JSON is over `limit` bytes.
fn bounded(result: Value, limit: usize) -> Result<Value, ToolError> {
    let size = serde_json::to_vec(&result).map_or(0, |bytes| bytes.len());
    if size > limit {
        return Err(ToolError::new(
            "result_too_large",
            format!("the tool's result is {size} bytes, over the limit of {limit}"),
        ));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(ToolSpec);

    #[async_trait]
    impl Tool for Echo {
        fn spec(&self) -> &ToolSpec {
            &self.0
        }

        async fn call(&self, arguments: Value, _: &ToolContext) -> Result<Value, ToolError> {
            Ok(arguments)
        }
    }

    fn set(max_result_bytes: usize) -> ToolSet {
        let echo = Echo(ToolSpec {
            name: "echo".into(),
            description: "Says it back".into(),
            parameters: json!({"type": "object", "properties": {"text": {"type": "string"}},
                               "required": ["text"], "additionalProperties": false}),
        });
        ToolSet {
            tools: vec![Registered::new(Arc::new(echo))],
            limits: CallLimits {
                max_rounds: 8,
                timeout: Duration::from_secs(1),
                max_result_bytes,
            },
        }
    }

    async fn call(set: &ToolSet, name: &str, arguments: &str) -> Result<Value, ToolError> {
        set.call(name, arguments, &ToolContext::default()).1.await
    }

    #[tokio::test]
    async fn a_valid_call_runs_and_every_bad_one_is_an_error_result() {
        let tools = set(1024);
        assert_eq!(
            call(&tools, "echo", r#"{"text":"hi"}"#).await,
            Ok(json!({"text": "hi"}))
        );
        let code = |r: Result<Value, ToolError>| r.unwrap_err().code;
        assert_eq!(code(call(&tools, "nope", "{}").await), "unknown_tool");
        assert_eq!(
            code(call(&tools, "echo", "{\"text\":").await),
            "invalid_arguments"
        );
        assert_eq!(code(call(&tools, "echo", "[1]").await), "invalid_arguments");
        let wrong = call(&tools, "echo", r#"{"text": 5}"#).await.unwrap_err();
        assert_eq!(wrong.code, "invalid_arguments");
        assert!(wrong.message.contains("/text"), "{}", wrong.message);
        assert_eq!(code(call(&tools, "echo", "").await), "invalid_arguments");
        let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(2000));
        assert_eq!(code(call(&tools, "echo", &big).await), "result_too_large");
    }

    #[tokio::test]
    async fn unparsable_arguments_are_shown_as_the_text_the_model_wrote() {
        let tools = set(1024);
        let (shown, _) = tools.call("echo", "{oops", &ToolContext::default());
        assert_eq!(shown, json!("{oops"));
    }
}
