//! The ecosystem's own clients against the server on port 0: the official
//! `openai` Python package and `openai` npm package, and the Vercel AI SDK's
//! `useChat` rendered under jsdom, at the versions pinned in `sdk/`. `sdk/setup.sh` installs them on first use (CI runs it beforehand).
//!
//! Each client script checks its own results and exits non-zero on the first
//! failed check; its output is shown when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::scripted::{Reply, ScriptedModel, call};
use support::upstream::backend;
use support::{TestApp, spawn_app, spawn_app_with};
use tidewire::config::BackendKind;

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
}

/// Runs `program script` in `sdk/` against `app`, and fails with its output if it
/// fails.
async fn run_client(app: &TestApp, program: &str, script: &str) {
    tokio::task::spawn_blocking(|| support::run_setup("sdk/setup.sh"))
        .await
        .unwrap();
    let dir = sdk_dir();
    let program = if program == "python" {
        dir.join(".venv/bin/python")
    } else {
        PathBuf::from(program)
    };
    let child = tokio::process::Command::new(&program)
        .arg(dir.join(script))
        .current_dir(&dir)
        .env("TIDEWIRE_URL", &app.base)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .unwrap_or_else(|_| panic!("{script} took over 2 minutes"))
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
}

#[tokio::test]
async fn the_openai_python_sdk_chats() {
    let app = spawn_app().await;
    run_client(&app, "python", "python/chat_completions.py").await;
}

#[tokio::test]
async fn the_openai_node_sdk_chats() {
    let app = spawn_app().await;
    run_client(&app, "node", "js/chat_completions.mjs").await;
}

#[tokio::test]
async fn the_openai_python_sdk_uses_responses_with_resume_and_cancel() {
    let app = spawn_app().await;
    run_client(&app, "python", "python/responses.py").await;
}

#[tokio::test]
async fn the_openai_sdks_call_their_own_tools() {
    let model = ScriptedModel::start(|body, _| {
        let last = body["messages"].as_array().unwrap().last().unwrap().clone();
        if last["role"] == "tool" {
            let result: Value = serde_json::from_str(last["content"].as_str().unwrap()).unwrap();
            Reply::Text(format!("{} degrees in Paris.", result["temperature"]))
        } else {
            Reply::Tools(vec![call("call_7", "get_weather", r#"{"city": "Paris"}"#)])
        }
    })
    .await;
    let url = model.url();
    let app = spawn_app_with(move |config| {
        config
            .llm
            .backends
            .insert("tool-model".into(), backend(BackendKind::Openai, url));
    })
    .await;
    run_client(&app, "python", "python/tools.py").await;
    run_client(&app, "node", "js/tools.mjs").await;
    // tool_choice reached the model as the client gave it.
    assert_eq!(
        model.requests()[0]["tool_choice"],
        serde_json::json!({"type": "function", "function": {"name": "get_weather"}})
    );
}

#[tokio::test]
async fn use_chat_sends_follows_up_stops_and_resumes() {
    let app = spawn_app().await;
    run_client(&app, "node", "js/use_chat.mjs").await;
}
