//! The gateway overhead in front of a real upstream: a zero-delay OpenAI-compatible
//! mock model server (`tidewire bench mock-upstream`), and the `upstream` workload
//! that times the first token straight from it and through tidewire.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::load::{histogram, overhead_report, record};

/// Serves `POST /v1/chat/completions` on `addr`: `max_tokens` tokens at once, the
/// finish chunk, usage, `[DONE]`; and `GET /v1/models` (proxies such as LiteLLM
/// ask it first). Runs until the process is stopped.
pub async fn serve_mock(addr: SocketAddr) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .route(
            "/v1/models",
            axum::routing::get(|| async {
                axum::Json(json!({"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "bench"}]}))
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "mock upstream listening on http://{}/v1",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

async fn completions(body: axum::Json<Value>) -> Response {
    let tokens = body.0["max_tokens"].as_u64().unwrap_or(16).min(100_000);
    let mut wire = String::new();
    for n in 0..tokens {
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": format!(" w{n}")}, "finish_reason": null}]});
        wire.push_str(&format!("data: {chunk}\n\n"));
    }
    wire.push_str(&format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    wire.push_str(&format!("data: {}\n\n", json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5}})));
    wire.push_str("data: [DONE]\n\n");
    let mut response = Response::new(Body::from(Bytes::from(wire)));
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// Time to the first token of `requests` sequential requests, through the gateway
/// at `url` and straight from the upstream at `direct`. A `url` ending in
/// `/v1/chat/completions` is spoken to as OpenAI's API, model `default` (tidewire's
/// `llm_url` backend, or a proxy's model of that name), so any OpenAI-compatible
/// gateway can be measured the same way.
pub async fn overhead(
    client: &reqwest::Client,
    url: &str,
    direct: &str,
    requests: usize,
) -> anyhow::Result<Value> {
    let warmup = (requests / 10).max(10);
    let mut through = histogram();
    let mut straight = histogram();
    let mut errors = 0u64;
    let openai_route = url.ends_with("/v1/chat/completions");
    for index in 0..warmup + requests {
        let question = format!("benchmark question number {index}");
        let (chat, is_token) = if openai_route {
            (
                json!({"model": "default", "stream": true, "max_tokens": 1, "messages": [{"role": "user", "content": question}]}),
                first_token_openai as fn(&str, &str) -> bool,
            )
        } else {
            (
                json!({"message": question, "options": {"max_tokens": 1}}),
                first_token_native as fn(&str, &str) -> bool,
            )
        };
        let upstream = json!({"model": "mock", "stream": true, "max_tokens": 1, "messages": [{"role": "user", "content": "benchmark"}]});
        // Alternate, so both see the same machine noise.
        for (target, body, histogram, token) in [
            (url, chat, &mut through, is_token),
            (
                direct,
                upstream,
                &mut straight,
                first_token_openai as fn(&str, &str) -> bool,
            ),
        ] {
            match time_to_first_token(client, target, &body, token).await {
                Ok(elapsed) if index >= warmup => record(histogram, elapsed),
                Ok(_) => {}
                Err(error) => {
                    errors += 1;
                    if errors <= 3 {
                        eprintln!("request {index} to {target}: {error}");
                    }
                }
            }
        }
    }
    Ok(overhead_report(
        requests,
        errors,
        &through,
        "straight_from_upstream",
        &straight,
    ))
}

fn first_token_native(event: &str, _data: &str) -> bool {
    event == "token"
}

fn first_token_openai(_event: &str, data: &str) -> bool {
    serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(|c| !c.is_empty())
        })
        .unwrap_or(false)
}

/// Sends `body`, reads the stream to its end, and returns when the first event that
/// `is_token` accepts arrived.
async fn time_to_first_token(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    is_token: fn(&str, &str) -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut stream = response.bytes_stream();
    let mut decoder = tidewire_sse::Decoder::new();
    let mut first = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        decoder.push(&chunk);
        while let Some(event) = decoder.next_event() {
            let event = event.map_err(|e| e.to_string())?;
            if first.is_none() && is_token(event.event, event.data) {
                first = Some(start.elapsed());
            }
        }
    }
    first.ok_or_else(|| "no token in the stream".to_owned())
}
