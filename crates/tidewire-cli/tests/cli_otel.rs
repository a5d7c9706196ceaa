//! OpenTelemetry export: `tidewire serve --otlp-endpoint` sends the spans of
//! requests and runs, with their request ids, to a collector (a mock OTLP/HTTP
//! collector on a random port here). Built with the `otel` feature only.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn spans_with_the_request_id_reach_the_collector() {
    // The collector: keeps every body POSTed to /v1/traces (protobuf).
    let bodies = Arc::new(Mutex::new(Vec::<Bytes>::new()));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(bodies): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes| async move {
                    bodies.lock().unwrap().push(body);
                    ""
                },
            ),
        )
        .with_state(Arc::clone(&bodies));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args(["serve", "--addr", "127.0.0.1:0", "--log", "info"])
        .arg("--otlp-endpoint")
        .arg(format!("http://{collector}/v1/traces"))
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on ".len()..].trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let response = reqwest::Client::new()
        .post(format!("{base}/api/chat"))
        .header("x-request-id", "otel-trace-42")
        .json(&serde_json::json!({"message": "hello", "stream": false,
                                  "options": {"backend": "synthetic", "tokens_per_second": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(15);
    let found = loop {
        let seen = bodies.lock().unwrap().concat();
        if contains(&seen, b"otel-trace-42") && contains(&seen, b"run_id") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        found,
        "no span with the request id and a run id reached the collector ({} bodies)",
        bodies.lock().unwrap().len()
    );
    let seen = bodies.lock().unwrap().concat();
    assert!(contains(&seen, b"tidewire"), "the service name");
    assert!(contains(&seen, b"/api/chat"), "the route");
}
