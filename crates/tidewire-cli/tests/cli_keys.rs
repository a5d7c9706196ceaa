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
        .env_remove("TIDEWIRE_POSTGRES_URL")
        .env_remove("TIDEWIRE_POSTGRES_SCHEMA")
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

/// `tidewire keys` with `--postgres-url` (and the environment variables), in a
/// schema of its own of the test database (`TIDEWIRE_TEST_POSTGRES_URL`).
fn keys_in_postgres(
    url: &str,
    schema: &str,
    data_dir: &std::path::Path,
    args: &[&str],
) -> (String, String, Option<i32>) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .arg("keys")
        .args(args)
        .env("TIDEWIRE_DATA_DIR", data_dir)
        .env("TIDEWIRE_POSTGRES_URL", url)
        .env("TIDEWIRE_POSTGRES_SCHEMA", schema)
        .output()
        .unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.code(),
    )
}

#[tokio::test]
async fn with_a_postgres_url_the_keys_live_in_postgresql_and_the_server_reads_them_there() {
    use std::sync::Arc;

    use sqlx::Connection;
    use tidewire::auth::{Auth, AuthError};
    use tidewire::config::AuthConfig;
    use tidewire::store::{PostgresStore, Store};

    let url = std::env::var("TIDEWIRE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("tw_test_{}", tidewire::store::new_id().replace('-', ""));
    let data_dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let (url, schema, dir) = (url.clone(), schema.clone(), data_dir.path().to_owned());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            keys_in_postgres(&url, &schema, &dir, &args)
        })
    };

    let (stdout, stderr, code) = run(&["create", "--user", "alice", "--name", "laptop"])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let key = stdout.trim().to_owned();
    assert!(key.starts_with("tw_"), "{key}");
    assert!(
        !data_dir.path().join("tidewire.db").exists(),
        "the data directory is not used"
    );

    // The server's authenticator, on the same database, accepts it.
    let store: Arc<dyn Store> =
        Arc::new(PostgresStore::connect(&url, Some(&schema)).await.unwrap());
    let config = AuthConfig {
        api_keys: true,
        ..AuthConfig::default()
    };
    let auth = Auth::new(&config, store).unwrap();
    let bearer = format!("Bearer {key}");
    assert_eq!(auth.caller(Some(&bearer)).await.unwrap().user_id, "alice");

    let (list, _, code) = run(&["list", "--user", "alice"]).await.unwrap();
    assert_eq!(code, Some(0));
    let line = list.lines().next().unwrap();
    assert!(line.contains("alice") && line.contains("laptop") && line.ends_with("active"));
    let id = line.split('\t').next().unwrap().to_owned();
    let (_, stderr, code) = run(&["revoke", &id]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(matches!(
        auth.caller(Some(&bearer)).await,
        Err(AuthError::Invalid(_))
    ));
    let (_, _, code) = run(&["revoke", &id]).await.unwrap();
    assert_eq!(code, Some(1), "revoked already");

    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[test]
fn a_postgres_schema_needs_a_postgres_url_and_a_valid_name() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args(["keys", "list", "--postgres-schema", "tw"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("TIDEWIRE_POSTGRES_URL")
        .env_remove("TIDEWIRE_POSTGRES_SCHEMA")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--postgres-url"), "{stderr}");

    let (_, stderr, code) = keys_in_postgres(
        "postgres://postgres:secret@127.0.0.1:1/test",
        "Bad-Name",
        dir.path(),
        &["list"],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("schema name"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password is not shown: {stderr}"
    );
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
