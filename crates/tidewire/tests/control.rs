//! Controlling runs: cancel, idempotent retries, cancel after idle, retention,
//! partial flushes, and the stored conversations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{read_events, read_stream, spawn_app, spawn_app_with};

#[tokio::test]
async fn cancel_stops_the_run_and_stores_the_partial_answer() {
    let app = spawn_app().await;
    let response = app
        .chat(json!({"message": "a long answer", "options": {"max_tokens": 1000, "tokens_per_second": 20}}))
        .await;
    let mut body = response.bytes_stream();
    let seen = read_events(&mut body, 6).await;
    let run_id = seen[0].data["run_id"].as_str().unwrap().to_owned();
    let conversation_id = seen[0].data["conversation_id"].as_str().unwrap().to_owned();

    let cancel = tokio::spawn({
        let client = app.client.clone();
        let url = app.url(&format!("/api/runs/{run_id}/cancel"));
        async move { client.post(url).send().await.unwrap() }
    });
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let (events, _) = support::decode(&rest);
    assert_eq!(events.last().unwrap().name, "done");
    assert_eq!(events.last().unwrap().data, json!({"status": "cancelled"}));
    // How fast a cancel lands is measured by the benchmark, not asserted here: on
    // a busy machine any bound would be flaky. The run stopped long before its
    // 1000 tokens.

    let response = cancel.await.unwrap();
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["status"], "cancelled");

    let messages = app.messages(&conversation_id).await;
    let answer = &messages[1];
    assert_eq!(answer["status"], "cancelled");
    let streamed: String = seen
        .iter()
        .chain(events.iter())
        .filter(|e| e.name == "token")
        .map(|e| e.data["token"].as_str().unwrap())
        .collect();
    assert!(!streamed.is_empty());
    assert_eq!(answer["content"], streamed);
    let tokens = streamed.split(' ').count() as u64;
    assert_eq!(answer["usage"]["completion_tokens"], tokens);

    // Cancel is idempotent.
    let (status, again) = app.post_json(&format!("/api/runs/{run_id}/cancel")).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "cancelled");
}

