//! What real traffic does to a server: clients that vanish while their run starts,
//! runs that grow without end, a store that fails its final write, conversations
//! deleted under their runs, a restart, a second server on the same data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::sqlite::SqlitePoolOptions;
use support::{TestApp, read_events, spawn_app, spawn_app_with, spawn_on};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Sends a `POST /api/chat` and hangs up 50 ms later, without reading the answer:
/// while the server is handling it.
async fn post_and_vanish(app: &TestApp, body: &Value, key: Option<&str>) {
    let body = body.to_string();
    let key = key.map_or(String::new(), |key| format!("idempotency-key: {key}\r\n"));
    let request = format!(
        "POST /api/chat HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n{key}content-length: {}\r\n\r\n{body}",
        app.addr,
        body.len()
    );
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(socket);
}

/// Every stored conversation with its messages.
async fn everything(app: &TestApp) -> Vec<(Value, Vec<Value>)> {
    let (_, list) = app.get_json("/api/conversations?limit=500").await;
    let mut all = Vec::new();
    for conversation in list["conversations"].as_array().unwrap() {
        let messages = app.messages(conversation["id"].as_str().unwrap()).await;
        all.push((conversation.clone(), messages));
    }
    all
}

/// Makes every stored turn take a while (a recursive count inside an INSERT
/// trigger), so a client that hangs up does so while its turn is being written.
const SLOW_TURNS: &str = "CREATE TRIGGER slow_turns BEFORE INSERT ON messages BEGIN \
     SELECT count(*) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
     WHERE i < 300000) SELECT i FROM n); END";

#[tokio::test]
async fn clients_that_vanish_while_their_run_starts_leave_no_answer_streaming() {
    let app = spawn_app().await;
    sqlx::query(SLOW_TURNS)
        .execute(&database(&app).await)
        .await
        .unwrap();
    let body = json!({"message": "gone", "options": {"max_tokens": 3, "tokens_per_second": 0}});
    futures_util::future::join_all((0..20).map(|_| post_and_vanish(&app, &body, None))).await;
    // Whatever was stored has a producer that finished it.
    let all = app
        .eventually(Duration::from_secs(30), || async {
            let all = everything(&app).await;
            let busy = all
                .iter()
                .flat_map(|(_, messages)| messages)
                .any(|m| m["status"] == "streaming");
            let idle = app.get_json("/healthz").await.1["active_runs"] == 0;
            (!all.is_empty() && !busy && idle).then_some(all)
        })
        .await;
    for (_, messages) in &all {
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1]["status"], "complete", "{messages:?}");
    }
}

#[tokio::test]
async fn a_post_retried_after_its_client_vanished_attaches_to_the_first_run() {
    let app = spawn_app().await;
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    let body = |i: usize| json!({"message": format!("question {i}"), "options": {"max_tokens": 3, "tokens_per_second": 0}});
    // Each client hangs up mid-start, then retries at once with the same key.
    let retries = futures_util::future::join_all(keys.iter().enumerate().map(|(i, key)| {
        let app = &app;
        async move {
            post_and_vanish(app, &body(i), Some(key)).await;
            let response = app
                .client
                .post(app.url("/api/chat"))
                .header("idempotency-key", key)
                .json(&body(i))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            support::read_stream(response).await
        }
    }))
    .await;
    let runs: HashSet<String> = retries.iter().map(|stream| stream.run_id()).collect();
    assert_eq!(runs.len(), keys.len());
    let all = everything(&app).await;
    assert_eq!(
        all.len(),
        keys.len(),
        "one conversation per key, no second turn"
    );
    for (_, messages) in &all {
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[1]["status"], "complete");
    }
}

#[tokio::test]
async fn a_run_over_its_log_limit_fails_with_an_error_and_keeps_what_it_streamed() {
    let app = spawn_app_with(|config| config.max_run_bytes = 64 * 1024).await;
    let stream = app
        .chat_stream(
            json!({"message": "go on", "options": {"max_tokens": 8000, "tokens_per_second": 0}}),
        )
        .await;
    let names: Vec<&str> = stream.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names[names.len() - 3..], ["metadata", "error", "done"]);
    let error = &stream.events[names.len() - 2].data;
    assert_eq!(error["code"], "answer_too_large");
    assert_eq!(stream.last().data["status"], "failed");
    let tokens = names.iter().filter(|n| **n == "token").count();
    assert!(tokens > 100 && tokens < 8000, "{tokens} tokens");
    let messages = app.messages(&stream.conversation_id()).await;
    assert_eq!(messages[1]["status"], "failed");
    assert_eq!(messages[1]["content"], stream.text());
}

#[tokio::test]
async fn past_the_limit_of_finished_runs_the_oldest_are_forgotten_and_stay_stored() {
    let app = spawn_app_with(|config| config.max_finished_runs = 2).await;
    let mut streams = Vec::new();
    for i in 0..4 {
        streams.push(
            app.chat_stream(json!({"message": format!("q{i}"), "options": {"max_tokens": 2, "tokens_per_second": 0}}))
                .await,
        );
    }
    let oldest = streams[0].run_id();
    app.eventually(Duration::from_secs(10), || async {
        let (status, _) = app.get_json(&format!("/api/runs/{oldest}")).await;
        (status == 410).then_some(())
    })
    .await;
    let (status, _) = app
        .get_json(&format!("/api/runs/{}", streams[3].run_id()))
        .await;
    assert_eq!(status, 200, "the newest stays attachable");
    let messages = app.messages(&streams[0].conversation_id()).await;
    assert_eq!(messages[1]["content"], streams[0].text());
}

