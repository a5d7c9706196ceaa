//! Every client mistake gets a JSON error with the right status, never a 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{TestApp, spawn_app, spawn_app_with};

async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    body
}

async fn post_raw(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.client.post(app.url("/api/chat")).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    expect_error(
        post_raw(&app, Some("application/json"), "{\"message\": ").await,
        400,
        "invalid_json",
    )
    .await;
    expect_error(
        post_raw(&app, Some("application/json"), "not json").await,
        400,
        "invalid_json",
    )
    .await;
    expect_error(
        post_raw(&app, Some("application/json"), "").await,
        400,
        "invalid_json",
    )
    .await;
}

#[tokio::test]
async fn wrong_field_types_are_422() {
    let app = spawn_app().await;
    for body in [
        json!({"message": 42}),
        json!({"message": "x", "stream": "yes"}),
        json!({"message": "x", "options": {"max_tokens": "many"}}),
        json!({"message": "x", "options": {"max_tokens": -1}}),
        json!({"message": "x", "conversation_id": 7}),
        json!({"no_message": "x"}),
        json!(["message"]),
    ] {
        expect_error(app.chat(body).await, 422, "invalid_request").await;
    }
}

#[tokio::test]
async fn empty_or_whitespace_messages_are_422() {
    let app = spawn_app().await;
    for message in ["", "   ", "\n\t "] {
        expect_error(
            app.chat(json!({"message": message})).await,
            422,
            "empty_message",
        )
        .await;
    }
}