#[tokio::test]
async fn cancelling_a_finished_run_changes_nothing() {
    let app = spawn_app().await;
    let stream = app
        .chat_stream(
            json!({"message": "quick", "options": {"max_tokens": 3, "tokens_per_second": 0}}),
        )
        .await;
    let (status, view) = app
        .post_json(&format!("/api/runs/{}/cancel", stream.run_id()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "complete");
}

#[tokio::test]
async fn a_retried_post_with_the_same_key_attaches_to_the_first_run() {
    let app = spawn_app().await;
    let body =
        json!({"message": "exactly once", "options": {"max_tokens": 10, "tokens_per_second": 50}});
    let post = |last_event_id: Option<&str>| {
        let mut request = app
            .client
            .post(app.url("/api/chat"))
            .header("Idempotency-Key", "key-123")
            .json(&body);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send()
    };
    let (first, second) = tokio::join!(post(None), post(None));
    let first = read_stream(first.unwrap()).await;
    let second = read_stream(second.unwrap()).await;
    assert_eq!(first.run_id(), second.run_id());
    assert_eq!(first.event_bytes(), second.event_bytes());

    let resumed = read_stream(post(Some("4")).await.unwrap()).await;
    // Resumed after event 4: the `run` event is not repeated.
    assert!(resumed.events.iter().all(|e| e.name != "run"));
    assert_eq!(resumed.events[0].id, "5");
    assert_eq!(resumed.last().name, "done");

    // One conversation, one turn: no second generation started.
    let (_, list) = app.get_json("/api/conversations").await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(app.messages(&first.conversation_id()).await.len(), 2);

    // The same key with another request is refused.
    let other = app
        .client
        .post(app.url("/api/chat"))
        .header("Idempotency-Key", "key-123")
        .json(&json!({"message": "something else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
    let error: Value = other.json().await.unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn a_run_without_subscribers_is_cancelled_after_the_idle_grace() {
    let app =
        spawn_app_with(|config| config.cancel_after_idle = Some(Duration::from_millis(300))).await;
    let response = app
        .chat(json!({"message": "nobody listens", "options": {"max_tokens": 1000, "tokens_per_second": 20}}))
        .await;
    let mut body = response.bytes_stream();
    let seen = read_events(&mut body, 3).await;
    drop(body);
    let run_id = seen[0].data["run_id"].as_str().unwrap().to_owned();
    let view = app
        .eventually(Duration::from_secs(10), || async {
            let (_, view) = app.get_json(&format!("/api/runs/{run_id}")).await;
            (view["status"] != "streaming").then_some(view)
        })
        .await;
    assert_eq!(view["status"], "cancelled");
    let messages = app
        .messages(seen[0].data["conversation_id"].as_str().unwrap())
        .await;
    assert_eq!(messages[1]["status"], "cancelled");
}

#[tokio::test]
async fn by_default_a_run_without_subscribers_finishes() {
    let app = spawn_app().await;
    let response = app
        .chat(json!({"message": "finish anyway", "options": {"max_tokens": 30, "tokens_per_second": 100}}))
        .await;
    let mut body = response.bytes_stream();
    let seen = read_events(&mut body, 1).await;
    drop(body);
    let conversation_id = seen[0].data["conversation_id"].as_str().unwrap().to_owned();
    let answer = app
        .eventually(Duration::from_secs(10), || async {
            let messages = app.messages(&conversation_id).await;
            (messages[1]["status"] != "streaming").then(|| messages[1].clone())
        })
        .await;
    assert_eq!(answer["status"], "complete");
}

#[tokio::test]
async fn a_finished_run_expires_after_the_retention_period() {
    let app = spawn_app_with(|config| config.retention = Duration::from_millis(200)).await;
    let stream = app
        .chat_stream(
            json!({"message": "short lived", "options": {"max_tokens": 2, "tokens_per_second": 0}}),
        )
        .await;
    let run_id = stream.run_id();
    let (status, body) = app
        .eventually(Duration::from_secs(10), || async {
            let response = app.attach(&run_id, None).await;
            let status = response.status().as_u16();
            (status != 200).then_some((status, response))
        })
        .await;
    assert_eq!(status, 410);
    let body: Value = body.json().await.unwrap();
    assert_eq!(body["error"]["code"], "run_expired");
    // In the shared mode this asks the other node, which expires its copy of the
    // run on its own clock: it may say so a tick later.
    let status = app
        .eventually(Duration::from_secs(10), || async {
            let (status, _) = app.get_json(&format!("/api/runs/{run_id}")).await;
            (status != 200).then_some(status)
        })
        .await;
    assert_eq!(status, 410);
    // The answer itself stays in the store.
    assert_eq!(
        app.messages(&stream.conversation_id()).await[1]["status"],
        "complete"
    );
}

#[tokio::test]
async fn the_partial_answer_is_flushed_while_the_run_goes_on() {
    let app = spawn_app_with(|config| config.flush_interval = Duration::from_millis(50)).await;
    let response = app
        .chat(json!({"message": "flush me", "options": {"max_tokens": 1000, "tokens_per_second": 50}}))
        .await;
    let mut body = response.bytes_stream();
    let seen = read_events(&mut body, 10).await;
    let conversation_id = seen[0].data["conversation_id"].as_str().unwrap().to_owned();
    let answer = app
        .eventually(Duration::from_secs(10), || async {
            let messages = app.messages(&conversation_id).await;
            let content = messages[1]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (!content.is_empty()).then(|| messages[1].clone())
        })
        .await;
    assert_eq!(answer["status"], "streaming");
    let run_id = seen[0].data["run_id"].as_str().unwrap();
    app.post_json(&format!("/api/runs/{run_id}/cancel")).await;
    let mut rest = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        rest.extend_from_slice(&chunk);
    }
    let (events, _) = support::decode(&rest);
    let streamed: String = seen
        .iter()
        .chain(events.iter())
        .filter(|e| e.name == "token")
        .map(|e| e.data["token"].as_str().unwrap())
        .collect();
    // The whole flushed text is the start of what was streamed.
    let flushed = answer["content"].as_str().unwrap();
    assert!(
        streamed.starts_with(flushed) && flushed.len() < streamed.len() + 1,
        "flushed {flushed:?} is not a prefix of {streamed:?}"
    );
}

#[tokio::test]
async fn conversations_are_listed_continued_and_deleted() {
    let app = spawn_app().await;
    let first = app.chat_stream(json!({"message": "first question", "options": {"max_tokens": 4, "tokens_per_second": 0}})).await;
    let conversation_id = first.conversation_id();
    let second = app
        .chat_stream(json!({"message": "follow-up", "conversation_id": conversation_id, "options": {"max_tokens": 4, "tokens_per_second": 0}}))
        .await;
    assert_eq!(second.conversation_id(), conversation_id);
    let other = app.chat_stream(json!({"message": "another topic", "options": {"max_tokens": 2, "tokens_per_second": 0}})).await;

    let messages = app.messages(&conversation_id).await;
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(messages[2]["content"], "follow-up");
    assert_eq!(messages[3]["run_id"], second.run_id());

    let (status, list) = app.get_json("/api/conversations").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [other.conversation_id().as_str(), conversation_id.as_str()]
    );
    assert_eq!(list["conversations"][1]["title"], "first question");
    let (_, limited) = app.get_json("/api/conversations?limit=1").await;
    assert_eq!(limited["conversations"].as_array().unwrap().len(), 1);

    let deleted = app
        .client
        .delete(app.url(&format!("/api/conversations/{conversation_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, error) = app
        .get_json(&format!("/api/conversations/{conversation_id}/messages"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "conversation_not_found");
    let again = app
        .client
        .delete(app.url(&format!("/api/conversations/{conversation_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn healthz_answers() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
}
