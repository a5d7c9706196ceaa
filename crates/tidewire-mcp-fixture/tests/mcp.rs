//! tidewire with MCP servers: the fixture started as a command (stdio) and served
//! over streamable HTTP, with a scripted model that calls its tools. What the
//! stream shows, what the server lived through, and what happens when it dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tidewire/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::scripted::{Reply, ScriptedModel, call};
use support::upstream::backend;
use support::{Event, Stream, TestApp, read_until, spawn_app_with};
use tidewire::config::{BackendKind, McpServerConfig, Span};
use tidewire_mcp_fixture::Record;
use tokio_util::sync::CancellationToken;

/// The fixture as a command, logging to `log`.
fn stdio_server(log: &Path, timeout: Option<Duration>) -> McpServerConfig {
    McpServerConfig {
        name: "fixture".into(),
        command: Some(env!("CARGO_BIN_EXE_tidewire-mcp-fixture").into()),
        args: Vec::new(),
        env: [("MCP_FIXTURE_LOG".to_owned(), log.display().to_string())].into(),
        url: None,
        headers: Default::default(),
        tools: None,
        timeout: timeout.map(Span),
    }
}

async fn app(model: &ScriptedModel, server: McpServerConfig) -> TestApp {
    let url = model.url();
    spawn_app_with(move |config| {
        config
            .llm
            .backends
            .insert("model".into(), backend(BackendKind::Openai, url));
        config.llm.default = "model".into();
        config.tools.mcp = vec![server];
    })
    .await
}

/// `GET /api/tools` once `check` holds for it.
async fn tools_when(app: &TestApp, check: impl Fn(&Value) -> bool) -> Value {
    app.eventually(Duration::from_secs(20), || async {
        let (_, listed) = app.get_json("/api/tools").await;
        check(&listed).then_some(listed)
    })
    .await
}

fn tool_names(listed: &Value) -> Vec<&str> {
    listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

fn finished<'a>(stream: &'a Stream, id: &str) -> &'a Event {
    stream
        .events
        .iter()
        .find(|e| e.name == "tool_finished" && e.data["tool_call_id"] == id)
        .unwrap_or_else(|| panic!("no tool_finished for {id}: {:?}", stream.events))
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn log_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fixture.log");
    (dir, log)
}

#[tokio::test]
async fn a_server_started_as_a_command_serves_its_tools() {
    let (_dir, log) = log_file();
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::Tools(vec![
            call("sum", "add", r#"{"a": 2, "b": 3.5}"#),
            call("txt", "text", "{}"),
            call("err", "fail", "{}"),
            call("bad", "add", r#"{"a": "two"}"#),
        ]),
        _ => Reply::Text("Done.".into()),
    })
    .await;
    let app = app(&model, stdio_server(&log, None)).await;
    let listed = tools_when(&app, |l| tool_names(l).contains(&"add")).await;
    assert_eq!(
        tool_names(&listed),
        ["add", "exit", "fail", "grow", "sleep", "text"]
    );
    assert_eq!(listed["mcp_servers"][0]["state"], "ready");
    let add = &listed["tools"][0];
    assert_eq!(add["description"], "Add two numbers");
    assert_eq!(add["parameters"]["required"], json!(["a", "b"]));

    let stream = app.chat_stream(json!({"message": "Sum it up"})).await;
    assert_eq!(stream.last().data["status"], "complete");
    assert_eq!(finished(&stream, "sum").data["result"], json!({"sum": 5.5}));
    assert_eq!(
        finished(&stream, "txt").data["result"],
        json!("plain words")
    );
    let err = &finished(&stream, "err").data;
    assert_eq!(err["is_error"], true);
    assert_eq!(
        err["result"],
        json!({"error": "boom", "code": "tool_failed"})
    );
    // Checked against the server's schema before anything was sent.
    let bad = &finished(&stream, "bad").data;
    assert_eq!(bad["result"]["code"], "invalid_arguments");
    // The model got the results in the order of its calls.
    let results = support::scripted::tool_results(&model.requests()[1]);
    let ids: Vec<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["sum", "txt", "err", "bad"]);
    assert_eq!(log_lines(&log), ["started"]);
}

