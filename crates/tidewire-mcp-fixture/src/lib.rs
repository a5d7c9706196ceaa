//! An MCP server for tidewire's tests and benchmarks, built with `rmcp`: the
//! `tidewire-mcp-fixture` binary serves it on stdin and stdout; [`serve_http`]
//! serves it over streamable HTTP on a listener.
//!
//! Its tools: `add` (structured result), `text` (plain text), `fail` (an error
//! result), `sleep` (hangs until done or cancelled, and records the cancel),
//! `exit` (the process dies mid-call), `grow` (adds the tool `late` and tells
//! the client its tools changed). With `MCP_FIXTURE_LOG` set, each start and each
//! cancelled call is a line of that file, so a test can see what a child process
//! lived through.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// What the fixture lived through.
#[derive(Debug, Default)]
pub struct Record {
    /// Calls cancelled by the client (a timeout or a stopped run).
    pub cancelled: AtomicUsize,
    /// Whether `grow` was called (then `late` is listed).
    pub grown: AtomicBool,
    /// Where starts and cancels are written, one line each.
    pub log: Option<PathBuf>,
}

impl Record {
    /// A record writing to the file named by `MCP_FIXTURE_LOG`, if set.
    pub fn from_env() -> Self {
        Self {
            log: std::env::var_os("MCP_FIXTURE_LOG").map(PathBuf::from),
            ..Self::default()
        }
    }

    /// Appends `line` to the log file, if there is one.
    pub fn note(&self, line: &str) {
        if let Some(path) = &self.log
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Arguments of `add`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddArgs {
    /// The first number.
    pub a: f64,
    /// The second number.
    pub b: f64,
}

/// Arguments of `sleep`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SleepArgs {
    /// How long, in milliseconds.
    pub ms: u64,
}

/// The server.
#[derive(Clone)]
pub struct Fixture {
    tool_router: ToolRouter<Self>,
    record: Arc<Record>,
}

impl Fixture {
    /// A server writing what happens to `record`.
    pub fn new(record: Arc<Record>) -> Self {
        Self {
            tool_router: Self::tool_router(),
            record,
        }
    }
}

#[tool_router]
impl Fixture {
    #[tool(description = "Add two numbers")]
    async fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> CallToolResult {
        CallToolResult::structured(serde_json::json!({ "sum": a + b }))
    }

    #[tool(description = "Answer with plain text")]
    async fn text(&self) -> String {
        "plain words".to_owned()
    }

    #[tool(description = "Always fail")]
    async fn fail(&self) -> Result<String, String> {
        Err("boom".to_owned())
    }

    #[tool(description = "Wait, then answer; a cancelled call is recorded")]
    async fn sleep(
        &self,
        Parameters(SleepArgs { ms }): Parameters<SleepArgs>,
        cancel: CancellationToken,
    ) -> String {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => "slept".to_owned(),
            () = cancel.cancelled() => {
                self.record.cancelled.fetch_add(1, Ordering::SeqCst);
                self.record.note("cancelled");
                "cancelled".to_owned()
            }
        }
    }

    #[tool(description = "Die in the middle of the call")]
    async fn exit(&self) -> String {
        self.record.note("exiting");
        std::process::exit(3)
    }

    #[tool(description = "Add the tool `late` and say the tools changed")]
    async fn grow(&self, peer: Peer<RoleServer>) -> Result<String, ErrorData> {
        self.record.grown.store(true, Ordering::SeqCst);
        peer.notify_tool_list_changed()
            .await
            .map_err(|error| ErrorData::internal_error(error.to_string(), None))?;
        Ok("grown".to_owned())
    }

    #[tool(description = "Listed once `grow` was called")]
    async fn late(&self) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text("late but here")])
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("tidewire-mcp-fixture", "0.1.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let grown = self.record.grown.load(Ordering::SeqCst);
        let tools = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|tool| grown || tool.name != "late")
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }
}

/// Serves the fixture over streamable HTTP at `/mcp` on `listener` until `stop`.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    record: Arc<Record>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let service: StreamableHttpService<Fixture, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(Fixture::new(Arc::clone(&record))),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token()),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
