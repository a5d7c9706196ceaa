//! What an operator sees: request ids, readiness, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::upstream::backend;
use support::{spawn_app, spawn_app_with};
use tidewire::config::BackendKind;

#[tokio::test]
async fn every_response_has_a_request_id_and_a_given_one_is_kept() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 36, "{made}");
    let response = app
        .client
        .post(app.url("/api/chat"))
        .header("x-request-id", "trace-me-42")
        .json(&json!({"message": "hi", "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    // Errors too.
    let response = app.client.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn readyz_checks_the_store_and_the_default_model() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["store"]["status"], "ok");
    assert_eq!(body["default_model"], "synthetic");

    // A default model whose server is down: not ready, and it says why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app_with(move |config| {
        config.llm.backends.insert(
            "remote".into(),
            backend(BackendKind::Openai, format!("http://127.0.0.1:{port}/v1")),
        );
        config.llm.default = "remote".into();
    })
    .await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["models"]["remote"]["status"], "unreachable");
    assert!(
        body["models"]["remote"]["error"]
            .as_str()
            .unwrap()
            .contains(&port.to_string())
    );
    // Liveness is another question.
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
}

/// The value of the sample `name` (with its labels, as exposed).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_a_scripted_session() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app_with(move |config| {
        config.llm.backends.insert(
            "broken".into(),
            backend(BackendKind::Openai, format!("http://127.0.0.1:{port}/v1")),
        );
        config.llm.attempts = 2;
    })
    .await;
    // A complete run.
    let done = app
        .chat_stream(
            json!({"message": "one", "options": {"tokens_per_second": 0, "max_tokens": 5}}),
        )
        .await;
    let run_id = done.run_id();
    // A resume of it after its second event.
    let resumed = support::read_stream(app.attach(&run_id, Some(2)).await).await;
    let replayed = resumed.events.len();
    // A cancelled run.
    let response = app
        .chat(json!({"message": "two", "options": {"tokens_per_second": 2, "max_tokens": 50}}))
        .await;
    let mut body = response.bytes_stream();
    let first = support::read_until(&mut body, |e| e.name == "token").await;
    let slow = first[0].data["run_id"].as_str().unwrap().to_owned();
    let (status, _) = app.post_json(&format!("/api/runs/{slow}/cancel")).await;
    assert_eq!(status, 200);
    support::read_until(&mut body, |e| e.name == "done").await;
    drop(body);
    // An upstream error (its server is down), after a retry.
    let failed = app
        .chat_stream(json!({"message": "three", "options": {"backend": "broken"}}))
        .await;
    assert_eq!(failed.last().data["status"], "failed");
    let (status, _) = app.get_json(&format!("/api/runs/{run_id}")).await;
    assert_eq!(status, 200);

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    assert_eq!(value("tidewire_runs_started_total"), 3.0);
    assert_eq!(
        value(r#"tidewire_runs_finished_total{status="complete"}"#),
        1.0
    );
    assert_eq!(
        value(r#"tidewire_runs_finished_total{status="cancelled"}"#),
        1.0
    );
    assert_eq!(
        value(r#"tidewire_runs_finished_total{status="failed"}"#),
        1.0
    );
    assert_eq!(value(r#"tidewire_cancels_total{cause="request"}"#), 1.0);
    assert_eq!(value("tidewire_resumes_total"), 1.0);
    assert_eq!(value("tidewire_resumed_events_total"), replayed as f64);
    assert_eq!(value("tidewire_resume_catch_up_seconds_count"), 1.0);
    assert_eq!(
        value(
            r#"tidewire_upstream_errors_total{backend="test-model",code="upstream_unreachable"}"#
        ),
        1.0
    );
    assert_eq!(
        value(r#"tidewire_upstream_retries_total{backend="test-model"}"#),
        1.0
    );
    assert_eq!(
        value(r#"tidewire_time_to_first_token_seconds_count{backend="synthetic"}"#),
        2.0
    );
    assert!(value("tidewire_token_gap_seconds_count") >= 4.0);
    assert!(value("tidewire_stream_bytes_total") > 0.0);
    assert!(value("tidewire_stream_events_total") >= done.events.len() as f64);
    // Every stream ended: none open; the run lookup is timed under its template.
    assert_eq!(value(r#"tidewire_open_streams{format="native"}"#), 0.0);
    assert_eq!(
        value(
            r#"tidewire_request_duration_seconds_count{route="/api/runs/{run_id}",method="GET",status="200"}"#
        ),
        1.0
    );
    assert_eq!(value("tidewire_active_runs"), 0.0);
    assert!(!text.contains(&run_id), "a run id in a label");
}

#[tokio::test]
async fn metrics_count_refused_requests_and_can_be_switched_off() {
    let app = spawn_app_with(|config| config.auth.api_keys = true).await;
    let response = app.chat(json!({"message": "hi"})).await;
    assert_eq!(response.status(), 401);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(&text, r#"tidewire_auth_failures_total{reason="missing"}"#),
        Some(1.0)
    );

    let off = spawn_app_with(|config| config.metrics.enabled = false).await;
    off.chat_stream(json!({"message": "hi", "options": {"tokens_per_second": 0}}))
        .await;
    let response = off.client.get(off.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_openapi_document_covers_the_api_and_the_live_server_keeps_to_it() {
    let app = spawn_app().await;
    let (status, document) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/chat",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/events",
        "/api/runs/{run_id}/cancel",
        "/api/conversations",
        "/api/conversations/{id}",
        "/api/conversations/{id}/messages",
        "/api/documents",
        "/api/documents/{id}",
        "/api/documents/prune",
        "/api/tools",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "{path} is not in the document");
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in [
        "ChatRequest",
        "ChatEvent",
        "ErrorBody",
        "Message",
        "WireEvent",
    ] {
        assert!(schemas.contains_key(schema), "no {schema} schema");
    }
    let events = &paths["/api/runs/{run_id}/events"]["get"]["responses"]["200"]["content"];
    assert!(events.get("text/event-stream").is_some(), "{events}");

    // Property-based requests against the live server (schemathesis): no 5xx, and
    // every response as documented (stream events included).
    tokio::task::spawn_blocking(|| support::run_setup("sdk/setup.sh"))
        .await
        .unwrap();
    let program = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../sdk/.venv-schemathesis/bin/schemathesis");
    let run = tokio::process::Command::new(program)
        .args([
            "run",
            &app.url("/openapi.json"),
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "15",
            "--seed",
            "1",
        ])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .expect("schemathesis finished in time")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