#[tokio::test]
async fn a_slow_call_times_out_and_the_server_is_told_to_stop_it() {
    let (_dir, log) = log_file();
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::Tools(vec![call("zz", "sleep", r#"{"ms": 30000}"#)]),
        _ => Reply::Text("Too slow.".into()),
    })
    .await;
    let app = app(&model, stdio_server(&log, Some(Duration::from_millis(500)))).await;
    tools_when(&app, |l| tool_names(l).contains(&"sleep")).await;
    let stream = app.chat_stream(json!({"message": "Sleep"})).await;
    assert_eq!(stream.last().data["status"], "complete");
    let slept = &finished(&stream, "zz").data;
    assert_eq!(slept["result"]["code"], "tool_timeout");
    let took = slept["duration_ms"].as_u64().unwrap();
    assert!((500..3_000).contains(&took), "{took} ms");
    // The server heard the cancellation of the abandoned call.
    app.eventually(Duration::from_secs(5), || async {
        log_lines(&log)
            .contains(&"cancelled".to_owned())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_run_cancels_its_running_call_at_the_server() {
    let (_dir, log) = log_file();
    let model =
        ScriptedModel::start(|_, _| Reply::Tools(vec![call("zz", "sleep", r#"{"ms": 30000}"#)]))
            .await;
    let app = app(&model, stdio_server(&log, None)).await;
    tools_when(&app, |l| tool_names(l).contains(&"sleep")).await;
    let response = app.chat(json!({"message": "Sleep"})).await;
    let mut body = response.bytes_stream();
    let events = read_until(&mut body, |e| e.name == "tool_started").await;
    let run_id = events[0].data["run_id"].as_str().unwrap().to_owned();
    let at = Instant::now();
    let (status, _) = app.post_json(&format!("/api/runs/{run_id}/cancel")).await;
    assert_eq!(status, 200);
    let rest = read_until(&mut body, |e| e.name == "done").await;
    assert_eq!(rest.last().unwrap().data["status"], "cancelled");
    assert!(at.elapsed() < Duration::from_secs(2));
    app.eventually(Duration::from_secs(5), || async {
        log_lines(&log)
            .contains(&"cancelled".to_owned())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_server_that_dies_mid_call_is_started_again_and_its_tools_come_back() {
    let (_dir, log) = log_file();
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::Tools(vec![call("x", "exit", "{}")]),
        1 => Reply::Text("It died.".into()),
        2 => Reply::Tools(vec![call("s", "add", r#"{"a": 1, "b": 1}"#)]),
        _ => Reply::Text("Two.".into()),
    })
    .await;
    let app = app(&model, stdio_server(&log, None)).await;
    tools_when(&app, |l| tool_names(l).contains(&"exit")).await;

    let stream = app.chat_stream(json!({"message": "Die"})).await;
    // The answer goes on: the model is told the call failed.
    assert_eq!(stream.last().data["status"], "complete");
    let died = &finished(&stream, "x").data;
    assert_eq!(died["is_error"], true);
    assert_eq!(died["result"]["code"], "tool_unavailable");

    // Started again after a backoff, and listed again.
    let listed = tools_when(&app, |l| {
        l["mcp_servers"][0]["restarts"] == 1 && l["mcp_servers"][0]["state"] == "ready"
    })
    .await;
    assert!(tool_names(&listed).contains(&"add"));
    assert!(
        listed["mcp_servers"][0]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(log_lines(&log), ["started", "exiting", "started"]);

    let stream = app.chat_stream(json!({"message": "Add"})).await;
    assert_eq!(finished(&stream, "s").data["result"], json!({"sum": 2.0}));
}

#[tokio::test]
async fn a_server_over_http_serves_its_tools_and_their_changes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = Arc::new(Record::default());
    let stop = CancellationToken::new();
    tokio::spawn(tidewire_mcp_fixture::serve_http(
        listener,
        Arc::clone(&record),
        stop.clone(),
    ));
    // Answers by the question; once a round of results is in, with text.
    let model = ScriptedModel::start(|body, _| {
        let messages = body["messages"].as_array().unwrap();
        let last = messages.last().unwrap();
        if last["role"] == "tool" {
            return Reply::Text("Done.".into());
        }
        match last["content"].as_str().unwrap() {
            "Grow" => Reply::Tools(vec![
                call("sum", "add", r#"{"a": 20, "b": 1}"#),
                call("g", "grow", "{}"),
            ]),
            "Late" => Reply::Tools(vec![call("l", "late", "{}")]),
            _ => Reply::Tools(vec![call("again", "add", r#"{"a": 1, "b": 2}"#)]),
        }
    })
    .await;
    let server = McpServerConfig {
        name: "remote".into(),
        command: None,
        args: Vec::new(),
        env: Default::default(),
        url: Some(format!("http://{addr}/mcp")),
        headers: Default::default(),
        tools: None,
        timeout: None,
    };
    let app = app(&model, server).await;
    let listed = tools_when(&app, |l| tool_names(l).contains(&"add")).await;
    assert!(!tool_names(&listed).contains(&"late"));

    let stream = app.chat_stream(json!({"message": "Grow"})).await;
    assert_eq!(
        finished(&stream, "sum").data["result"],
        json!({"sum": 21.0})
    );
    assert_eq!(finished(&stream, "g").data["result"], json!("grown"));
    // The server said its tools changed: they are listed again.
    tools_when(&app, |l| tool_names(l).contains(&"late")).await;
    let stream = app.chat_stream(json!({"message": "Late"})).await;
    assert_eq!(
        finished(&stream, "l").data["result"],
        json!("late but here")
    );

    // The server goes away: a call fails (or finds the tool gone), the answer goes
    // on, and the server's tools are no longer offered.
    stop.cancel();
    let stream = app.chat_stream(json!({"message": "Add again"})).await;
    assert_eq!(stream.last().data["status"], "complete");
    assert_eq!(finished(&stream, "again").data["is_error"], true);
    let listed = tools_when(&app, |l| l["mcp_servers"][0]["state"] != "ready").await;
    assert!(tool_names(&listed).is_empty(), "{listed}");
}
