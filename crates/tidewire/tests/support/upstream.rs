//! A mock model server on a random port that plays back the wire shapes of real
//! ones (OpenAI, vLLM, llama.cpp, Ollama native and /v1, TGI) and their faults.
//!
//! `{url}/{scenario}/v1` is an OpenAI-compatible base URL and `{url}/{scenario}` an
//! Ollama one; the scenario name picks what the server answers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tidewire::config::{BackendConfig, BackendKind};

/// A backend of `kind` at `url`, model `test-model`, every other setting default.
pub fn backend(kind: BackendKind, url: String) -> BackendConfig {
    BackendConfig {
        kind,
        url: Some(url),
        model: Some("test-model".into()),
        api_key: None,
        connect_timeout: None,
        first_token_timeout: None,
        idle_timeout: None,
        total_timeout: None,
        request_body: None,
        answer_path: None,
        confidence_path: None,
        sources_path: None,
    }
}

/// What the mock saw.
#[derive(Default)]
pub struct Seen {
    /// Request bodies, in order, with their scenario.
    pub requests: Vec<(String, Value)>,
    /// The `Authorization` header of each request.
    pub authorization: Vec<Option<String>>,
    /// When a streaming answer was dropped (its client went away or it ended).
    pub dropped_at: Vec<Instant>,
}

/// The running mock.
#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
}

impl MockUpstream {
    /// An OpenAI-compatible base URL for `scenario`.
    pub fn openai_url(&self, scenario: &str) -> String {
        format!("http://{}/{scenario}/v1", self.addr)
    }

    /// The URL of a JSON answer service (`POST {query}` → `{response, confidence,
    /// sources}`) for `scenario`.
    pub fn service_url(&self, scenario: &str) -> String {
        format!("http://{}/{scenario}/api/ask", self.addr)
    }

    /// An Ollama base URL for `scenario`.
    pub fn ollama_url(&self, scenario: &str) -> String {
        format!("http://{}/{scenario}", self.addr)
    }

    pub fn requests(&self, scenario: &str) -> Vec<Value> {
        let seen = self.seen.lock().unwrap();
        seen.requests
            .iter()
            .filter(|(s, _)| s == scenario)
            .map(|(_, body)| body.clone())
            .collect()
    }

    pub fn authorization(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().authorization.clone()
    }

    pub fn dropped_at(&self) -> Vec<Instant> {
        self.seen.lock().unwrap().dropped_at.clone()
    }
}

pub async fn start_upstream() -> MockUpstream {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new()
        .route("/{scenario}/v1/chat/completions", post(openai))
        .route("/{scenario}/api/chat", post(ollama))
        .route("/{scenario}/api/ask", post(answer_service))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    MockUpstream { addr, seen }
}

/// One piece of an answer: wait, then send.
enum Step {
    Wait(Duration),
    Send(String),
    /// Break the connection (the body ends with an error).
    Break,
}

fn send(text: impl Into<String>) -> Step {
    Step::Send(text.into())
}

fn chunk(content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    )
}

fn finish(reason: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    )
}

/// Records the moment the body is dropped.
struct DropGuard(Arc<Mutex<Seen>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Ok(mut seen) = self.0.lock() {
            seen.dropped_at.push(Instant::now());
        }
    }
}

