//! The `tidewire` binary started and stopped as a service manager does: SIGTERM with
//! open streams, and a SIGKILL in the middle of a run followed by a restart on the
//! same data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tidewire/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::read_events;

/// The server binary on a random port; returns it and its address.
fn start_binary(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--flush-interval",
            "50ms",
            "--drain-timeout",
            "300ms",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("TIDEWIRE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on ".len()..].trim().to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

async fn messages(client: &reqwest::Client, base: &str, conversation_id: &str) -> Vec<Value> {
    let body: Value = client
        .get(format!(
            "{base}/api/conversations/{conversation_id}/messages"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_crash_mid_run_leaves_the_partial_answer_marked_interrupted() {
    let data_dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut child, base) = start_binary(data_dir.path());

    let response = client
        .post(format!("{base}/api/chat"))
        .json(&json!({"message": "crash during me", "options": {"max_tokens": 1000, "tokens_per_second": 50, "backend": "synthetic"}}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let seen = read_events(&mut body, 8).await;
    let conversation_id = seen[0].data["conversation_id"].as_str().unwrap().to_owned();
    // Wait for a flush to reach the store, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = messages(&client, &base, &conversation_id).await;
        if !stored[1]["content"].as_str().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no flush within 10s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut streamed: String = seen
        .iter()
        .filter(|e| e.name == "token")
        .map(|e| e.data["token"].as_str().unwrap().to_owned())
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    while let Some(Ok(chunk)) = body.next().await {
        let (events, _) = support::decode(&chunk);
        streamed.extend(
            events
                .iter()
                .filter(|e| e.name == "token")
                .map(|e| e.data["token"].as_str().unwrap().to_owned()),
        );
    }

    let (mut child, base) = start_binary(data_dir.path());
    let stored = messages(&client, &base, &conversation_id).await;
    assert_eq!(stored[0]["content"], "crash during me");
    assert_eq!(stored[1]["status"], "interrupted");
    let content = stored[1]["content"].as_str().unwrap();
    assert!(!content.is_empty());
    assert!(
        streamed.starts_with(content),
        "stored text is a prefix of what was streamed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_with_open_streams_exits_zero_within_the_drain_timeout() {
    let data_dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut child, base) = start_binary(data_dir.path());
    let response = client
        .post(format!("{base}/api/chat"))
        .json(&json!({"message": "keep streaming", "options": {"max_tokens": 1000, "tokens_per_second": 20, "backend": "synthetic"}}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let seen = read_events(&mut body, 3).await;
    let run_id = seen[0].data["run_id"].as_str().unwrap();
    // A second stream on the same run that the client never reads.
    let idle = client
        .get(format!("{base}/api/runs/{run_id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(idle.status(), 200);

    let started = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        // The run would go on for 50 s: exiting well before shows the drain timeout
        // applied, with room for a busy machine.
        started.elapsed() < Duration::from_secs(30),
        "exit took {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        rest.extend_from_slice(&chunk);
    }
    let (events, _) = support::decode(&rest);
    assert_eq!(
        events.last().unwrap().data,
        json!({"status": "interrupted"})
    );
    drop(idle);
}

#[test]
fn an_address_in_use_says_how_to_choose_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args(["serve", "--addr", &addr, "--log", "warn"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env_remove("TIDEWIRE_ADDR")
        .env_remove("TIDEWIRE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on {addr}: the address is already in use"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--addr"), "{stderr}");
    assert!(stderr.contains("TIDEWIRE_ADDR"), "{stderr}");
    drop(taken);
}
