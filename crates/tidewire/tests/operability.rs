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
