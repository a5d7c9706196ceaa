//! Tools: a scripted model (OpenAI's wire protocol) that asks for tools, HTTP tools
//! on a random port, and the built-in `search_documents`; what is streamed, what
//! the model receives back, what is stored, and what a cancel stops. The MCP
//! servers' side is in the `tidewire-mcp-fixture` crate's tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use support::scripted::{Reply, ScriptedModel, call, offered, tool_results};
use support::upstream::backend;
use support::{Event, Stream, TestApp, read_until, spawn_app_with};
use tidewire::config::{BackendKind, HttpToolConfig};

/// What the tool server saw: when each call arrived, and when a call's connection
/// was dropped before its answer.
#[derive(Default)]
struct Seen {
    started: Vec<(String, Instant)>,
    dropped: Vec<Instant>,
}

/// HTTP tools on a random port: `weather` answers at once, `slow` after 400 ms,
/// `hang` never, `fail` with a 500.
struct ToolServer {
    base: String,
    seen: Arc<Mutex<Seen>>,
}

struct DropWatch(Arc<Mutex<Seen>>, bool);

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.1 {
            self.0.lock().unwrap().dropped.push(Instant::now());
        }
    }
}

async fn tool_server() -> ToolServer {
    async fn weather(
        State(seen): State<Arc<Mutex<Seen>>>,
        body: axum::Json<Value>,
    ) -> axum::Json<Value> {
        seen.lock()
            .unwrap()
            .started
            .push(("weather".into(), Instant::now()));
        axum::Json(json!({"city": body.0["city"], "temperature": 21}))
    }
    async fn slow(
        State(seen): State<Arc<Mutex<Seen>>>,
        body: axum::Json<Value>,
    ) -> axum::Json<Value> {
        seen.lock()
            .unwrap()
            .started
            .push(("slow".into(), Instant::now()));
        tokio::time::sleep(Duration::from_millis(400)).await;
        axum::Json(json!({"waited": body.0["label"]}))
    }
    async fn hang(State(seen): State<Arc<Mutex<Seen>>>) -> axum::Json<Value> {
        seen.lock()
            .unwrap()
            .started
            .push(("hang".into(), Instant::now()));
        let mut watch = DropWatch(Arc::clone(&seen), false);
        tokio::time::sleep(Duration::from_secs(600)).await;
        watch.1 = true;
        axum::Json(json!({}))
    }
    async fn headers(headers: axum::http::HeaderMap) -> axum::Json<Value> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        axum::Json(json!({"x-home": header("x-home"), "content-type": header("content-type")}))
    }
    async fn fail() -> (axum::http::StatusCode, &'static str) {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "database down",
        )
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new()
        .route("/weather", post(weather))
        .route("/slow", post(slow))
        .route("/hang", post(hang))
        .route("/fail", post(fail))
        .route("/headers", post(headers))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    ToolServer {
        base: format!("http://{addr}"),
        seen,
    }
}

fn http_tool(server: &ToolServer, name: &str, parameters: Value) -> HttpToolConfig {
    HttpToolConfig {
        name: name.into(),
        description: format!("The {name} tool"),
        parameters: Some(parameters),
        url: format!("{}/{name}", server.base),
        headers: Default::default(),
        timeout: None,
    }
}

fn any_object() -> Value {
    json!({"type": "object"})
}

fn city() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}},
           "required": ["city"], "additionalProperties": false})
}

/// The server with `model` answering and the four HTTP tools of `tools`.
async fn app(
    model: &ScriptedModel,
    tools: &ToolServer,
    adjust: impl FnOnce(&mut tidewire::Config),
) -> TestApp {
    let url = model.url();
    let tools = vec![
        http_tool(tools, "weather", city()),
        http_tool(tools, "slow", any_object()),
        http_tool(tools, "hang", any_object()),
        http_tool(tools, "fail", any_object()),
    ];
    spawn_app_with(move |config| {
        config
            .llm
            .backends
            .insert("model".into(), backend(BackendKind::Openai, url));
        config.llm.default = "model".into();
        config.tools.http = tools;
        adjust(config);
    })
    .await
}

fn named<'a>(stream: &'a Stream, name: &str) -> Vec<&'a Event> {
    stream.events.iter().filter(|e| e.name == name).collect()
}

fn names(stream: &Stream) -> Vec<&str> {
    let mut names: Vec<&str> = stream.events.iter().map(|e| e.name.as_str()).collect();
    names.dedup();
    names
}

