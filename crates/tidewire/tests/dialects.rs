//! The five front ends of the seeds, each read the way its own client code reads
//! its stream (its splitting, its prefix matching, its key routing), against the
//! server on a random port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{TestApp, spawn_app, spawn_app_with};

/// `POST path` with a JSON body (already serialized) and optional headers.
async fn post(
    app: &TestApp,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The body's network reads, as they arrived.
async fn reads(response: reqwest::Response) -> Vec<Vec<u8>> {
    let mut body = response.bytes_stream();
    let mut reads = Vec::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            reads.push(chunk.unwrap().to_vec());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("stream ended in time");
    reads
}

fn joined(reads: &[Vec<u8>]) -> String {
    String::from_utf8(reads.concat()).unwrap()
}

/// Splits on blank lines and keeps the unfinished rest, as 000, 001 and 003 do
/// (`buffer.split('\n\n'); buffer = events.pop()`).
fn blocks(text: &str) -> Vec<&str> {
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    let rest = blocks.pop().unwrap_or_default();
    assert!(
        rest.is_empty(),
        "the stream ended inside an event: {rest:?}"
    );
    blocks
}

async fn stored(app: &TestApp, conversation_id: &str) -> Vec<Value> {
    app.messages(conversation_id).await
}

async fn conversations(app: &TestApp) -> Vec<Value> {
    let (_, list) = app.get_json("/api/conversations").await;
    list["conversations"].as_array().unwrap().clone()
}

// --- 000: RAG chat ---------------------------------------------------------------

/// What 000's `streamSSE` fires: it joins the `data: ` lines of a block, takes
/// `[DONE]` as the end, and routes the JSON by its keys.
#[derive(Debug, Default)]
struct RagSeen {
    stages: Vec<String>,
    content: String,
    metadata: Vec<Value>,
    errors: Vec<String>,
    complete: bool,
    keys_per_event: Vec<usize>,
}

fn rag_client(text: &str) -> RagSeen {
    assert!(!text.contains('\r'), "LF framing only");
    let mut seen = RagSeen::default();
    for block in blocks(text) {
        let data: String = block
            .split('\n')
            .filter_map(|line| line.strip_prefix("data: "))
            .collect();
        if data.is_empty() {
            continue;
        }
        if data == "[DONE]" {
            seen.complete = true;
            continue;
        }
        let parsed: Value = serde_json::from_str(&data).unwrap();
        seen.keys_per_event.push(parsed.as_object().unwrap().len());
        if let Some(stage) = parsed["stage"].as_str() {
            seen.stages.push(stage.to_owned());
        }
        if let Some(token) = parsed["token"].as_str() {
            seen.content.push_str(token);
        }
        if parsed.get("metadata").is_some() {
            assert!(parsed["metadata"].is_object());
            seen.metadata.push(parsed["metadata"].clone());
        }
        if let Some(error) = parsed.get("error") {
            seen.errors
                .push(error.as_str().expect("error is a string").to_owned());
        }
    }
    seen
}

#[tokio::test]
async fn rag_chat_routes_one_key_per_event_and_ends_with_done() {
    let app = spawn_app().await;
    let body = json!({"message": "What is a tide?", "session_id": "current-session"});
    let response = post(
        &app,
        "/api/chat/stream",
        &body.to_string(),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = joined(&reads(response).await);
    let seen = rag_client(&text);
    assert!(seen.complete, "data: [DONE] at the end");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(
        seen.keys_per_event.iter().all(|keys| *keys == 1),
        "{seen:?}"
    );
    assert_eq!(seen.stages, ["generation"]);
    assert!(seen.errors.is_empty());
    // The session names a conversation; the answer is stored in it.
    let run = &seen.metadata[0];
    assert_eq!(run["conversation_id"], "current-session");
    let messages = stored(&app, "current-session").await;
    assert_eq!(messages[1]["content"], seen.content);
    assert_eq!(
        seen.metadata.last().unwrap()["usage"]["completion_tokens"],
        64
    );
    // The same session continues the same conversation.
    let again = post(&app, "/api/chat/stream", &body.to_string(), &[]).await;
    rag_client(&joined(&reads(again).await));
    assert_eq!(stored(&app, "current-session").await.len(), 4);
}

#[tokio::test]
async fn rag_chat_errors_are_read_as_message() {
    let app = spawn_app().await;
    let response = post(&app, "/api/chat/stream", "{\"message\": ", &[]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("not valid JSON"));
    let response = post(&app, "/api/chat/stream", "{\"message\": \"  \"}", &[]).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "the message must not be empty");
    // A body that is neither front end's.
    let response = post(&app, "/api/chat/stream", "{}", &[]).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("user_message"));
    // A wrong content type, an oversized body.
    let response = app
        .client
        .post(app.url("/api/chat/stream"))
        .header("content-type", "text/plain")
        .body("{\"message\": \"hi\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let big = json!({"message": "x".repeat(300 * 1024)}).to_string();
    let response = post(&app, "/api/chat/stream", &big, &[]).await;
    assert_eq!(response.status(), 413);
    assert!(conversations(&app).await.is_empty(), "nothing stored");
}

/// A run started on a dialect route resumes exactly through the native events URL.
async fn assert_resumes_natively(app: &TestApp, run_id: &str, after: usize, rest_text: &str) {
    let response = app.attach(run_id, Some(after)).await;
    assert_eq!(response.status(), 200);
    let stream = support::read_stream(response).await;
    assert_eq!(stream.events[0].id, (after + 1).to_string());
    assert_eq!(stream.text(), rest_text);
    assert_eq!(stream.last().name, "done");
}

#[tokio::test]
async fn a_rag_chat_run_resumes_through_the_native_events_url() {
    let app = spawn_app().await;
    let body = json!({"message": "resume me"}).to_string();
    let text = joined(&reads(post(&app, "/api/chat/stream", &body, &[]).await).await);
    let seen = rag_client(&text);
    let run_id = seen.metadata[0]["run_id"].as_str().unwrap().to_owned();
    // The client saw up to event 10 (ids are the native sequence numbers).
    let tokens_after_10: String = blocks(&text)
        .iter()
        .filter(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .is_some_and(|id| id.parse::<usize>().unwrap() > 10)
        })
        .filter_map(|block| {
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            let value: Value = serde_json::from_str(data).ok()?;
            value["token"].as_str().map(str::to_owned)
        })
        .collect();
    assert_resumes_natively(&app, &run_id, 10, &tokens_after_10).await;
}

