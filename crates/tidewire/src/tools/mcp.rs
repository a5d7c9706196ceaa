//! MCP servers: each configured server is started (a command speaking MCP on its
//! stdin and stdout) or reached (streamable HTTP) by a supervisor task that lists
//! its tools, lists them again when the server says they changed, and, when the
//! server dies or cannot be reached, marks its tools unavailable and starts it
//! again after a backoff. Built on `rmcp`, the official Rust SDK of the protocol.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceError, ServiceExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Registered, Tool, ToolContext, ToolError};
use crate::config::{McpServerConfig, expand_env};
use crate::llm::ToolSpec;

/// How long a server may take to start and answer `initialize` and `tools/list`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The first wait before starting a server again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait before starting a server again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A server that ran this long before it failed starts again after the first
/// backoff, not a long one.
const STABLE: Duration = Duration::from_secs(60);

/// Where a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Being started (or reached) and listed.
    Starting,
    /// Running; its tools are offered.
    Ready,
    /// Down; started again after a backoff. Its tools are not offered.
    Down,
    /// Stopped with the server.
    Stopped,
}

/// The state of one MCP server, for `GET /api/tools` and the logs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServerStatus {
    /// Its configured name.
    pub name: String,
    /// Where it is.
    pub state: ServerState,
    /// Its tools' names, while ready.
    pub tools: Vec<String>,
    /// How often it was started again after a failure.
    pub restarts: u32,
    /// The last failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What the supervisor of one server shares with the rest.
struct Shared {
    status: RwLock<ServerStatus>,
    tools: RwLock<Vec<Registered>>,
}

/// The configured MCP servers.
pub struct McpServers {
    servers: Vec<Arc<Shared>>,
    stop: CancellationToken,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for McpServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServers")
            .field("servers", &self.statuses())
            .finish_non_exhaustive()
    }
}