#[tokio::test]
async fn a_tool_call_is_streamed_sent_back_stored_and_part_of_the_next_turn() {
    let tools = tool_server().await;
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::TextAndTools(
            "Let me look. ".into(),
            vec![call("call_1", "weather", r#"{"city": "Oslo"}"#)],
        ),
        1 => Reply::Text("It is 21 degrees in Oslo.".into()),
        _ => Reply::Text("Yes, 21.".into()),
    })
    .await;
    let app = app(&model, &tools, |_| {}).await;

    let stream = app
        .chat_stream(json!({"message": "Weather in Oslo?"}))
        .await;
    assert_eq!(
        names(&stream),
        [
            "run",
            "stage",
            "token",
            "tool_started",
            "tool_finished",
            "token",
            "metadata",
            "done"
        ]
    );
    let started = named(&stream, "tool_started");
    assert_eq!(
        started[0].data,
        json!({"tool_call_id": "call_1", "tool_name": "weather", "arguments": {"city": "Oslo"}})
    );
    let finished = &named(&stream, "tool_finished")[0].data;
    assert_eq!(finished["tool_call_id"], "call_1");
    assert_eq!(
        finished["result"],
        json!({"city": "Oslo", "temperature": 21})
    );
    assert!(finished["duration_ms"].as_u64().unwrap() < 5_000);
    assert!(finished.get("is_error").is_none(), "{finished}");
    assert_eq!(stream.text(), "Let me look. It is 21 degrees in Oslo.");
    assert_eq!(stream.last().data["status"], "complete");

    // Usage adds up over both rounds (10 + 5 each).
    let metadata = &named(&stream, "metadata")[0].data;
    assert_eq!(
        metadata["usage"],
        json!({"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30})
    );
    assert!(metadata.get("usage_estimated").is_none_or(|e| e == false));
    assert_eq!(metadata["finish_reason"], "stop");

    // The model was offered the tools, then got its call and the result back.
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(offered(&requests[0]), ["fail", "hang", "slow", "weather"]);
    let weather = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "weather")
        .unwrap();
    assert_eq!(weather["type"], "function");
    assert_eq!(weather["function"]["description"], "The weather tool");
    assert_eq!(weather["function"]["parameters"], city());
    let messages = requests[1]["messages"].as_array().unwrap();
    let assistant = &messages[messages.len() - 2];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["content"], "Let me look. ");
    assert_eq!(
        assistant["tool_calls"],
        json!([{"id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}])
    );
    assert_eq!(
        tool_results(&requests[1]),
        [(
            "call_1".to_owned(),
            json!({"city": "Oslo", "temperature": 21})
        )]
    );

    // Stored with the message.
    let conversation = stream.conversation_id();
    let stored = app.messages(&conversation).await;
    let answer = &stored[1];
    assert_eq!(answer["content"], "Let me look. It is 21 degrees in Oslo.");
    assert_eq!(answer["tool_calls"][0]["tool_name"], "weather");
    assert_eq!(
        answer["tool_calls"][0]["arguments"],
        json!({"city": "Oslo"})
    );
    assert_eq!(
        answer["tool_calls"][0]["result"],
        json!({"city": "Oslo", "temperature": 21})
    );
    assert!(answer["tool_calls"][0]["duration_ms"].is_u64());

    // The next turn sends the call and its result back as history.
    let next = app
        .chat_stream(json!({"conversation_id": conversation, "message": "Sure?"}))
        .await;
    assert_eq!(next.text(), "Yes, 21.");
    let request = &model.requests()[2];
    let roles: Vec<&str> = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant", "user"]);
    assert_eq!(request["messages"][1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        request["messages"][3]["content"],
        "Let me look. It is 21 degrees in Oslo."
    );
}

#[tokio::test]
async fn the_calls_of_one_round_run_at_once() {
    let tools = tool_server().await;
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::Tools(vec![
            call("a", "slow", r#"{"label": "a"}"#),
            call("b", "slow", r#"{"label": "b"}"#),
        ]),
        _ => Reply::Text("Both done.".into()),
    })
    .await;
    let app = app(&model, &tools, |_| {}).await;
    let stream = app.chat_stream(json!({"message": "Two things"})).await;
    assert_eq!(stream.last().data["status"], "complete");
    // Both start before either finishes.
    let tool_events: Vec<&str> = stream
        .events
        .iter()
        .filter(|e| e.name.starts_with("tool_"))
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        tool_events,
        [
            "tool_started",
            "tool_started",
            "tool_finished",
            "tool_finished"
        ]
    );
    for finished in named(&stream, "tool_finished") {
        let took = finished.data["duration_ms"].as_u64().unwrap();
        assert!((400..5_000).contains(&took), "{took} ms");
        let id = finished.data["tool_call_id"].as_str().unwrap();
        assert_eq!(finished.data["result"], json!({"waited": id}));
    }
    // The tool server got the second call while the first still slept.
    let seen = tools.seen.lock().unwrap();
    let starts: Vec<Instant> = seen.started.iter().map(|(_, at)| *at).collect();
    assert_eq!(starts.len(), 2);
    let apart = starts[1].duration_since(starts[0]);
    assert!(apart < Duration::from_millis(300), "{apart:?} apart");
    // Results go back in the order of the calls.
    let results = tool_results(&model.requests()[1]);
    assert_eq!(results[0].0, "a");
    assert_eq!(results[1].0, "b");
}

#[tokio::test]
async fn bad_arguments_unknown_tools_failures_and_timeouts_go_back_to_the_model() {
    let tools = tool_server().await;
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::Tools(vec![
            call("c1", "weather", r#"{"city": 5}"#),
            call("c2", "nope", "{}"),
            call("c3", "fail", "{}"),
            call("c4", "hang", "{}"),
            call("c5", "weather", r#"{"city": "#),
        ]),
        _ => Reply::Text("I could not find out.".into()),
    })
    .await;
    let app = app(&model, &tools, |config| {
        config.tools.timeout = Duration::from_millis(500);
    })
    .await;
    let stream = app.chat_stream(json!({"message": "Try everything"})).await;
    assert_eq!(stream.last().data["status"], "complete");
    assert_eq!(stream.text(), "I could not find out.");
    let finished = named(&stream, "tool_finished");
    let code = |id: &str| {
        let event = finished
            .iter()
            .find(|e| e.data["tool_call_id"] == id)
            .unwrap();
        assert_eq!(event.data["is_error"], true, "{}", event.data);
        event.data["result"]["code"].as_str().unwrap().to_owned()
    };
    assert_eq!(code("c1"), "invalid_arguments");
    assert_eq!(code("c2"), "unknown_tool");
    assert_eq!(code("c3"), "tool_failed");
    assert_eq!(code("c4"), "tool_timeout");
    assert_eq!(code("c5"), "invalid_arguments");
    let c3 = finished
        .iter()
        .find(|e| e.data["tool_call_id"] == "c3")
        .unwrap();
    assert!(
        c3.data["result"]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 500: database down")
    );
    // Invalid JSON is shown as the text the model wrote.
    let c5 = named(&stream, "tool_started")
        .into_iter()
        .find(|e| e.data["tool_call_id"] == "c5")
        .unwrap();
    assert_eq!(c5.data["arguments"], json!("{\"city\": "));
    // The schema violation names the field.
    let c1 = finished
        .iter()
        .find(|e| e.data["tool_call_id"] == "c1")
        .unwrap();
    assert!(
        c1.data["result"]["error"]
            .as_str()
            .unwrap()
            .contains("/city"),
        "{}",
        c1.data
    );
    let timed_out = finished
        .iter()
        .find(|e| e.data["tool_call_id"] == "c4")
        .unwrap();
    let took = timed_out.data["duration_ms"].as_u64().unwrap();
    assert!((500..3_000).contains(&took), "{took} ms");
    // Only the good-shaped calls reached the tool server; the hanging one was
    // abandoned when it timed out.
    let seen = tools.seen.lock().unwrap();
    let called: Vec<&str> = seen.started.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(called, ["hang"]);
    assert_eq!(seen.dropped.len(), 1);
    drop(seen);
    // The model got every error as a result.
    let results = tool_results(&model.requests()[1]);
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(|(_, r)| r["error"].is_string()));
}

#[tokio::test]
async fn after_the_last_round_the_model_must_answer_without_tools() {
    let tools = tool_server().await;
    // Asks for the weather while it is offered tools; a "stubborn" question makes it
    // ask even when it is not.
    let model = ScriptedModel::start(|body, _| {
        let question = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned();
        if !offered(body).is_empty() || question.contains("stubborn") {
            Reply::Tools(vec![call("w", "weather", r#"{"city": "Bergen"}"#)])
        } else {
            Reply::Text("Rainy, as always.".into())
        }
    })
    .await;
    let app = app(&model, &tools, |config| config.tools.max_rounds = 2).await;

    let stream = app.chat_stream(json!({"message": "Weather?"})).await;
    assert_eq!(stream.last().data["status"], "complete");
    assert_eq!(stream.text(), "Rainy, as always.");
    assert_eq!(named(&stream, "tool_finished").len(), 2);
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(offered(&requests[1]).len(), 4);
    assert!(requests[2].get("tools").is_none(), "{}", requests[2]);

    let stream = app
        .chat_stream(json!({"message": "stubborn weather"}))
        .await;
    assert_eq!(stream.last().data["status"], "failed");
    let error = &named(&stream, "error")[0].data;
    assert_eq!(error["code"], "too_many_tool_rounds");
    assert_eq!(named(&stream, "tool_finished").len(), 2);
}

#[tokio::test]
async fn a_cancel_during_a_call_stops_the_call_and_keeps_what_happened() {
    let tools = tool_server().await;
    let model = ScriptedModel::start(|_, _| {
        Reply::TextAndTools("Checking. ".into(), vec![call("h", "hang", "{}")])
    })
    .await;
    let app = app(&model, &tools, |_| {}).await;
    let response = app.chat(json!({"message": "Hang on"})).await;
    let mut body = response.bytes_stream();
    let events = read_until(&mut body, |e| e.name == "tool_started").await;
    let run_id = events[0].data["run_id"].as_str().unwrap().to_owned();
    let conversation = events[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The call is running at the tool server.
    app.eventually(Duration::from_secs(5), || async {
        (!tools.seen.lock().unwrap().started.is_empty()).then_some(())
    })
    .await;
    let cancelled_at = Instant::now();
    let (status, _) = app.post_json(&format!("/api/runs/{run_id}/cancel")).await;
    assert_eq!(status, 200);
    let rest = read_until(&mut body, |e| e.name == "done").await;
    assert_eq!(rest.last().unwrap().data["status"], "cancelled");
    assert!(rest.iter().all(|e| e.name != "tool_finished"));
    assert!(cancelled_at.elapsed() < Duration::from_secs(2));
    // The call's connection was dropped, not left to hang.
    app.eventually(Duration::from_secs(2), || async {
        (tools.seen.lock().unwrap().dropped.len() == 1).then_some(())
    })
    .await;
    assert_eq!(model.requests().len(), 1);
    let stored = app.messages(&conversation).await;
    assert_eq!(stored[1]["status"], "cancelled");
    assert_eq!(stored[1]["content"], "Checking. ");
    assert_eq!(stored[1]["tool_calls"][0]["tool_name"], "hang");
    assert!(stored[1]["tool_calls"][0].get("result").is_none());
}

#[tokio::test]
async fn a_request_narrows_the_tools_and_openai_clients_get_none_of_the_servers() {
    let tools = tool_server().await;
    let model = ScriptedModel::start(|_, _| Reply::Text("Fine.".into())).await;
    let app = app(&model, &tools, |_| {}).await;

    let stream = app
        .chat_stream(json!({"message": "a", "options": {"tools": ["weather", "slow"]}}))
        .await;
    assert_eq!(stream.last().data["status"], "complete");
    assert_eq!(offered(&model.requests()[0]), ["weather", "slow"]);

    app.chat_stream(json!({"message": "b", "options": {"tools": []}}))
        .await;
    assert!(model.requests()[1].get("tools").is_none());

    let response = app
        .chat(json!({"message": "c", "options": {"tools": ["weather", "nope"]}}))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_tool");
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));

    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .json(&json!({"model": "model", "messages": [{"role": "user", "content": "d"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(model.requests().len(), 3);
    assert!(model.requests()[2].get("tools").is_none());

    // What is on offer, for operators and front ends.
    let (status, listed) = app.get_json("/api/tools").await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["fail", "hang", "slow", "weather"]);
}

#[tokio::test]
async fn a_model_searches_the_documents_itself() {
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::Tools(vec![call(
            "s",
            "search_documents",
            r#"{"query": "albatross ledger", "limit": 2}"#,
        )]),
        _ => Reply::Text("The harbour master keeps it.".into()),
    })
    .await;
    let url = model.url();
    let app = spawn_app_with(move |config| {
        config
            .llm
            .backends
            .insert("model".into(), backend(BackendKind::Openai, url));
        config.llm.default = "model".into();
        config.documents.seed_docs = false;
        config.tools.search_documents = true;
    })
    .await;
    let response = app
        .client
        .post(app.url("/api/documents"))
        .json(&json!({"name": "harbour.md",
                      "text": "# Harbour\n\nThe harbour master keeps a ledger of albatross sightings."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let stream = app
        .chat_stream(json!({"message": "Who keeps the ledger?"}))
        .await;
    assert_eq!(stream.last().data["status"], "complete");
    let result = &named(&stream, "tool_finished")[0].data["result"];
    assert_eq!(result["results"][0]["document_name"], "harbour.md");
    assert!(
        result["results"][0]["text"]
            .as_str()
            .unwrap()
            .contains("albatross")
    );
}

#[tokio::test]
async fn the_ui_stream_shows_tool_calls_as_tool_parts_the_server_ran() {
    let tools = tool_server().await;
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::Tools(vec![
            call("ok", "weather", r#"{"city": "Rome"}"#),
            call("bad", "fail", "{}"),
        ]),
        _ => Reply::Text("Warm.".into()),
    })
    .await;
    let app = app(&model, &tools, |_| {}).await;
    let response = app
        .client
        .post(app.url("/api/ui/chat"))
        .json(&json!({
            "id": "chat-tools",
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Rome?"}]}],
            "trigger": "submit-message",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let parts: Vec<Value> = text
        .split("\n\n")
        .filter_map(|block| block.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<&Value> { parts.iter().filter(|p| p["type"] == kind).collect() };
    let input = of("tool-input-available");
    assert_eq!(input.len(), 2);
    assert_eq!(input[0]["input"], json!({"city": "Rome"}));
    assert_eq!(input[0]["providerExecuted"], true);
    let output = of("tool-output-available");
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["toolCallId"], "ok");
    assert_eq!(output[0]["output"]["temperature"], 21);
    let error = of("tool-output-error");
    assert_eq!(error[0]["toolCallId"], "bad");
    assert!(
        error[0]["errorText"]
            .as_str()
            .unwrap()
            .contains("database down")
    );
    assert_eq!(parts.last().unwrap()["type"], "finish");
}

#[tokio::test]
async fn the_portfolio_front_end_gets_tool_started_and_tool_finished() {
    let tools = tool_server().await;
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::Tools(vec![call("p1", "weather", r#"{"city": "Lima"}"#)]),
        _ => Reply::Text("Sunny.".into()),
    })
    .await;
    let app = app(&model, &tools, |_| {}).await;
    let inner = json!({"conversation_id": "conv-tools", "text": "Lima?"}).to_string();
    let response = app
        .client
        .post(app.url("/api/v1/chat/send"))
        .header("authorization", "Bearer any-token")
        .header("content-type", "application/json")
        .body(serde_json::to_string(&inner).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    // 002's reader: the last `event:` name, then its `data:` line as JSON.
    let mut events = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("event: ") {
            current = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            events.push((
                current.clone(),
                serde_json::from_str::<Value>(data).unwrap(),
            ));
        }
    }
    let started = events.iter().find(|(n, _)| n == "tool_started").unwrap();
    assert_eq!(started.1["tool_name"], "weather");
    let finished = events.iter().find(|(n, _)| n == "tool_finished").unwrap();
    assert_eq!(finished.1["tool_name"], "weather");
    assert!(finished.1["duration_ms"].is_u64());
    assert_eq!(finished.1["result"]["temperature"], 21);
    let done = events.last().unwrap();
    assert_eq!(done.0, "done");
    assert_eq!(done.1["tool_calls_count"], 1);
}

/// A model for OpenAI clients' own tools: asks for `get_weather` until it has the
/// result, then answers with the temperature it got.
async fn weather_model() -> ScriptedModel {
    ScriptedModel::start(|body, _| {
        let last = body["messages"].as_array().unwrap().last().unwrap().clone();
        if last["role"] == "tool" {
            let result: Value = serde_json::from_str(last["content"].as_str().unwrap()).unwrap();
            Reply::Text(format!("{} degrees in Paris.", result["temperature"]))
        } else {
            Reply::Tools(vec![call("call_9", "get_weather", r#"{"city": "Paris"}"#)])
        }
    })
    .await
}

fn client_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}])
}

#[tokio::test]
async fn openai_clients_tools_go_to_the_model_and_its_calls_come_back_to_them() {
    let tools = tool_server().await;
    let model = weather_model().await;
    let app = app(&model, &tools, |_| {}).await;
    let post = |body: Value| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .json(&body)
            .send()
    };

    // Streamed: the call as a tool_calls delta, then finish_reason tool_calls.
    let question = json!({"role": "user", "content": "Weather in Paris?"});
    let response = post(
        json!({"model": "model", "messages": [question], "stream": true,
                               "tools": client_tools(), "tool_choice": "required"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|block| block.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(
        calls,
        [&json!([{"index": 0, "id": "call_9", "type": "function",
                  "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}])]
    );
    let reasons: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(reasons, [&json!("tool_calls")]);
    // The model got the client's tools and choice as given, and none of the server's.
    let first = &model.requests()[0];
    assert_eq!(offered(first), ["get_weather"]);
    assert_eq!(first["tools"], client_tools());
    assert_eq!(first["tool_choice"], "required");
    assert!(tools.seen.lock().unwrap().started.is_empty());

    // The client ran it and goes on: the call and its result follow the question.
    let assistant = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_9", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]});
    let result =
        json!({"role": "tool", "tool_call_id": "call_9", "content": "{\"temperature\": 18}"});
    let response = post(json!({"model": "model", "tools": client_tools(),
                               "messages": [question, assistant, result]}))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "18 degrees in Paris."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let second = &model.requests()[1];
    let messages = second["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool"]);
    assert_eq!(messages[1]["tool_calls"], assistant["tool_calls"]);
    assert_eq!(messages[2]["tool_call_id"], "call_9");

    // Not streamed: the call in the message, no content.
    let response = post(json!({"model": "model", "messages": [question],
                               "tools": client_tools()}))
    .await
    .unwrap();
    let body: Value = response.json().await.unwrap();
    let message = &body["choices"][0]["message"];
    assert!(message["content"].is_null(), "{body}");
    assert_eq!(message["tool_calls"][0]["id"], "call_9");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn openai_tool_requests_that_cannot_work_are_400s() {
    let tools = tool_server().await;
    let model = weather_model().await;
    let app = app(&model, &tools, |_| {}).await;
    let question = json!({"role": "user", "content": "Weather?"});
    let call = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]});
    let cases = [
        // A result for a call nobody made.
        json!({"model": "model", "messages": [question,
            {"role": "tool", "tool_call_id": "c9", "content": "{}"}]}),
        // A call without its result.
        json!({"model": "model", "messages": [question, call, {"role": "user", "content": "?"}]}),
        json!({"model": "model", "messages": [question, call]}),
        // A tool_choice that names no tool.
        json!({"model": "model", "messages": [question], "tools": client_tools(),
               "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
        json!({"model": "model", "messages": [question], "tools": [{"type": "retrieval"}]}),
        // A model that takes no tools.
        json!({"model": "synthetic", "messages": [question], "tools": client_tools()}),
    ];
    for body in cases {
        let response = app
            .client
            .post(app.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["message"].is_string(), "{error}");
        assert!(error["error"]["param"].is_string(), "{error}");
    }
    assert!(model.requests().is_empty());
}

#[tokio::test]
async fn an_http_tool_sends_its_headers_with_secrets_from_the_environment() {
    let tools = tool_server().await;
    let model = ScriptedModel::start(|_, n| match n {
        0 => Reply::Tools(vec![call("h", "headers", "{}")]),
        _ => Reply::Text("Seen.".into()),
    })
    .await;
    // HOME is set wherever the tests run; a secret would be read the same way.
    let home = std::env::var("HOME").unwrap();
    let mut tool = http_tool(&tools, "headers", any_object());
    tool.headers.insert("x-home".into(), "at ${HOME}".into());
    let running = app(&model, &tools, move |config| config.tools.http.push(tool)).await;
    let stream = running.chat_stream(json!({"message": "Headers?"})).await;
    let result = &named(&stream, "tool_finished")[0].data["result"];
    assert_eq!(result["x-home"], format!("at {home}"));
    assert_eq!(result["content-type"], "application/json");

    // A header naming a variable that is not set stops the start, with its name.
    let mut broken = http_tool(&tools, "broken", any_object());
    broken.headers.insert(
        "authorization".into(),
        "Bearer ${TIDEWIRE_TEST_SURELY_UNSET}".into(),
    );
    let failed = app(&model, &tools, move |config| config.tools.http.push(broken)).await;
    let (result, _) = failed.shutdown().await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("TIDEWIRE_TEST_SURELY_UNSET"), "{error}");
}
