//! `GET /api/tools`: the tools models may call now, and the state of each MCP
//! server (a server that is down has its tools missing from the list).

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use crate::auth::Caller;
use crate::tools::ServerStatus;
#[allow(unused_imports)]
use tidewire_protocol::api::ErrorBody;

/// One tool, as models see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolView {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON schema of its arguments.
    pub parameters: serde_json::Value,
}

/// The answer of `GET /api/tools`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolList {
    /// The tools offered now, by name.
    pub tools: Vec<ToolView>,
    /// The configured MCP servers.
    pub mcp_servers: Vec<ServerStatus>,
    /// The most rounds of tool calls in one answer.
    pub max_rounds: u32,
}

#[utoipa::path(
    get, path = "/api/tools", tag = "tools",
    responses(
        (status = 200, description = "The tools on offer and the MCP servers", body = ToolList),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
/// Lists the tools.
pub async fn list(State(state): State<AppState>, _caller: Caller) -> Json<ToolList> {
    let toolbox = state.hub.pipeline().tools();
    let tools = toolbox
        .available()
        .into_values()
        .map(|tool| {
            let spec = tool.spec();
            ToolView {
                name: spec.name.clone(),
                description: spec.description.clone(),
                parameters: spec.parameters.clone(),
            }
        })
        .collect();
    Json(ToolList {
        tools,
        mcp_servers: toolbox.servers(),
        max_rounds: toolbox.limits().max_rounds,
    })
}