fn stream_response(
    seen: Arc<Mutex<Seen>>,
    content_type: &'static str,
    steps: Vec<Step>,
) -> Response {
    let guard = DropGuard(seen);
    let body = futures_util::stream::iter(steps).then(|step| async move {
        match step {
            Step::Wait(duration) => {
                tokio::time::sleep(duration).await;
                Ok(Bytes::new())
            }
            Step::Send(text) => Ok(Bytes::from(text)),
            Step::Break => Err(std::io::Error::other("connection broken on purpose")),
        }
    });
    let body = body.map(move |item| {
        let _keep = &guard;
        item
    });
    let mut response = Response::new(Body::from_stream(body));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

/// A response whose body never ends: 16 KiB pieces for as long as it is read.
fn endless(seen: Arc<Mutex<Seen>>, status: StatusCode, content_type: &'static str) -> Response {
    let guard = DropGuard(seen);
    let piece = Bytes::from(vec![b'x'; 16 * 1024]);
    let body = futures_util::stream::repeat_with(move || {
        let _keep = &guard;
        Ok::<_, std::io::Error>(piece.clone())
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

fn json_error(status: StatusCode, body: Value, retry_after: Option<&'static str>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static(seconds));
    }
    response
}

async fn openai(
    State(seen): State<Arc<Mutex<Seen>>>,
    Path(scenario): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    let count = {
        let mut guard = seen.lock().unwrap();
        guard.requests.push((scenario.clone(), body.0.clone()));
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        guard.authorization.push(authorization);
        guard
            .requests
            .iter()
            .filter(|(s, _)| *s == scenario)
            .count()
    };
    let sse = "text/event-stream";
    let steps = match scenario.as_str() {
        // OpenAI: a role chunk, content with `obfuscation`, the finish chunk, then a
        // usage chunk with no choices, then [DONE].
        "openai" => vec![
            send(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}], "obfuscation": "a1b2"})
            )),
            send(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": null}], "obfuscation": "zz"})
            )),
            send(chunk(" world")),
            send(finish("stop")),
            send(format!(
                "data: {}\n\n",
                json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})
            )),
            send("data: [DONE]\n\n"),
        ],
        // vLLM: an error object in the stream, then [DONE].
        "vllm-error" => vec![
            send(chunk("Partial")),
            send(chunk(" answer")),
            send(format!(
                "data: {}\n\n",
                json!({"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}})
            )),
            send("data: [DONE]\n\n"),
        ],
        // llama.cpp: `timings` in chunks, usage with the finish chunk.
        "llamacpp" => vec![
            send(chunk("Llama")),
            send(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": " says"}, "finish_reason": null}], "timings": {"predicted_ms": 12.5}})
            )),
            send(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}, "timings": {"predicted_n": 2}})
            )),
            send("data: [DONE]\n\n"),
        ],
        // llama.cpp's non-standard `error:` field.
        "llamacpp-error" => vec![
            send(chunk("Before")),
            send(format!(
                "error: {}\n\n",
                json!({"code": 500, "message": "the request exceeds the available context size", "type": "exceed_context_size_error"})
            )),
        ],
        // Ollama's /v1: OpenAI-shaped, with usage when asked.
        "ollama-v1" => vec![
            send(format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "llama3.2", "system_fingerprint": "fp_ollama", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null}]})
            )),
            send(format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": "stop"}]})
            )),
            send(format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
            )),
            send("data: [DONE]\n\n"),
        ],
        // TGI: `data:` without the space, CRLF, no [DONE]; the answer is cut by length.
        "tgi" => vec![
            send("data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Text\"}}]}\r\n\r\n"),
            send("data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\" gen\"}}]}\r\n\r\n"),
            send(
                "data:{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\r\n\r\n",
            ),
        ],
        // TGI's error shape.
        "tgi-error" => vec![send(
            "data:{\"error\":\"Input validation error: inputs too long\",\"error_type\":\"validation\"}\n\n",
        )],
        // Comments (some providers send `: PROCESSING`), multi-line data, reasoning,
        // tool-call deltas and refusals.
        "tolerant" => vec![
            send(": PROCESSING\n\n: PROCESSING\n\n"),
            send(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"reasoning_content": "thinking hard"}, "finish_reason": null}]})
            )),
            send(
                "data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"Multi\"}}]}\n\n",
            ),
            send(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "search", "arguments": "{\"q\""}}]}, "finish_reason": null}]})
            )),
            send(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"reasoning": "more thoughts", "content": " line"}, "finish_reason": null}], "extra": {"anything": true}})
            )),
            send(finish("stop")),
            send("data: [DONE]\n\n"),
        ],
        // A line that is not JSON between two good ones.
        "malformed" => vec![
            send(chunk("Good")),
            send("data: {not json at all\n\n"),
            send(chunk(" still")),
            send(finish("stop")),
            send("data: [DONE]\n\n"),
        ],
        // A 1 MB line.
        "huge" => vec![
            send(chunk(&"x".repeat(1024 * 1024))),
            send(finish("stop")),
            send("data: [DONE]\n\n"),
        ],
        // The body ends cleanly but without a finish reason or [DONE].
        "incomplete" => vec![send(chunk("Cut")), send(chunk(" short"))],
        // The connection breaks after two tokens.
        "drop" => vec![
            send(chunk("One")),
            send(chunk(" two")),
            Step::Wait(Duration::from_millis(20)),
            Step::Break,
        ],
        // Slow to start.
        "slow-first" => vec![
            Step::Wait(Duration::from_secs(3)),
            send(chunk("late")),
            send(finish("stop")),
            send("data: [DONE]\n\n"),
        ],
        // Two tokens, then silence with the connection open.
        "stall" => vec![
            send(chunk("Stalled")),
            send(chunk(" here")),
            Step::Wait(Duration::from_secs(30)),
        ],
        // A long, slow answer, to be cancelled.
        "slow" => (0..400)
            .flat_map(|n| {
                [
                    Step::Wait(Duration::from_millis(25)),
                    send(chunk(&format!(" w{n}"))),
                ]
            })
            .collect(),
        // A model in the answer pipeline: the rewrite and follow-up side calls are
        // told apart by their instructions (the system message); `-slow-rewrite`
        // and `-slow-follow-ups` hang on that call.
        name if name.starts_with("pipeline") => {
            let system = body.0["messages"][0]["content"].as_str().unwrap_or("");
            let (reply, hang) = if system.starts_with("Rewrite") {
                (
                    "What comes out of a volcano when it erupts?",
                    name == "pipeline-slow-rewrite",
                )
            } else if system.starts_with("Suggest") {
                (
                    "Why do volcanoes erupt?\nWhat is lava made of?",
                    name == "pipeline-slow-follow-ups",
                )
            } else {
                ("Magma comes out [1].", false)
            };
            let mut steps = Vec::new();
            if hang {
                steps.push(Step::Wait(Duration::from_secs(30)));
            }
            steps.extend([
                send(chunk(reply)),
                send(finish("stop")),
                send("data: [DONE]\n\n"),
            ]);
            steps
        }
        // Rate limited once, with Retry-After, then fine.
        "429" if count == 1 => {
            return json_error(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
                Some("1"),
            );
        }
        "429" => vec![
            send(chunk("After")),
            send(chunk(" waiting")),
            send(finish("stop")),
            send("data: [DONE]\n\n"),
        ],
        // Always down.
        "500" => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": {"message": "upstream exploded", "type": "server_error"}}),
                None,
            );
        }
        // Refuses stream_options, then answers without usage.
        "no-stream-options" if body.0.get("stream_options").is_some() => {
            return json_error(
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": "Unrecognized request argument supplied: stream_options", "type": "invalid_request_error"}}),
                None,
            );
        }
        "no-stream-options" => vec![
            send(chunk("No")),
            send(chunk(" usage")),
            send(finish("stop")),
            send("data: [DONE]\n\n"),
        ],
        // HTTP 200 with a JSON error and no SSE framing.
        "json-error" => return (
            StatusCode::OK,
            axum::Json(
                json!({"error": {"message": "model not loaded", "type": "invalid_request_error"}}),
            ),
        )
            .into_response(),
        // A refusal whose body never ends.
        "endless-refusal" => return endless(seen, StatusCode::SERVICE_UNAVAILABLE, "text/plain"),
        // HTTP 200 with a JSON body that never ends.
        "endless-json" => return endless(seen, StatusCode::OK, "application/json"),
        // Rate limited, and told to come back tomorrow.
        "retry-tomorrow" => {
            return json_error(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": {"message": "quota exceeded", "type": "rate_limit"}}),
                Some("86400"),
            );
        }
        // Needs the right key.
        "auth" => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
                None,
            );
        }
        _ => return (StatusCode::NOT_FOUND, "no such scenario").into_response(),
    };
    stream_response(seen, sse, steps)
}

