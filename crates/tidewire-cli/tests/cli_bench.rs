//! `tidewire bench` run as the benchmark script runs it: against the real server
//! (chunked responses on kept-alive connections) and against the smallest writer
//! (responses ended by close).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tidewire/tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::spawn_app;
use tokio::process::Command;

/// Runs `tidewire bench ARGS --json` and returns its report and exit code.
async fn bench(args: &[&str]) -> (Value, Option<i32>) {
    let output = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let report = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (report, output.status.code())
}

/// `tidewire bench fanout` of a 10-token run at 50 tokens/s, `subscribers` following it.
async fn fanout(url: &str, subscribers: &str) -> Value {
    let (report, code) = bench(&[
        "fanout",
        "--url",
        url,
        "--subscribers",
        subscribers,
        "--tokens",
        "10",
        "--rate",
        "50",
    ])
    .await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["errors"], 0);
    report
}

#[tokio::test]
async fn burst_reads_every_event_of_every_stream() {
    let app = spawn_app().await;
    let url = format!("{}/api/chat", app.base);
    let (report, code) = bench(&[
        "burst", "--url", &url, "-c", "4", "-n", "20", "--tokens", "10",
    ])
    .await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["completed"], 20);
    assert_eq!(report["errors"], 0);
    // Each stream: its tokens, and more events (run, done) around them.
    assert!(report["events"].as_u64().unwrap() > 20 * 10, "{report}");
    assert_eq!(report["time_to_first_event"]["count"], 20);
}

#[tokio::test]
async fn fanout_follows_one_run_from_many_subscribers() {
    let app = spawn_app().await;
    let url = format!("{}/api/chat", app.base);
    let report = fanout(&url, "20").await;
    assert!(
        report["events_delivered"].as_u64().unwrap() >= 20 * 10,
        "{report}"
    );
}

#[tokio::test]
async fn a_server_that_refuses_counts_as_errors() {
    let app = spawn_app().await;
    let url = format!("{}/api/no-such-route", app.base);
    let (report, code) = bench(&["burst", "--url", &url, "-c", "2", "-n", "4"]).await;
    assert_eq!(code, Some(3), "{report}");
    assert_eq!(report["errors"], 4);
}

#[tokio::test]
async fn the_smallest_writer_serves_paced_streams_and_a_fanout_ended_by_close() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let _peer = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args(["bench", "raw-peer", "--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://{addr}/api/chat");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (report, code) = bench(&[
        "paced", "--url", &url, "-c", "5", "--tokens", "10", "--rate", "50",
    ])
    .await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["errors"], 0);
    // `run`, ten tokens and `done` per stream.
    assert_eq!(report["events"], 5 * 12);
    assert_eq!(report["lateness"]["count"], 5 * 9);

    let report = fanout(&url, "10").await;
    // Every subscriber gets every token (written so far, then live) and `done`.
    assert_eq!(report["events_delivered"], 10 * 11);
}
