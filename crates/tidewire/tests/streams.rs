//! The stream of a run: its shape, exact resume from any position, many runs and
//! many subscribers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::StreamExt;
use serde_json::json;
use support::{read_events, read_stream, spawn_app};

#[tokio::test]
async fn a_stream_has_run_first_done_last_and_consecutive_ids() {
    let app = spawn_app().await;
    let response = app
        .chat(json!({"message": "what is a tide?", "options": {"max_tokens": 12, "tokens_per_second": 0}}))
        .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert_eq!(headers["connection"], "keep-alive");
    let stream = read_stream(response).await;

    assert!(
        stream.bytes.starts_with(b": keepalive\n"),
        "keepalive first, to flush headers"
    );
    assert_eq!(stream.retry, Some(1000));
    let names: Vec<&str> = stream.events.iter().map(|e| e.name.as_str()).collect();
    let mut expected = vec!["run", "stage"];
    expected.extend(std::iter::repeat_n("token", 12));
    expected.extend(["metadata", "done"]);
    assert_eq!(names, expected);
    for (index, event) in stream.events.iter().enumerate() {
        assert_eq!(event.id, (index + 1).to_string());
    }
    let run = &stream.events[0].data;
    for key in ["run_id", "conversation_id", "message_id"] {
        assert!(run[key].as_str().is_some_and(|v| !v.is_empty()), "{key}");
    }
    assert_eq!(
        run["events_url"],
        format!("/api/runs/{}/events", stream.run_id())
    );
    assert_eq!(stream.events[1].data, json!({"stage": "generation"}));
    let metadata = &stream.events[14].data;
    assert_eq!(metadata["model"], "synthetic");
    assert_eq!(metadata["usage"]["completion_tokens"], 12);
    assert_eq!(metadata["message_id"], run["message_id"]);
    assert_eq!(stream.last().data, json!({"status": "complete"}));

    let messages = app.messages(&stream.conversation_id()).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "what is a tide?");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["status"], "complete");
    assert_eq!(messages[1]["content"], stream.text());
    assert_eq!(messages[1]["usage"]["completion_tokens"], 12);
}

#[tokio::test]
async fn stream_false_answers_with_one_object() {
    let app = spawn_app().await;
    let response = app
        .chat(json!({"message": "once", "stream": false, "options": {"max_tokens": 5, "tokens_per_second": 0}}))
        .await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "complete");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["sources"], json!([]));
    assert_eq!(body["follow_up_questions"], json!([]));
    assert!(body["quality_score"].is_null());
    let messages = app
        .messages(body["conversation_id"].as_str().unwrap())
        .await;
    assert_eq!(messages[1]["content"], body["content"]);
    assert_eq!(messages[1]["id"], body["message_id"]);
}

#[tokio::test]
async fn resuming_a_finished_run_from_every_position_gives_the_exact_rest() {
    let app = spawn_app().await;
    let full = app
        .chat_stream(
            json!({"message": "resume me", "options": {"max_tokens": 20, "tokens_per_second": 0}}),
        )
        .await;
    let run_id = full.run_id();
    let whole = full.event_bytes().to_vec();
    let total = full.events.len();
    for after in 0..=total {
        let resumed = read_stream(app.attach(&run_id, Some(after)).await).await;
        let expected_start =
            support::find(&whole, format!("id: {}\n", after + 1).as_bytes()).unwrap_or(whole.len());
        assert_eq!(
            resumed.event_bytes(),
            &whole[expected_start..],
            "resumed after event {after}"
        );
        assert_eq!(resumed.events.len(), total - after);
    }
    // The query parameter works too, for clients that cannot set headers.
    let by_query = app
        .client
        .get(app.url(&format!("/api/runs/{run_id}/events?last_event_id=5")))
        .send()
        .await
        .unwrap();
    assert_eq!(read_stream(by_query).await.events[0].id, "6");
}