async fn ollama(
    State(seen): State<Arc<Mutex<Seen>>>,
    Path(scenario): Path<String>,
    body: axum::Json<Value>,
) -> Response {
    seen.lock()
        .unwrap()
        .requests
        .push((scenario.clone(), body.0.clone()));
    let line = |value: Value| send(format!("{value}\n"));
    let steps = match scenario.as_str() {
        "ollama" => vec![
            line(
                json!({"model": "llama3.2", "created_at": "2026-01-01T00:00:00Z", "message": {"role": "assistant", "content": "", "thinking": "let me think"}, "done": false}),
            ),
            line(
                json!({"model": "llama3.2", "message": {"role": "assistant", "content": "Native"}, "done": false}),
            ),
            line(
                json!({"model": "llama3.2", "message": {"role": "assistant", "content": " answer"}, "done": false}),
            ),
            line(
                json!({"model": "llama3.2", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop", "total_duration": 1_000_000, "prompt_eval_count": 7, "eval_count": 2}),
            ),
        ],
        "ollama-error" => vec![
            line(
                json!({"model": "llama3.2", "message": {"role": "assistant", "content": "Half"}, "done": false}),
            ),
            line(json!({"error": "an error was encountered while running the model"})),
        ],
        "ollama-missing" => {
            return json_error(
                StatusCode::NOT_FOUND,
                json!({"error": "model \"nope\" not found, try pulling it first"}),
                None,
            );
        }
        _ => return (StatusCode::NOT_FOUND, "no such scenario").into_response(),
    };
    stream_response(seen, "application/x-ndjson", steps)
}

/// An answer service in the shape of seed 001's ML backend: one JSON document.
async fn answer_service(
    State(seen): State<Arc<Mutex<Seen>>>,
    Path(scenario): Path<String>,
    body: axum::Json<Value>,
) -> Response {
    seen.lock()
        .unwrap()
        .requests
        .push((scenario.clone(), body.0.clone()));
    match scenario.as_str() {
        "service" => axum::Json(json!({
            "response": format!("The tide answer to {}.", body.0["query"].as_str().unwrap_or("?")),
            "confidence": 0.87,
            "sources": [{"title": "Tide tables", "content": "High water at 06:12.", "score": 0.9}, "almanac.pdf"]
        }))
        .into_response(),
        // Slower than any test's deadline.
        "service-slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            axum::Json(json!({"response": "too late"})).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no such scenario").into_response(),
    }
}
