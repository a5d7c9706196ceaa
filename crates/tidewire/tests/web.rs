//! The chat page and `tidewire.js`: the assets as served, the client's unit tests
//! (`node --test web/test/`, on the decoder's own vectors), and the page in a real
//! browser (Debian's Chromium driven by playwright-core, `web/browser/page.mjs`).
//! `web/setup.sh` installs Chromium and playwright-core on first use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::scripted::{Reply, ScriptedModel, call};
use support::upstream::backend;
use support::{spawn_app, spawn_app_with};
use tidewire::auth::new_key;
use tidewire::config::{BackendKind, HttpToolConfig, PipelineConfig};
use tidewire::store::ApiKeys;

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// Runs `node args...` in `web/` with `env`, and fails with its output if it fails.
async fn node(args: &[&str], env: &[(&str, String)], limit: Duration) -> String {
    let mut command = tokio::process::Command::new("node");
    command.args(args).current_dir(web_dir()).kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("node {args:?} took over {limit:?}"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

#[tokio::test]
async fn the_page_and_the_client_are_served_with_a_content_security_policy() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/tidewire.js", "text/javascript; charset=utf-8"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], kind, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
    }
    let page = app.client.get(app.url("/")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/app.js">"#));
}

#[tokio::test]
async fn tidewire_js_passes_its_unit_tests() {
    let out = node(&["--test", "test/"], &[], Duration::from_secs(120)).await;
    assert!(out.contains("# fail 0"), "{out}");
}

/// A language model for the page: rewrites and follow-ups for the pipeline's side
/// questions, Markdown for a question, and HTML that must stay text for "xss".
async fn page_model() -> ScriptedModel {
    ScriptedModel::start(|body, _| {
        let messages = body["messages"].as_array().unwrap();
        let system = messages[0]["content"].as_str().unwrap_or("");
        let last = messages.last().unwrap();
        let question = last["content"].as_str().unwrap_or("");
        if system.starts_with("Rewrite") {
            return Reply::Text(question.to_owned());
        }
        if system.starts_with("Suggest") {
            return Reply::Text("How do I resume a run?\nHow do I cancel a run?".into());
        }
        if last["role"] == "tool" {
            return Reply::Text("The clock says noon.".into());
        }
        if question == "Use the tool" {
            return Reply::Tools(vec![call("t1", "clock", "{}")]);
        }
        if question == "xss" {
            return Reply::Text(
                "Here: <img src=x onerror=\"window.__pwned=1\"> and \
                 <script>window.__pwned=2</script> <b>bold?</b>"
                    .into(),
            );
        }
        Reply::Text(
            "A run is `one answer` being written.\n\n```rust\nlet run = 1;\n```\n\nThat is **all**."
                .into(),
        )
    })
    .await
}

#[tokio::test]
async fn the_chat_page_works_in_a_real_browser() {
    tokio::task::spawn_blocking(|| support::run_setup("web/setup.sh"))
        .await
        .unwrap();
    // Slow enough answers (60 tokens at 15 a second) to reload, cut and stop them.
    let paced = spawn_app_with(|config| {
        config.default_tokens_per_second = 15.0;
        config.default_max_tokens = Some(60);
    })
    .await;
    let model = page_model().await;
    let url = model.url();
    // One HTTP tool for the model to call.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = format!("http://{}/clock", listener.local_addr().unwrap());
    let tool_server = axum::Router::new().route(
        "/clock",
        axum::routing::post(|| async { axum::Json(serde_json::json!({"time": "noon"})) }),
    );
    tokio::spawn(async move { axum::serve(listener, tool_server).await });
    let scripted = spawn_app_with(move |config| {
        config
            .llm
            .backends
            .insert("model".into(), backend(BackendKind::Openai, url));
        config.llm.default = "model".into();
        config.pipeline = PipelineConfig::default();
        config.documents.seed_docs = false;
        config.tools.http.push(HttpToolConfig {
            name: "clock".into(),
            description: "The time".into(),
            parameters: None,
            url: clock,
            headers: Default::default(),
            timeout: None,
        });
    })
    .await;
    // Authentication on: the page asks for an API key.
    let guarded = spawn_app_with(|config| {
        config.auth.api_keys = true;
        config.default_tokens_per_second = 0.0;
    })
    .await;
    let keys = ApiKeys::open(guarded.data_dir.path()).await.unwrap();
    let made = new_key().unwrap();
    keys.create("page-user", "page", &made.hash, &made.prefix, None)
        .await
        .unwrap();
    let artifacts = web_dir().join("artifacts");
    let out = node(
        &["browser/page.mjs"],
        &[
            ("TIDEWIRE_URL", paced.base.clone()),
            ("TIDEWIRE_SCRIPTED_URL", scripted.base.clone()),
            ("TIDEWIRE_AUTH_URL", guarded.base.clone()),
            ("TIDEWIRE_AUTH_KEY", made.key.clone()),
            ("TIDEWIRE_ARTIFACTS", artifacts.display().to_string()),
        ],
        Duration::from_secs(240),
    )
    .await;
    assert!(out.contains("all checks passed"), "{out}");
    assert!(artifacts.join("desktop.png").exists());
    assert!(artifacts.join("phone.png").exists());
}
