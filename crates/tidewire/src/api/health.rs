//! Health: `/healthz` says the process answers (cheap, for liveness probes);
//! `/readyz` says whether it can serve (for load balancers): the store answers,
//! the shared run log answers (among nodes), the default model's server accepts
//! connections, and the server is not draining.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// How long a readiness check waits for a model server's TCP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers: `{status, active_runs}`", body = serde_json::Value))
)]
/// `GET /healthz`.
pub async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "active_runs": state.hub.active_runs()}))
}

#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: `{status, store, run_log, default_model, models, mcp_servers}`", body = serde_json::Value),
        (status = 503, description = "Not ready, or draining: the same body says what is failing", body = serde_json::Value),
    )
)]
/// `GET /readyz`: 200 when ready, else 503; the body says what is failing. The
/// store and the default model decide; other models and MCP servers are reported.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => json!({"status": "ok"}),
        Ok(Err(error)) => json!({"status": "failing", "error": error.to_string()}),
        Err(_) => json!({"status": "failing", "error": "no answer within 2s"}),
    };
    let run_log = match state.hub.cluster() {
        None => json!({"status": "ok", "kind": "in-process"}),
        Some(cluster) => {
            match tokio::time::timeout(Duration::from_secs(2), cluster.log().ping()).await {
                Ok(Ok(())) => json!({"status": "ok", "kind": "redis"}),
                Ok(Err(error)) => {
                    json!({"status": "failing", "kind": "redis", "error": error.to_string()})
                }
                Err(_) => {
                    json!({"status": "failing", "kind": "redis", "error": "no answer within 2s"})
                }
            }
        }
    };
    let pipeline = state.hub.pipeline();
    let backends = pipeline.backends();
    let default = backends.default_name().to_owned();
    let checks = backends
        .endpoints()
        .into_iter()
        .map(|(name, url)| async move {
            let status = match reachable(&url).await {
                Ok(()) => json!({"status": "ok"}),
                Err(error) => json!({"status": "unreachable", "error": error}),
            };
            (name, status)
        });
    let models: serde_json::Map<String, Value> = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect();
    let draining = state.hub.is_draining();
    let default_down = models
        .get(&default)
        .is_some_and(|model| model["status"] != "ok");
    let ready = store["status"] == "ok" && run_log["status"] == "ok" && !default_down && !draining;
    let body = json!({
        "status": if draining { "draining" } else if ready { "ready" } else { "not_ready" },
        "store": store,
        "run_log": run_log,
        "default_model": default,
        "models": models,
        "mcp_servers": pipeline.tools().servers(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Whether `url`'s host accepts a TCP connection: the model server is up, not
/// that it will answer well (a request would cost tokens).
async fn reachable(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|error| format!("bad URL: {error}"))?;
    let host = parsed.host_str().ok_or("the URL has no host")?.to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or("the URL has no port")?;
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("{host}:{port}: {error}")),
        Err(_) => Err(format!(
            "{host}:{port}: no answer within {CONNECT_TIMEOUT:?}"
        )),
    }
}