#[tokio::test]
async fn resuming_a_live_run_from_every_position_gives_the_exact_rest() {
    let app = spawn_app().await;
    let response = app
        .chat(json!({"message": "live resume", "options": {"max_tokens": 30, "tokens_per_second": 40}}))
        .await;
    let mut body = response.bytes_stream();
    let first = read_events(&mut body, 1).await;
    let run_id = first[0].data["run_id"].as_str().unwrap().to_owned();
    // Attach at each position while the run is still going.
    let mut attachments = Vec::new();
    for after in 0..8 {
        read_events(&mut body, 1).await;
        let response = app.attach(&run_id, Some(after)).await;
        assert_eq!(response.status(), 200);
        attachments.push((after, tokio::spawn(read_stream(response))));
    }
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let full = read_stream(app.attach(&run_id, Some(0)).await).await;
    let whole = full.event_bytes().to_vec();
    for (after, task) in attachments {
        let resumed = task.await.unwrap();
        let start = support::find(&whole, format!("id: {}\n", after + 1).as_bytes()).unwrap();
        assert_eq!(
            resumed.event_bytes(),
            &whole[start..],
            "live attach after event {after}"
        );
    }
    assert_eq!(full.last().name, "done");
}

#[tokio::test]
async fn a_hundred_concurrent_runs_all_complete_and_are_stored() {
    let app = spawn_app().await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let client = app.client.clone();
            let url = app.url("/api/chat");
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .json(&json!({"message": format!("question {i}"), "options": {"max_tokens": 16, "tokens_per_second": 200}}))
                    .send()
                    .await
                    .unwrap();
                read_stream(response).await
            })
        })
        .collect();
    let mut conversations = std::collections::HashSet::new();
    for task in tasks {
        let stream = task.await.unwrap();
        assert_eq!(stream.last().data["status"], "complete");
        assert_eq!(
            stream.events.iter().filter(|e| e.name == "token").count(),
            16
        );
        let messages = app.messages(&stream.conversation_id()).await;
        assert_eq!(messages[1]["content"], stream.text());
        conversations.insert(stream.conversation_id());
    }
    assert_eq!(conversations.len(), 100);
}

#[tokio::test]
async fn ten_subscribers_on_one_run_get_the_same_bytes() {
    let app = spawn_app().await;
    let response = app
        .chat(
            json!({"message": "fan out", "options": {"max_tokens": 40, "tokens_per_second": 100}}),
        )
        .await;
    let mut body = response.bytes_stream();
    let run_id = read_events(&mut body, 1).await[0].data["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let subscribers: Vec<_> =
        futures_util::future::join_all((0..10).map(|_| app.attach(&run_id, Some(0))))
            .await
            .into_iter()
            .map(|response| tokio::spawn(read_stream(response)))
            .collect();
    // Subscribers are counted by the node they are on.
    let (status, view) = app.resumer().get_json(&format!("/api/runs/{run_id}")).await;
    assert_eq!(status, 200);
    assert!(view["subscribers"].as_u64().unwrap() >= 10, "{view}");
    let mut streams = Vec::new();
    for task in subscribers {
        streams.push(task.await.unwrap());
    }
    for stream in &streams {
        assert_eq!(stream.event_bytes(), streams[0].event_bytes());
        assert_eq!(stream.last().name, "done");
        assert_eq!(
            stream.events.iter().filter(|e| e.name == "token").count(),
            40
        );
    }
}

#[tokio::test]
async fn the_run_goes_on_after_its_client_disconnects() {
    let app = spawn_app().await;
    let response = app
        .chat(json!({"message": "leave early", "options": {"max_tokens": 20, "tokens_per_second": 100}}))
        .await;
    let mut body = response.bytes_stream();
    let first = read_events(&mut body, 3).await;
    drop(body);
    let run_id = first[0].data["run_id"].as_str().unwrap().to_owned();
    let conversation_id = first[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rest = read_stream(app.attach(&run_id, Some(3)).await).await;
    assert_eq!(rest.last().data["status"], "complete");
    let messages = app.messages(&conversation_id).await;
    assert_eq!(messages[1]["status"], "complete");
    assert_eq!(
        messages[1]["content"].as_str().unwrap().split(' ').count(),
        20
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge_gets_the_same_stream_as_http1() {
    let app = spawn_app().await;
    let body =
        json!({"message": "what is a tide?", "options": {"max_tokens": 5, "tokens_per_second": 0}});
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(app.url("/api/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let over_h2 = read_stream(response).await;
    let over_h1 = read_stream(app.chat(body).await).await;
    let names = |stream: &support::Stream| -> Vec<String> {
        stream
            .events
            .iter()
            .map(|event| event.name.clone())
            .collect()
    };
    assert_eq!(names(&over_h2), names(&over_h1));
    assert_eq!(over_h2.events.last().unwrap().name, "done");
}
