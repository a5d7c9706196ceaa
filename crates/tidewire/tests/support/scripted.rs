//! A scripted model server: an OpenAI-compatible `/v1/chat/completions` on a random
//! port whose every answer is decided by the test from the request it got (so a
//! test can ask for tools, look at the results it was sent, and answer), streamed
//! in the pieces real servers use. Every request is recorded.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

/// What the model answers one request with.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Text, then `stop`.
    Text(String),
    /// Tool calls `(id, name, arguments as JSON text)`, then `tool_calls`.
    Tools(Vec<(String, String, String)>),
    /// Some text, then tool calls.
    TextAndTools(String, Vec<(String, String, String)>),
}

/// A call of `name` with `arguments` (JSON text), id `id`.
pub fn call(id: &str, name: &str, arguments: &str) -> (String, String, String) {
    (id.to_owned(), name.to_owned(), arguments.to_owned())
}

type Script = dyn Fn(&Value, usize) -> Reply + Send + Sync;

#[derive(Clone)]
struct Model {
    script: Arc<Script>,
    requests: Arc<Mutex<Vec<Value>>>,
    /// Usage reported with each answer: (prompt, completion).
    usage: (u64, u64),
}

/// The running model.
#[derive(Clone)]
pub struct ScriptedModel {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl ScriptedModel {
    /// A model that answers request number `n` (from 0) with `script(body, n)`,
    /// reporting 10 prompt and 5 completion tokens each time.
    pub async fn start(script: impl Fn(&Value, usize) -> Reply + Send + Sync + 'static) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let model = Model {
            script: Arc::new(script),
            requests: Arc::clone(&requests),
            usage: (10, 5),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(answer))
            .with_state(model);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, requests }
    }

    /// The base URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The request bodies so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The answer requests (the pipeline's side questions left out).
    pub fn answer_requests(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|body| {
                let system = body["messages"][0]["content"].as_str().unwrap_or("");
                !(system.starts_with("Rewrite") || system.starts_with("Suggest"))
            })
            .collect()
    }
}

/// The tool names offered in a request.
pub fn offered(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The `tool` messages of a request: (tool_call_id, content parsed as JSON).
pub fn tool_results(body: &Value) -> Vec<(String, Value)> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap().to_owned(),
                serde_json::from_str(m["content"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

async fn answer(State(model): State<Model>, body: axum::Json<Value>) -> Response {
    let n = {
        let mut requests = model.requests.lock().unwrap();
        requests.push(body.0.clone());
        requests.len() - 1
    };
    let reply = (model.script)(&body.0, n);
    let mut frames = Vec::new();
    let chunk = |delta: Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "scripted",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    frames.push(chunk(json!({"role": "assistant"}), None));
    let (text, calls) = match reply {
        Reply::Text(text) => (text, Vec::new()),
        Reply::Tools(calls) => (String::new(), calls),
        Reply::TextAndTools(text, calls) => (text, calls),
    };
    for word in text.split_inclusive(' ') {
        frames.push(chunk(json!({"content": word}), None));
    }
    // Each call in three pieces, as OpenAI streams them: id and name first, then
    // the arguments in two halves.
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        frames.push(chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
            None,
        ));
        let half = arguments.len() / 2;
        let half = (0..=half)
            .rev()
            .find(|at| arguments.is_char_boundary(*at))
            .unwrap();
        for piece in [&arguments[..half], &arguments[half..]] {
            frames.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    frames.push(chunk(json!({}), Some(finish)));
    let (prompt, completion) = model.usage;
    frames.push(format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-s", "choices": [],
               "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion}})
    ));
    frames.push("data: [DONE]\n\n".to_owned());
    let body = futures_util::stream::iter(
        frames
            .into_iter()
            .map(|frame| Ok::<_, std::io::Error>(axum::body::Bytes::from(frame))),
    );
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    response
}
