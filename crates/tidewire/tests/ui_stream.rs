//! `/api/ui/chat` on the wire: the UI message stream `useChat` parses (its own
//! client is driven in `sdk.rs`), with the whole pipeline on, and its errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::upstream::{backend, start_upstream};
use support::{TestApp, spawn_app, spawn_app_with};
use tidewire::config::{BackendKind, PipelineConfig};

fn body(chat: &str, text: &str) -> Value {
    json!({
        "id": chat,
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
        "options": {"max_tokens": 5, "tokens_per_second": 0},
    })
}

async fn parts(app: &TestApp, body: Value) -> (reqwest::StatusCode, Vec<Value>) {
    let response = app
        .client
        .post(app.url("/api/ui/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    if status == 200 {
        assert_eq!(response.headers()["x-vercel-ai-ui-message-stream"], "v1");
    }
    let text = response.text().await.unwrap();
    let parts = text
        .split("\n\n")
        .filter(|block| block.starts_with("data: "))
        .map(|block| &block["data: ".len()..])
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert!(
        status != 200 || text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    (status, parts)
}

/// The part types `useChat` (ai 7) accepts; any other fails the whole message.
const KNOWN: [&str; 13] = [
    "start",
    "start-step",
    "finish-step",
    "text-start",
    "text-delta",
    "text-end",
    "source-document",
    "tool-input-start",
    "tool-input-available",
    "tool-output-available",
    "message-metadata",
    "error",
    "finish",
];

#[tokio::test]
async fn every_part_is_one_the_client_knows_in_the_order_it_needs() {
    let app = spawn_app_with(|config| {
        config.pipeline = PipelineConfig::default();
        config.documents.seed_docs = false;
    })
    .await;
    app.client
        .post(app.url("/api/documents"))
        .json(&json!({"name": "tides.md", "text": "# Tides\n\nTides are caused by the Moon.\n\n## Spring tides\n\nWhen the Sun and the Moon line up, tides are strongest.", "format": "markdown"}))
        .send()
        .await
        .unwrap();
    let (status, parts) = parts(&app, body("c1", "What causes tides?")).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    for kind in &types {
        assert!(
            KNOWN.contains(kind) || kind.starts_with("data-"),
            "unknown part {kind}"
        );
    }
    assert_eq!(&types[..2], ["start", "start-step"]);
    assert_eq!(&types[types.len() - 2..], ["finish-step", "finish"]);
    let start = types.iter().position(|t| *t == "text-start").unwrap();
    let end = types.iter().position(|t| *t == "text-end").unwrap();
    assert!(types[start + 1..end].iter().all(|t| *t == "text-delta"));
    assert_eq!(end - start - 1, 5);
    assert!(types.contains(&"source-document"));
    for data in [
        "data-stage",
        "data-sources",
        "data-quality-score",
        "data-follow-up-questions",
    ] {
        let part = parts
            .iter()
            .find(|p| p["type"] == data)
            .unwrap_or_else(|| panic!("no {data}: {types:?}"));
        assert!(part.get("data").is_some(), "{part}");
    }
    let source = parts
        .iter()
        .find(|p| p["type"] == "source-document")
        .unwrap();
    assert_eq!(source["title"], "tides.md");
    assert_eq!(source["mediaType"], "text/plain");
    assert_eq!(parts.last().unwrap()["finishReason"], "length");
    // The answer is stored in the chat's conversation.
    let messages = app.messages("c1").await;
    assert_eq!(messages.len(), 2);
}

#[tokio::test]
async fn a_failure_is_an_error_part_then_finish() {
    let mock = start_upstream().await;
    let url = mock.openai_url("vllm-error");
    let app = spawn_app_with(|config| {
        config.llm.attempts = 1;
        config
            .llm
            .backends
            .insert("up".into(), backend(BackendKind::Openai, url));
        config.llm.default = "up".into();
    })
    .await;
    let (status, parts) = parts(&app, body("c2", "hi")).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    let error = types.iter().position(|t| *t == "error").unwrap();
    assert!(parts[error]["errorText"].as_str().unwrap().contains("CUDA"));
    // The text part is closed before the error; finish comes after it.
    assert_eq!(types[error - 1], "text-end");
    assert_eq!(&types[types.len() - 2..], ["finish-step", "finish"]);
    assert_eq!(parts.last().unwrap()["finishReason"], "error");
}

#[tokio::test]
async fn bad_requests_are_errors_whose_body_the_client_shows() {
    let app = spawn_app().await;
    for (request, status) in [
        (json!({"messages": []}), 422),
        (json!({"id": "c", "messages": []}), 422),
        (
            json!({"id": "c", "messages": [{"role": "assistant", "parts": [{"type": "text", "text": "x"}]}]}),
            422,
        ),
        (body("", "hi"), 422),
        (body("c", " "), 422),
    ] {
        let response = app
            .client
            .post(app.url("/api/ui/chat"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{request}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_reconnect_to_a_chat_with_nothing_running_is_204() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/ui/chat/nothing-here/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}