impl McpServers {
    /// No servers.
    pub fn none() -> Self {
        Self {
            servers: Vec::new(),
            stop: CancellationToken::new(),
            tasks: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Starts a supervisor for each server (in the background: the tools of a
    /// server appear once it is listed). `Err` for a configuration that cannot work
    /// (a header secret that is not set).
    pub fn start(configs: &[McpServerConfig]) -> Result<Self, String> {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut shared_all = Vec::new();
        for config in configs {
            let launch = Launch::from_config(config)?;
            let shared = Arc::new(Shared {
                status: RwLock::new(ServerStatus {
                    name: config.name.clone(),
                    state: ServerState::Starting,
                    tools: Vec::new(),
                    restarts: 0,
                    last_error: None,
                }),
                tools: RwLock::new(Vec::new()),
            });
            shared_all.push(Arc::clone(&shared));
            let supervisor = Supervisor {
                launch,
                shared,
                timeout: config.timeout.map(|span| span.0),
                only: config.tools.clone(),
                stop: stop.child_token(),
            };
            tasks.push(tokio::spawn(supervisor.run()));
        }
        Ok(Self {
            servers: shared_all,
            stop,
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    /// The tools of the servers that are ready.
    pub fn tools(&self) -> Vec<Registered> {
        self.servers
            .iter()
            .flat_map(|server| read(&server.tools).clone())
            .collect()
    }

    /// Every server's state.
    pub fn statuses(&self) -> Vec<ServerStatus> {
        self.servers
            .iter()
            .map(|server| read(&server.status).clone())
            .collect()
    }

    /// Stops every server (a started command gets its stdin closed, then is
    /// terminated).
    pub async fn close(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for McpServers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How to reach a server.
#[derive(Clone)]
enum Launch {
    Command {
        program: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    Http {
        url: String,
        headers: HashMap<axum::http::HeaderName, axum::http::HeaderValue>,
    },
}

impl Launch {
    fn from_config(config: &McpServerConfig) -> Result<Self, String> {
        let name = &config.name;
        if let Some(program) = &config.command {
            let mut env = Vec::new();
            for (key, value) in &config.env {
                let value =
                    expand_env(value).map_err(|e| format!("tools.mcp {name:?}, env {key}: {e}"))?;
                env.push((key.clone(), value));
            }
            return Ok(Self::Command {
                program: program.clone(),
                args: config.args.clone(),
                env,
            });
        }
        let url = config.url.clone().unwrap_or_default();
        if url.starts_with("https://") {
            return Err(format!(
                "tools.mcp {name:?}: https MCP servers are not supported yet; reach it \
                 through a local proxy, or start it as a command"
            ));
        }
        if !url.starts_with("http://") {
            return Err(format!("tools.mcp {name:?}: url must start with http://"));
        }
        let mut headers = HashMap::new();
        for (key, value) in &config.headers {
            let value =
                expand_env(value).map_err(|e| format!("tools.mcp {name:?}, header {key}: {e}"))?;
            let key = axum::http::HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("tools.mcp {name:?}: {key:?} is not a header name"))?;
            let mut value = axum::http::HeaderValue::from_str(&value).map_err(|_| {
                format!("tools.mcp {name:?}: the value of header {key} is not valid in a header")
            })?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        Ok(Self::Http { url, headers })
    }
}

/// The client side of one connection: hears when the server's tools change.
#[derive(Clone, Default)]
struct Listener {
    changed: Arc<Notify>,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.changed.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("tidewire", env!("CARGO_PKG_VERSION")),
        )
    }
}

type Connection = RunningService<RoleClient, Listener>;

/// Keeps one server running.
struct Supervisor {
    launch: Launch,
    shared: Arc<Shared>,
    timeout: Option<Duration>,
    only: Option<Vec<String>>,
    stop: CancellationToken,
}

impl Supervisor {
    fn name(&self) -> String {
        read(&self.shared.status).name.clone()
    }

    async fn run(self) {
        let name = self.name();
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.set_state(ServerState::Starting, None);
            let started = tokio::time::Instant::now();
            let failure = tokio::select! {
                () = self.stop.cancelled() => break,
                failure = self.serve() => failure,
            };
            // Its tools go at once: a call now would fail.
            write(&self.shared.tools).clear();
            if self.stop.is_cancelled() {
                break;
            }
            if started.elapsed() >= STABLE {
                backoff = FIRST_BACKOFF;
            }
            tracing::warn!(server = %name, error = %failure, retry_in = ?backoff, "an MCP server is down; its tools are unavailable");
            self.set_state(ServerState::Down, Some(failure));
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            write(&self.shared.status).restarts += 1;
        }
        write(&self.shared.tools).clear();
        self.set_state(ServerState::Stopped, None);
    }

    /// Connects, lists, and serves until the server goes away: returns why.
    async fn serve(&self) -> String {
        let listener = Listener::default();
        let changed = Arc::clone(&listener.changed);
        let connection = match tokio::time::timeout(START_TIMEOUT, self.connect(listener)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return error,
            Err(_) => return format!("it did not start within {START_TIMEOUT:?}"),
        };
        let peer = connection.peer().clone();
        // Cancelled by a call that finds this connection gone (an HTTP server does
        // not always close the session when it dies); one per connection, so a
        // failure seen on an old one cannot end a new one.
        let broken = CancellationToken::new();
        if let Err(error) = self.list(&peer, &broken).await {
            return error;
        }
        let ended = connection.waiting();
        tokio::pin!(ended);
        loop {
            tokio::select! {
                quit = &mut ended => return match quit {
                    Ok(reason) => format!("the connection ended ({reason:?})"),
                    Err(error) => format!("the connection failed: {error}"),
                },
                () = broken.cancelled() => {
                    return "a call found the server gone".to_owned();
                }
                () = changed.notified() => {
                    if let Err(error) = self.list(&peer, &broken).await {
                        return error;
                    }
                }
            }
        }
    }

    async fn connect(&self, listener: Listener) -> Result<Connection, String> {
        match &self.launch {
            Launch::Command { program, args, env } => {
                let mut command = tokio::process::Command::new(program);
                command
                    .args(args)
                    .envs(env.iter().cloned())
                    .kill_on_drop(true);
                let (transport, stderr) = TokioChildProcess::builder(command)
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|error| format!("cannot start {program}: {error}"))?;
                if let Some(stderr) = stderr {
                    tokio::spawn(log_stderr(self.name(), stderr));
                }
                listener
                    .serve(transport)
                    .await
                    .map_err(|error| format!("it did not initialize: {error}"))
            }
            Launch::Http { url, headers } => {
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                config.custom_headers = headers.clone();
                // A server that went away is this supervisor's to reach again, with
                // its backoff; the transport's own endless retries would hide it.
                config.retry_config =
                    Arc::new(rmcp::transport::common::client_side_sse::NeverRetry::default());
                let transport = StreamableHttpClientTransport::from_config(config);
                listener
                    .serve(transport)
                    .await
                    .map_err(|error| format!("cannot reach {url}: {error}"))
            }
        }
    }

    /// Lists the server's tools and offers them.
    async fn list(
        &self,
        peer: &Peer<RoleClient>,
        broken: &CancellationToken,
    ) -> Result<(), String> {
        let listed = tokio::time::timeout(START_TIMEOUT, peer.list_all_tools())
            .await
            .map_err(|_| "it did not list its tools in time".to_owned())?
            .map_err(|error| format!("it did not list its tools: {error}"))?;
        let mut tools = Vec::new();
        let mut names = Vec::new();
        for tool in listed {
            let name = tool.name.to_string();
            if self.only.as_ref().is_some_and(|only| !only.contains(&name)) {
                continue;
            }
            let spec = ToolSpec {
                name: name.clone(),
                description: tool.description.map(|d| d.to_string()).unwrap_or_default(),
                parameters: Value::Object((*tool.input_schema).clone()),
            };
            names.push(name);
            tools.push(Registered::new(Arc::new(McpTool {
                spec,
                peer: peer.clone(),
                broken: broken.clone(),
                timeout: self.timeout,
            })));
        }
        tracing::info!(server = %self.name(), tools = ?names, "MCP server ready");
        *write(&self.shared.tools) = tools;
        let mut status = write(&self.shared.status);
        status.state = ServerState::Ready;
        status.tools = names;
        Ok(())
    }

    fn set_state(&self, state: ServerState, error: Option<String>) {
        let mut status = write(&self.shared.status);
        status.state = state;
        if state != ServerState::Ready {
            status.tools.clear();
        }
        if error.is_some() {
            status.last_error = error;
        }
    }
}

/// A started server's stderr, in the log (and drained, so it cannot block).
async fn log_stderr(server: String, stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(%server, "{line}");
    }
}

/// One tool of a server.
struct McpTool {
    spec: ToolSpec,
    peer: Peer<RoleClient>,
    /// The connection's: cancelled when a call finds it gone.
    broken: CancellationToken,
    timeout: Option<Duration>,
}

#[async_trait]
impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn call(&self, arguments: Value, _: &ToolContext) -> Result<Value, ToolError> {
        let arguments = match arguments {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let params = CallToolRequestParams::new(self.spec.name.clone()).with_arguments(arguments);
        // Dropping this call (a timeout, a cancelled run) sends the server
        // `notifications/cancelled`.
        match self.peer.call_tool(params).await {
            Ok(result) => tool_result(result),
            Err(ServiceError::McpError(error)) => {
                Err(ToolError::new("tool_failed", error.message.to_string()))
            }
            Err(error @ (ServiceError::TransportClosed | ServiceError::TransportSend(_))) => {
                tracing::warn!(tool = %self.spec.name, %error, "an MCP server went away during a call");
                self.broken.cancel();
                Err(ToolError::new(
                    "tool_unavailable",
                    "the tool's server went away during the call",
                ))
            }
            Err(error) => Err(ToolError::new("tool_failed", error.to_string())),
        }
    }
}

/// An MCP result as the model gets it: its structured content when it has one,
/// else its text (as JSON when it is JSON); `isError` results are errors.
fn tool_result(result: CallToolResult) -> Result<Value, ToolError> {
    let texts: Vec<&str> = result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.as_str()))
        .collect();
    if result.is_error == Some(true) {
        let message = if texts.is_empty() {
            "the tool reported an error".to_owned()
        } else {
            texts.join("\n")
        };
        return Err(ToolError::new("tool_failed", message));
    }
    if let Some(structured) = result.structured_content {
        return Ok(structured);
    }
    Ok(match texts.as_slice() {
        [] => serde_json::to_value(&result.content).unwrap_or(Value::Null),
        [one] => serde_json::from_str(one).unwrap_or_else(|_| Value::String((*one).to_owned())),
        many => Value::Array(
            many.iter()
                .map(|text| Value::String((*text).to_owned()))
                .collect(),
        ),
    })
}
