//! Start and stop in process: graceful shutdown with open streams, and a restart on
//! the same data directory. The tests that run the binary (SIGTERM, SIGKILL) are in
//! the `tidewire-cli` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use support::{read_events, read_stream, spawn_app_with, spawn_on};

#[tokio::test]
async fn shutdown_drains_runs_then_interrupts_the_rest_and_stores_them() {
    let app = spawn_app_with(|config| config.drain_timeout = Duration::from_millis(400)).await;
    let slow = app.chat(json!({"message": "too slow", "options": {"max_tokens": 1000, "tokens_per_second": 20}})).await;
    let quick = app
        .chat(
            json!({"message": "quick one", "options": {"max_tokens": 5, "tokens_per_second": 25}}),
        )
        .await;
    let mut slow_body = slow.bytes_stream();
    let first = read_events(&mut slow_body, 4).await;
    let slow_conversation = first[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let quick = tokio::spawn(read_stream(quick));

    let client = app.client.clone();
    let base = app.base.clone();
    let started = Instant::now();
    let (result, data_dir) = app.shutdown().await;
    result.unwrap();
    // The slow run would take 50 s: shutdown did not wait for it.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown took {:?}",
        started.elapsed()
    );

    let quick = quick.await.unwrap();
    assert_eq!(quick.last().data["status"], "complete");
    let mut rest = Vec::new();
    while let Some(Ok(chunk)) = slow_body.next().await {
        rest.extend_from_slice(&chunk);
    }
    let (events, _) = support::decode(&rest);
    assert_eq!(
        events.last().unwrap().data,
        json!({"status": "interrupted"})
    );
    // The server no longer accepts connections.
    assert!(client.get(format!("{base}/healthz")).send().await.is_err());

    let restarted = spawn_on(tidewire::Config::default(), data_dir).await;
    let messages = restarted.messages(&slow_conversation).await;
    assert_eq!(messages[1]["status"], "interrupted");
    assert!(!messages[1]["content"].as_str().unwrap().is_empty());
}
