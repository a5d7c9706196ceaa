//! `tidewire keys` run as an operator runs it, next to a running server on the
//! same data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tidewire/tests/support/mod.rs"]
mod support;

use serde_json::json;

fn keys(data_dir: &std::path::Path, args: &[&str]) -> (String, String, Option<i32>) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .arg("keys")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("TIDEWIRE_DATA_DIR")
        .output()
        .unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.code(),
    )
}

#[tokio::test]
async fn a_key_made_beside_a_running_server_works_at_once_and_stops_when_revoked() {
    let app = support::spawn_app_with(|config| config.auth.api_keys = true).await;
    let dir = app.data_dir.path().to_owned();
    let (stdout, stderr, code) = tokio::task::spawn_blocking(move || {
        keys(&dir, &["create", "--user", "alice", "--name", "laptop"])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let key = stdout.trim().to_owned();
    assert!(key.starts_with("tw_") && key.len() > 40, "{key}");
    assert!(stderr.contains("shown once"), "{stderr}");

    let ask = || {
        app.client
            .post(app.url("/api/chat"))
            .bearer_auth(&key)
            .json(&json!({"message": "hi", "stream": false, "options": {"max_tokens": 2}}))
            .send()
    };
    assert_eq!(ask().await.unwrap().status(), 200);

    let dir = app.data_dir.path().to_owned();
    let (list, _, code) = tokio::task::spawn_blocking(move || keys(&dir, &["list"]))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(!list.contains(&key), "the key itself is never shown again");
    let line = list.lines().next().unwrap();
    assert!(
        line.contains("alice") && line.contains("laptop") && line.ends_with("active"),
        "{line}"
    );
    let id = line.split('\t').next().unwrap().to_owned();

    let dir = app.data_dir.path().to_owned();
    let (_, stderr, code) = tokio::task::spawn_blocking(move || keys(&dir, &["revoke", &id]))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(ask().await.unwrap().status(), 401);
}

#[tokio::test]
async fn tidewire_chat_sends_its_token_to_a_server_with_authentication_on() {
    let app = support::spawn_app_with(|config| config.auth.api_keys = true).await;
    let dir = app.data_dir.path().to_owned();
    let (stdout, _, _) =
        tokio::task::spawn_blocking(move || keys(&dir, &["create", "--user", "gina"]))
            .await
            .unwrap();
    let key = stdout.trim().to_owned();
    let base = app.base.clone();
    let chat = move |token: Option<String>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tidewire"));
        command
            .args(["chat", "--url", &base, "--max-tokens", "3", "hello"])
            .env_remove("TIDEWIRE_URL")
            .env_remove("TIDEWIRE_TOKEN");
        if let Some(token) = token {
            command.env("TIDEWIRE_TOKEN", token);
        }
        command.output().unwrap()
    };
    let without = tokio::task::spawn_blocking({
        let chat = chat.clone();
        move || chat(None)
    })
    .await
    .unwrap();
    assert_ne!(without.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&without.stderr).contains("401"));
    let with = tokio::task::spawn_blocking(move || chat(Some(key)))
        .await
        .unwrap();
    assert_eq!(
        with.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&with.stdout).split(' ').count(), 3);
}