// --- 001: ask pipeline -----------------------------------------------------------

/// What 001's reader does: a block is used only if it starts with `data: `, and
/// then the whole rest of the block is parsed as JSON.
fn ask_client(text: &str) -> Vec<Value> {
    let mut events = Vec::new();
    for block in blocks(text) {
        if let Some(json) = block.strip_prefix("data: ") {
            events
                .push(serde_json::from_str::<Value>(json).unwrap_or_else(|error| {
                    panic!("a block its parser drops: {block:?}: {error}")
                }));
        } else {
            assert!(block.starts_with(':'), "a block it would skip: {block:?}");
        }
    }
    events
}

#[tokio::test]
async fn ask_writes_exactly_one_data_line_per_block_and_closes_after_complete() {
    let app = spawn_app().await;
    let response = post(
        &app,
        "/api/ask/stream",
        &json!({"query": "Why is the sea salty?"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = joined(&reads(response).await);
    assert!(!text.contains("id:") && !text.contains("event:") && !text.contains("retry:"));
    let events = ask_client(&text);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"start"));
    assert_eq!(events[0]["query"], "Why is the sea salty?");
    assert_eq!(&types[types.len() - 2..], ["metadata", "complete"]);
    assert_eq!(events.last().unwrap()["success"], true);
    let content: String = events
        .iter()
        .filter(|e| e["type"] == "chunk")
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    let metadata = &events[types.len() - 2];
    assert!(metadata.get("confidence").is_some() && metadata["sources"].is_array());
    let conversation = &conversations(&app).await[0];
    let messages = stored(&app, conversation["id"].as_str().unwrap()).await;
    assert_eq!(messages[1]["content"], content);
}

#[tokio::test]
async fn ask_without_a_query_is_the_in_stream_error_query_required() {
    let app = spawn_app().await;
    for body in [json!({}), json!({"query": ""}), json!({"query": "   "})] {
        let response = post(&app, "/api/ask/stream", &body.to_string(), &[]).await;
        assert_eq!(response.status(), 200);
        let events = ask_client(&joined(&reads(response).await));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "error");
        assert_eq!(events[0]["message"], "Query required");
    }
    let response = post(&app, "/api/ask/stream", "not json", &[]).await;
    assert_eq!(response.status(), 400);
    assert!(conversations(&app).await.is_empty(), "nothing stored");
}