#[tokio::test]
async fn a_message_over_the_limit_is_413() {
    let app = spawn_app_with(|config| config.max_message_bytes = 100).await;
    let body = expect_error(
        app.chat(json!({"message": "x".repeat(101)})).await,
        413,
        "message_too_long",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("100"));
    let ok = app.chat(json!({"message": "x".repeat(100), "options": {"max_tokens": 1, "tokens_per_second": 0}})).await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(|config| {
        config.max_body_bytes = 1024;
        config.max_message_bytes = 512;
    })
    .await;
    let huge = format!("{{\"message\": \"x\", \"pad\": \"{}\"}}", "y".repeat(4096));
    expect_error(
        post_raw(&app, Some("application/json"), huge).await,
        413,
        "body_too_large",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_content_type_is_415() {
    let app = spawn_app().await;
    let body = "{\"message\": \"hi\"}";
    expect_error(
        post_raw(&app, Some("text/plain"), body).await,
        415,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        post_raw(&app, None, body).await,
        415,
        "unsupported_media_type",
    )
    .await;
    let ok = post_raw(
        &app,
        Some("application/json; charset=utf-8"),
        "{\"message\": \"hi\", \"options\": {\"max_tokens\": 1}}",
    )
    .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn bad_options_are_422() {
    let app = spawn_app().await;
    expect_error(
        app.chat(json!({"message": "x", "options": {"max_tokens": 0}}))
            .await,
        422,
        "invalid_max_tokens",
    )
    .await;
    expect_error(
        app.chat(json!({"message": "x", "options": {"max_tokens": 1_000_000}}))
            .await,
        422,
        "invalid_max_tokens",
    )
    .await;
    // Far too slow (1e-300 once panicked in the pipeline; 1e-6 held a run slot for
    // days), negative, absurdly fast, or an answer that would take hours: each a
    // 422 before any run starts.
    for (pace, tokens) in [
        (json!(-5), 64),
        (json!(1e-300), 64),
        (json!(1e-6), 64),
        (json!(0.001), 1),
        (json!(1e300), 64),
        (json!(1), 8000),
    ] {
        let body = expect_error(
            app.chat(json!({"message": "x", "options": {"tokens_per_second": pace, "max_tokens": tokens}}))
                .await,
            422,
            "invalid_tokens_per_second",
        )
        .await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("100000"),
            "{body}"
        );
    }
    let (_, health) = app.get_json("/healthz").await;
    assert_eq!(health["active_runs"], 0, "no run was started");
    expect_error(
        app.chat(json!({"message": "x", "options": {"backend": "gpt-9"}}))
            .await,
        422,
        "unknown_backend",
    )
    .await;
    let body = expect_error(
        app.chat(json!({"message": "x", "options": {"backend": "gpt-9"}}))
            .await,
        422,
        "unknown_backend",
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("extractive") && message.contains("synthetic"),
        "the error lists the configured backends: {message}"
    );
    // A typo in an option is refused by name, not ignored (a full answer would
    // come back instead of a short one); unknown top-level fields stay accepted,
    // as front ends send their own.
    let body = expect_error(
        app.chat(json!({"message": "x", "options": {"max_token": 2}}))
            .await,
        422,
        "invalid_request",
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("max_token") && message.contains("max_tokens"),
        "{message}"
    );
    let ok = app
        .chat(json!({"message": "x", "session_id": "s", "stream": false}))
        .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn unknown_runs_and_conversations_are_404() {
    let app = spawn_app().await;
    expect_error(
        app.client
            .get(app.url("/api/runs/nope"))
            .send()
            .await
            .unwrap(),
        404,
        "run_not_found",
    )
    .await;
    expect_error(app.attach("nope", None).await, 404, "run_not_found").await;
    expect_error(
        app.client
            .post(app.url("/api/runs/nope/cancel"))
            .send()
            .await
            .unwrap(),
        404,
        "run_not_found",
    )
    .await;
    expect_error(
        app.client
            .get(app.url("/api/conversations/nope/messages"))
            .send()
            .await
            .unwrap(),
        404,
        "conversation_not_found",
    )
    .await;
    expect_error(
        app.client
            .delete(app.url("/api/conversations/nope"))
            .send()
            .await
            .unwrap(),
        404,
        "conversation_not_found",
    )
    .await;
    expect_error(
        app.chat(json!({"message": "x", "conversation_id": "nope"}))
            .await,
        404,
        "conversation_not_found",
    )
    .await;
    expect_error(
        app.client
            .get(app.url("/no/such/route"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        app.client.get(app.url("/api/chat")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    // The refused turn left nothing behind.
    let (_, list) = app.get_json("/api/conversations").await;
    assert_eq!(list["conversations"], json!([]));
}

#[tokio::test]
async fn a_last_event_id_that_is_not_a_number_is_400() {
    let app = spawn_app().await;
    let stream = app
        .chat_stream(json!({"message": "x", "options": {"max_tokens": 2, "tokens_per_second": 0}}))
        .await;
    let url = app.url(&format!("/api/runs/{}/events", stream.run_id()));
    for bad in ["abc", "-1", "1.5", "0x10"] {
        let response = app
            .client
            .get(&url)
            .header("Last-Event-ID", bad)
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_last_event_id").await;
    }
    let response = app
        .client
        .get(format!("{url}?last_event_id=ten"))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "invalid_last_event_id").await;
}

#[tokio::test]
async fn a_last_event_id_beyond_the_end_of_a_finished_run_is_400() {
    let app = spawn_app().await;
    let stream = app
        .chat_stream(json!({"message": "x", "options": {"max_tokens": 2, "tokens_per_second": 0}}))
        .await;
    let total = stream.events.len();
    // The last id itself is fine, and there is nothing more to send: 204 tells a
    // browser's EventSource to stop reconnecting instead of looping for ever.
    let at_end = app.attach(&stream.run_id(), Some(total)).await;
    assert_eq!(at_end.status(), 204);
    assert!(at_end.bytes().await.unwrap().is_empty());
    // A live run at its last event is still followed.
    let live = app
        .chat(json!({"message": "y", "options": {"max_tokens": 50, "tokens_per_second": 20}}))
        .await;
    let mut body = live.bytes_stream();
    let first = support::read_events(&mut body, 1).await;
    let run_id = first[0].data["run_id"].as_str().unwrap().to_owned();
    let attached = app.attach(&run_id, Some(1)).await;
    assert_eq!(attached.status(), 200);
    let body = expect_error(
        app.attach(&stream.run_id(), Some(total + 1)).await,
        400,
        "last_event_id_out_of_range",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&total.to_string())
    );
}

#[tokio::test]
async fn a_bad_idempotency_key_is_400_and_bad_query_values_too() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/chat"))
        .header("Idempotency-Key", "k".repeat(300))
        .json(&json!({"message": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "invalid_idempotency_key").await;
    let response = app
        .client
        .get(app.url("/api/conversations?limit=many"))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "invalid_query").await;
    let response = app
        .client
        .get(app.url("/api/conversations?limit=0"))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "invalid_limit").await;
}

#[tokio::test]
async fn too_many_concurrent_runs_is_503_with_retry_after() {
    let app = spawn_app_with(|config| config.max_concurrent_runs = 1).await;
    let busy = app
        .chat(json!({"message": "hold", "options": {"max_tokens": 1000, "tokens_per_second": 20}}))
        .await;
    assert_eq!(busy.status(), 200);
    let response = app.chat(json!({"message": "second"})).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let body = expect_error(response, 503, "too_many_runs").await;
    assert_eq!(
        body["error"]["message"],
        "1 run is already generating; try again shortly"
    );
}