/// The server's database, opened beside it.
async fn database(app: &TestApp) -> sqlx::SqlitePool {
    let path = app.data_dir.path().join("tidewire.db");
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

const REFUSE_FINISH: &str = "CREATE TRIGGER refuse_finish BEFORE UPDATE OF status ON messages \
     WHEN OLD.status = 'streaming' AND NEW.status <> 'streaming' \
     BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END";

#[tokio::test]
async fn a_final_store_write_that_fails_is_retried() {
    let app = spawn_app().await;
    let db = database(&app).await;
    sqlx::query(REFUSE_FINISH).execute(&db).await.unwrap();
    let response = app
        .chat(json!({"message": "store me", "options": {"max_tokens": 3, "tokens_per_second": 0}}))
        .await;
    let mut body = response.bytes_stream();
    // After metadata, the producer is storing the answer, and failing.
    let seen = read_events(&mut body, 6).await;
    assert_eq!(seen.last().unwrap().name, "metadata");
    tokio::time::sleep(Duration::from_millis(150)).await;
    sqlx::query("DROP TRIGGER refuse_finish")
        .execute(&db)
        .await
        .unwrap();
    let rest = support::read_stream_body(&mut body).await;
    let names: Vec<&str> = rest.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["done"]);
    assert_eq!(rest[0].data["status"], "complete");
    let conversation = seen[0].data["conversation_id"].as_str().unwrap();
    let messages = app.messages(conversation).await;
    assert_eq!(messages[1]["status"], "complete");
}

#[tokio::test]
async fn a_final_store_write_that_keeps_failing_is_reported_in_the_stream() {
    let app = spawn_app().await;
    let db = database(&app).await;
    sqlx::query(REFUSE_FINISH).execute(&db).await.unwrap();
    let stream = app
        .chat_stream(
            json!({"message": "store me", "options": {"max_tokens": 3, "tokens_per_second": 0}}),
        )
        .await;
    let names: Vec<&str> = stream.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names[names.len() - 3..], ["metadata", "error", "done"]);
    assert_eq!(
        stream.events[names.len() - 2].data["code"],
        "answer_not_stored"
    );
    // Once the database takes writes again, the answer is stored after all.
    sqlx::query("DROP TRIGGER refuse_finish")
        .execute(&db)
        .await
        .unwrap();
    let conversation = stream.conversation_id();
    app.eventually(Duration::from_secs(15), || async {
        let messages = app.messages(&conversation).await;
        (messages[1]["status"] == "complete" && messages[1]["content"] == stream.text())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_deleted_conversations_runs_are_gone_on_every_route() {
    let app = spawn_app().await;
    let finished = app
        .chat_stream(
            json!({"message": "done", "options": {"max_tokens": 2, "tokens_per_second": 0}}),
        )
        .await;
    let live = app
        .chat(json!({"message": "live", "conversation_id": finished.conversation_id(), "options": {"max_tokens": 1000, "tokens_per_second": 20}}))
        .await;
    let mut body = live.bytes_stream();
    let seen = read_events(&mut body, 3).await;
    let live_run = seen[0].data["run_id"].as_str().unwrap().to_owned();
    let response = app
        .client
        .delete(app.url(&format!(
            "/api/conversations/{}",
            finished.conversation_id()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    for run in [finished.run_id(), live_run] {
        let (status, body) = app.get_json(&format!("/api/runs/{run}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("run_not_found"))
        );
        assert_eq!(app.attach(&run, None).await.status(), 404);
        assert_eq!(app.attach(&run, Some(1)).await.status(), 404);
        let (status, _) = app.post_json(&format!("/api/runs/{run}/cancel")).await;
        assert_eq!(status, 404);
    }
    // The open stream ends.
    while let Some(Ok(_)) = body.next().await {}
}

#[tokio::test]
async fn after_a_restart_a_run_that_just_ended_says_so() {
    let app = spawn_app().await;
    let stream = app
        .chat_stream(
            json!({"message": "before", "options": {"max_tokens": 2, "tokens_per_second": 0}}),
        )
        .await;
    let (result, data_dir) = app.shutdown().await;
    result.unwrap();
    let restarted = spawn_on(tidewire::Config::default(), data_dir).await;
    let (status, body) = restarted
        .get_json(&format!("/api/runs/{}", stream.run_id()))
        .await;
    assert_eq!(status, 410);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains("more than"), "{message}");
    assert!(
        message.contains("not across restarts") && message.contains("(complete)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let app = spawn_app().await;
    let config = tidewire::Config {
        data_dir: app.data_dir.path().to_owned(),
        ..tidewire::Config::default()
    };
    let Err(error) = tidewire::open(config).await else {
        panic!("a second server opened the same data directory");
    };
    let message = error.to_string();
    assert!(message.contains("in use by another tidewire"), "{message}");
    // The first one is untouched.
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
}
