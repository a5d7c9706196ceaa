//! `/v1/chat/completions` and `/v1/models` on the wire: the bytes the OpenAI SDKs
//! parse, the errors, the run behind each answer, and a client that goes away.
//! The SDKs themselves are driven in `sdk.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::upstream::{backend, start_upstream};
use support::{TestApp, spawn_app, spawn_app_with};
use tidewire::config::BackendKind;

async fn post(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of a whole stream, in order (comments, the keepalives the
/// SSE parsers of the SDKs skip, left out).
async fn data_lines(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter(|block| !block.is_empty() && !block.starts_with(':'))
        .map(|block| {
            assert!(
                block.starts_with("data: ") && !block.contains('\n'),
                "every block is one data line: {block:?}"
            );
            block["data: ".len()..].to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_stream_is_chunks_then_done_and_nothing_else() {
    let app = spawn_app().await;
    let response = post(
        &app,
        json!({"model": "synthetic", "messages": [{"role": "user", "content": "hi"}],
               "stream": true, "max_tokens": 3, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let run_id = response.headers()["x-tidewire-run-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let lines = data_lines(response).await;
    assert_eq!(lines.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // role, 3 tokens, finish, usage.
    assert_eq!(chunks.len(), 6, "{chunks:?}");
    for chunk in &chunks {
        assert_eq!(chunk["id"], format!("chatcmpl-{run_id}"));
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "synthetic");
        assert_eq!(chunk["created"], chunks[0]["created"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[0]["usage"].is_null() && chunks[0].get("usage").is_some());
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn without_include_usage_no_chunk_has_a_usage_field() {
    let app = spawn_app().await;
    let response = post(
        &app,
        json!({"model": "synthetic", "messages": [{"role": "user", "content": "hi"}],
               "stream": true, "max_tokens": 2}),
    )
    .await;
    let lines = data_lines(response).await;
    assert_eq!(lines.len(), 5, "role, 2 tokens, finish, [DONE]: {lines:?}");
    for line in &lines[..4] {
        let chunk: Value = serde_json::from_str(line).unwrap();
        assert!(chunk.get("usage").is_none(), "{chunk}");
    }
}

#[tokio::test]
async fn the_turn_is_stored_in_its_own_conversation_or_the_one_named() {
    let app = spawn_app().await;
    let history = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second"},
    ]);
    let response = post(&app, json!({"model": "synthetic", "messages": history})).await;
    assert_eq!(response.status(), 200);
    let conversation = response.headers()["x-tidewire-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let messages = app.messages(&conversation).await;
    assert_eq!(messages.len(), 2, "only this turn is stored: {messages:?}");
    assert_eq!(messages[0]["content"], "second");
    assert_eq!(
        messages[1]["content"],
        body["choices"][0]["message"]["content"]
    );

    for question in ["one", "two"] {
        let response = post(
            &app,
            json!({"model": "synthetic", "conversation_id": "chat-42",
                   "messages": [{"role": "user", "content": question}]}),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-tidewire-conversation-id"], "chat-42");
    }
    let messages = app.messages("chat-42").await;
    let contents: Vec<&str> = messages
        .iter()
        .step_by(2)
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["one", "two"]);
}

#[tokio::test]
async fn mistakes_are_openai_errors_with_the_parameter_at_fault() {
    let app = spawn_app().await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            json!({"model": "nope", "messages": user}),
            404,
            "model_not_found",
            "model",
        ),
        (
            json!({"model": "synthetic", "messages": user, "n": 2}),
            400,
            "unsupported_parameter",
            "n",
        ),
        (
            json!({"model": "synthetic", "messages": user, "tools": [{"type": "function", "function": {"name": "f"}}]}),
            400,
            "unsupported_parameter",
            "tools",
        ),
        (
            json!({"model": "synthetic", "messages": user, "top_p": 1.5}),
            400,
            "invalid_value",
            "top_p",
        ),
        (
            json!({"model": "synthetic", "messages": user, "stop": ["a", "b", "c", "d", "e"]}),
            400,
            "invalid_value",
            "stop",
        ),
        (
            json!({"model": "synthetic", "messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "hi"}]}),
            400,
            "invalid_messages",
            "messages",
        ),
        (
            json!({"model": "synthetic", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            400,
            "unsupported_parameter",
            "messages",
        ),
        (
            json!({"model": "synthetic", "messages": [{"role": "user", "content": "  "}]}),
            400,
            "empty_message",
            "",
        ),
        (
            json!({"model": "synthetic", "messages": user, "max_tokens": 100_000}),
            400,
            "invalid_max_tokens",
            "max_tokens",
        ),
    ];
    for (body, status, code, param) in cases {
        let response = post(&app, body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        let error = &error["error"];
        assert_eq!(error["code"], code, "{body}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        let kind = if status == 404 {
            "not_found_error"
        } else {
            "invalid_request_error"
        };
        assert_eq!(error["type"], kind);
        if param.is_empty() {
            assert!(error["param"].is_null());
        } else {
            assert_eq!(error["param"], param);
        }
    }
    // Not JSON, and not declared JSON.
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_json");
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn an_error_after_the_first_chunk_is_one_error_line_then_the_end() {
    let mock = start_upstream().await;
    let url = mock.openai_url("vllm-error");
    let app = spawn_app_with(|config| {
        config.llm.attempts = 1;
        config
            .llm
            .backends
            .insert("up".into(), backend(BackendKind::Openai, url));
    })
    .await;
    let response = post(
        &app,
        json!({"model": "up", "messages": [{"role": "user", "content": "hi"}], "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let lines = data_lines(response).await;
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"].as_str().unwrap().contains("CUDA"),
        "{last}"
    );
    assert_eq!(last["error"]["type"], "server_error");
    let text: String = lines[..lines.len() - 1]
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Partial answer");
    assert!(!lines.iter().any(|line| line == "[DONE]"));

    // Without a stream, the same failure is an HTTP error.
    let response = post(
        &app,
        json!({"model": "up", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    // A failure worth retrying (the model server's own error) is a 503.
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(error["error"]["code"], "model_unavailable");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_answer_after_the_grace() {
    let app = spawn_app_with(|config| {
        config.default_tokens_per_second = 20.0;
        config.openai.cancel_on_disconnect = Some(Duration::from_millis(200));
    })
    .await;
    let response = post(
        &app,
        json!({"model": "synthetic", "messages": [{"role": "user", "content": "hi"}],
               "stream": true, "max_tokens": 500}),
    )
    .await;
    let run_id = response.headers()["x-tidewire-run-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.bytes_stream();
    support::read_events(&mut body, 3).await;
    drop(body);
    let status = app
        .eventually(Duration::from_secs(10), || async {
            let (_, run) = app.get_json(&format!("/api/runs/{run_id}")).await;
            (run["status"] != "streaming").then(|| run["status"].clone())
        })
        .await;
    assert_eq!(status, "cancelled");
}

#[tokio::test]
async fn models_lists_the_configured_backends() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["extractive", "synthetic"]);
}

#[tokio::test]
async fn the_routes_can_be_switched_off() {
    let app = spawn_app_with(|config| config.openai.enabled = false).await;
    let (status, _) = app.get_json("/v1/models").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sampling_settings_reach_the_model_server() {
    let mock = start_upstream().await;
    let url = mock.openai_url("openai");
    let app = spawn_app_with(|config| {
        config
            .llm
            .backends
            .insert("up".into(), backend(BackendKind::Openai, url));
    })
    .await;
    let response = post(
        &app,
        json!({"model": "up", "messages": [{"role": "user", "content": "hi"}],
               "temperature": 0.2, "top_p": 0.9, "stop": "END", "seed": 7,
               "max_completion_tokens": 33}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let sent = &mock.requests("openai")[0];
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["top_p"], 0.9);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["max_tokens"], 33);
}