// --- 002: portfolio assistant ----------------------------------------------------

/// What 002's reader does: line by line, the last `event:` name stays current,
/// and each `data:` line is parsed as JSON for it (a failure is an error).
fn portfolio_client(text: &str) -> Vec<(String, Value)> {
    let mut current: Option<String> = None;
    let mut events = Vec::new();
    for line in text.split('\n') {
        if let Some(name) = line.strip_prefix("event:") {
            current = Some(name.trim().to_owned());
        } else if let Some(data) = line.strip_prefix("data:") {
            let data = data.trim();
            if let (false, Some(name)) = (data.is_empty(), &current) {
                let value = serde_json::from_str(data).expect("Failed to parse SSE data");
                events.push((name.clone(), value));
            } else {
                panic!("a data line without its event: {line:?}");
            }
        }
    }
    events
}

#[tokio::test]
async fn portfolio_takes_a_double_encoded_body_and_names_every_event() {
    let app = spawn_app().await;
    let inner = json!({"conversation_id": "conv-7", "text": "How is my portfolio?"}).to_string();
    let double = serde_json::to_string(&inner).unwrap();
    let response = post(
        &app,
        "/api/v1/chat/send",
        &double,
        &[
            ("authorization", "Bearer any-token"),
            ("body", &inner),
            ("accept", "text/event-stream"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = joined(&reads(response).await);
    let events = portfolio_client(&text);
    assert_eq!(events[0].0, "start");
    assert_eq!(events[0].1["conversation_id"], "conv-7");
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(done["status"], "complete");
    let content: String = events
        .iter()
        .filter(|(name, _)| name == "message")
        .map(|(_, data)| {
            assert_eq!(data["role"], "assistant");
            data["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(stored(&app, "conv-7").await[1]["content"], content);
    // A plain (single-encoded) body works too, and continues the conversation.
    let response = post(&app, "/api/v1/chat/send", &inner, &[]).await;
    portfolio_client(&joined(&reads(response).await));
    assert_eq!(stored(&app, "conv-7").await.len(), 4);
    // A run resumes through the native events URL after any id it wrote.
    let run_id = events[0].1["run_id"].as_str().unwrap();
    let native = support::read_stream(app.attach(run_id, None).await).await;
    assert_eq!(native.text(), content);
}

#[tokio::test]
async fn portfolio_errors_are_read_as_detail() {
    let app = spawn_app().await;
    let response = post(
        &app,
        "/api/v1/chat/send",
        &json!({"conversation_id": "c"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"], "the message must not be empty");
    let response = post(&app, "/api/v1/chat/send", "\"{not json\"", &[]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("not valid JSON"));
    assert!(conversations(&app).await.is_empty());
}

// --- 003: canvas agent chat ------------------------------------------------------

/// What 003's reader does: per block, the `event:` name (default `message`) and the
/// last `data:` line, parsed as JSON.
fn canvas_client(text: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for block in blocks(text) {
        let mut name = "message".to_owned();
        let mut data = None;
        for line in block.split('\n') {
            if let Some(event) = line.strip_prefix("event:") {
                name = event.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data = Some(value.trim().to_owned());
            }
        }
        if let Some(data) = data {
            events.push((name, serde_json::from_str(&data).unwrap()));
        }
    }
    events
}

#[tokio::test]
async fn canvas_announces_a_new_conversation_and_stores_the_answer_before_stream_end() {
    let app = spawn_app().await;
    let body = json!({
        "user_message": "Summarise this board",
        "context_node_ids": ["n1", "n2"],
        "project_id": "2f6e1c2a-0000-4000-8000-000000000000",
        "chat_node_id": "chat-1"
    });
    let response = post(
        &app,
        "/api/chat/stream",
        &body.to_string(),
        &[("authorization", "Bearer t")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let events = canvas_client(&joined(&reads(response).await));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..2], ["stream_start", "conversation_id"]);
    assert_eq!(names.last(), Some(&"stream_end"));
    assert!(names[2..names.len() - 1].iter().all(|n| *n == "message"));
    let conversation_id = events[1].1["conversation_id"].as_str().unwrap().to_owned();
    let end = &events.last().unwrap().1;
    assert_eq!(end["status"], "complete");
    let content: String = events
        .iter()
        .filter_map(|(_, data)| data["token"].as_str())
        .collect();
    // What the client refetches after stream_end is already there.
    let messages = stored(&app, &conversation_id).await;
    assert_eq!(messages[0]["content"], "Summarise this board");
    assert_eq!(messages[1]["id"], end["message_id"]);
    assert_eq!(messages[1]["content"], content);
    assert_eq!(messages[1]["status"], "complete");
    // Continuing it: no conversation_id event.
    let next = json!({"user_message": "And now?", "conversation_id": conversation_id, "context_node_ids": [], "project_id": "p", "chat_node_id": "chat-1"});
    let events = canvas_client(&joined(
        &reads(post(&app, "/api/chat/stream", &next.to_string(), &[]).await).await,
    ));
    assert_eq!(events[0].0, "stream_start");
    assert_eq!(events[1].0, "message");
    assert_eq!(stored(&app, &conversation_id).await.len(), 4);
}

#[tokio::test]
async fn canvas_errors_have_their_status_and_an_unknown_conversation_is_404() {
    let app = spawn_app().await;
    let body = json!({"user_message": "hi", "conversation_id": "nope", "context_node_ids": [], "project_id": "p", "chat_node_id": "c"});
    let response = post(&app, "/api/chat/stream", &body.to_string(), &[]).await;
    assert_eq!(response.status(), 404);
    let body = json!({"user_message": "hi", "context_node_ids": "n1"});
    let response = post(&app, "/api/chat/stream", &body.to_string(), &[]).await;
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("context_node_ids")
    );
    assert!(conversations(&app).await.is_empty());
}

// --- 004: chatbot API ------------------------------------------------------------

/// What 004's fetch client does: each network read on its own, split on `\n`
/// without buffering, every `data: ` line parsed as JSON (no try/catch).
fn chatbot_client(reads: &[Vec<u8>]) -> Vec<Value> {
    let mut events = Vec::new();
    for read in reads {
        let chunk = std::str::from_utf8(read).expect("each read is whole text");
        for line in chunk.split('\n') {
            if let Some(data) = line.strip_prefix("data: ") {
                events.push(serde_json::from_str(data).unwrap_or_else(|error| {
                    panic!("a line its client cannot parse: {line:?}: {error}")
                }));
            }
        }
    }
    events
}

#[tokio::test]
async fn chatbot_events_are_whole_in_each_read_and_metadata_ends_the_answer() {
    let app = spawn_app().await;
    let body = json!({"conversation_id": "0b9f3c1e-1111-4222-8333-444455556666", "message": "Bonjour, ça va ?", "stream": true});
    let response = post(
        &app,
        "/api/v1/chat/",
        &body.to_string(),
        &[
            ("authorization", "Bearer t"),
            ("accept", "text/event-stream"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let reads = reads(response).await;
    let text = joined(&reads);
    assert!(text.is_ascii(), "every character past ASCII is escaped");
    assert!(!text.contains("[DONE]") && !text.contains("event:"));
    let events = chatbot_client(&reads);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "metadata");
    assert_eq!(
        last["conversation_id"],
        "0b9f3c1e-1111-4222-8333-444455556666"
    );
    assert!(last["message_id"].is_string() && last["usage"].is_object());
    let content: String = events
        .iter()
        .filter(|e| e["type"] == "content")
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    let messages = stored(&app, "0b9f3c1e-1111-4222-8333-444455556666").await;
    assert_eq!(messages[0]["content"], "Bonjour, ça va ?");
    assert_eq!(messages[1]["content"], content);
    // Without the trailing slash, and with stream false: one JSON object.
    let body = json!({"conversation_id": "0b9f3c1e-1111-4222-8333-444455556666", "message": "again", "stream": false});
    let response = post(&app, "/api/v1/chat", &body.to_string(), &[]).await;
    assert_eq!(response.status(), 200);
    let whole: Value = response.json().await.unwrap();
    assert_eq!(whole["status"], "complete");
    assert_eq!(
        whole["content"],
        stored(&app, "0b9f3c1e-1111-4222-8333-444455556666").await[3]["content"]
    );
    // Resumable through the native events URL.
    let run_id = last["run_id"].as_str().unwrap();
    let native = support::read_stream(app.attach(run_id, None).await).await;
    assert_eq!(native.text(), content);
}

#[tokio::test]
async fn chatbot_errors_are_a_one_event_stream_with_the_right_status() {
    let app = spawn_app().await;
    let response = post(&app, "/api/v1/chat/", "{\"message\": 5}", &[]).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = chatbot_client(&reads(response).await);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "error");
    assert_eq!(events[0]["error"], "message must be a string");
    assert!(conversations(&app).await.is_empty());
}

#[tokio::test]
async fn chatbot_keepalives_flow_from_the_first_byte_and_while_the_model_is_quiet() {
    // A slow model (one token a second) and a short keepalive for the test.
    let app = spawn_app_with(|config| {
        config.default_tokens_per_second = 1.0;
        config.dialects.chatbot.keepalive = Duration::from_millis(100);
    })
    .await;
    let body = json!({"message": "slowly", "stream": true}).to_string();
    let response = post(&app, "/api/v1/chat/", &body, &[]).await;
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while text.matches("\"type\":\"content\"").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with(": keepalive\n\n"), "{text}");
    assert!(text.matches(": keepalive").count() >= 4, "{text}");
}

// --- every dialect: a client that goes away ---------------------------------------

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_run_after_the_grace() {
    let app = spawn_app_with(|config| {
        config.default_tokens_per_second = 5.0;
        for route in [
            &mut config.dialects.rag,
            &mut config.dialects.canvas,
            &mut config.dialects.ask,
            &mut config.dialects.portfolio,
            &mut config.dialects.chatbot,
        ] {
            route.cancel_on_disconnect = Some(Duration::from_millis(200));
        }
    })
    .await;
    let requests = [
        ("/api/chat/stream", json!({"message": "a"}).to_string()),
        ("/api/chat/stream", json!({"user_message": "b", "context_node_ids": [], "project_id": "p", "chat_node_id": "c"}).to_string()),
        ("/api/ask/stream", json!({"query": "c"}).to_string()),
        ("/api/v1/chat/send", json!({"conversation_id": "p-1", "text": "d"}).to_string()),
        ("/api/v1/chat/", json!({"conversation_id": "q-1", "message": "e"}).to_string()),
    ];
    for (path, body) in requests {
        let response = post(&app, path, &body, &[]).await;
        let mut stream = response.bytes_stream();
        // Read until a first token is out, then go away.
        let mut seen = String::new();
        while !["token", "content", "delta"]
            .iter()
            .any(|key| seen.contains(key))
        {
            let chunk = stream.next().await.unwrap().unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        drop(stream);
    }
    let all = app
        .eventually(Duration::from_secs(20), || async {
            let list = conversations(&app).await;
            let mut statuses = Vec::new();
            for conversation in &list {
                let messages = stored(&app, conversation["id"].as_str().unwrap()).await;
                statuses.push(messages[1]["status"].as_str().unwrap().to_owned());
            }
            (statuses.len() == 5 && statuses.iter().all(|s| s == "cancelled")).then_some(statuses)
        })
        .await;
    assert_eq!(all.len(), 5);
}

#[tokio::test]
async fn browser_front_ends_on_another_origin_pass_the_cors_preflight() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/chat/send",
        "/api/chat/stream",
        "/api/v1/chat/",
        "/api/ask/stream",
    ] {
        let preflight = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "http://localhost:3000")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,cache-control,body",
            )
            .send()
            .await
            .unwrap();
        assert!(
            preflight.status().is_success(),
            "{path}: {}",
            preflight.status()
        );
        let headers = preflight.headers();
        assert_eq!(
            headers["access-control-allow-origin"],
            "http://localhost:3000"
        );
        assert!(
            headers["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }
    let response = app
        .client
        .post(app.url("/api/v1/chat/send"))
        .header("origin", "http://localhost:3000")
        .header("content-type", "application/json")
        .body(json!({"conversation_id": "x", "text": ""}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:3000",
        "errors too"
    );
    // A page from anywhere else gets no CORS headers: its browser keeps the
    // answer from it.
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/chat"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn the_cors_allowlist_is_configurable() {
    let app = support::spawn_app_with(|config| {
        config.auth.cors_origins = vec!["https://chat.example".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/chat"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,last-event-id,idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://chat.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("last-event-id"),
        "{headers}"
    );
    let exposed = app
        .client
        .post(app.url("/api/chat"))
        .header("origin", "https://chat.example")
        .json(&json!({"message": "hi", "stream": false}))
        .send()
        .await
        .unwrap();
    assert!(
        exposed.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("retry-after")
    );
    let refused = preflight("http://localhost:3000").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
}
