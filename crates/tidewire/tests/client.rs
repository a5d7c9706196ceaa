//! tidewire-client against the real server: exact resume through a proxy that cuts
//! connections, retries, refusals that are not retried, idle timeouts, cancel and
//! idempotent re-posts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures_util::StreamExt;
use support::proxy::{Behaviour, start_front, start_proxy};
use support::spawn_app_with;
use tidewire_client::{
    ChatEvent, ChatOptions, ChatRequest, ChatStream, Client, ClientError, RetryPolicy,
};

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(5),
        factor: 2.0,
        max_delay: Duration::from_millis(50),
        max_attempts: 6,
        ..RetryPolicy::default()
    }
}

fn client(url: &str) -> Client {
    Client::builder(url).retry(fast_retries()).build().unwrap()
}

fn ask(message: &str, max_tokens: u32, tokens_per_second: f64) -> ChatRequest {
    ChatRequest {
        options: Some(ChatOptions {
            max_tokens: Some(max_tokens),
            tokens_per_second: Some(tokens_per_second),
            ..ChatOptions::default()
        }),
        ..ChatRequest::new(message)
    }
}

/// Every event of a stream, with the id it came with.
async fn collect(mut stream: ChatStream) -> Result<Vec<(u64, ChatEvent)>, ClientError> {
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push((stream.last_event_id(), event?));
    }
    Ok(events)
}

fn text(events: &[(u64, ChatEvent)]) -> String {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            ChatEvent::Token(t) => Some(t.token.as_str()),
            _ => None,
        })
        .collect()
}

fn assert_consecutive(events: &[(u64, ChatEvent)]) {
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(ids, expected, "every event once, in order");
    assert!(matches!(events[0].1, ChatEvent::Run(_)));
    assert!(events.last().unwrap().1.is_done());
}

async fn stored_answer(
    client: &Client,
    events: &[(u64, ChatEvent)],
) -> tidewire_protocol::api::Message {
    let ChatEvent::Run(run) = &events[0].1 else {
        panic!("run first")
    };
    let messages = client.messages(&run.conversation_id).await.unwrap();
    messages.messages[1].clone()
}

#[tokio::test]
async fn a_full_answer() {
    let app = spawn_app_with(|_| {}).await;
    let client = client(&app.base);
    let events = collect(client.chat(ask("hello", 10, 0.0))).await.unwrap();
    assert_consecutive(&events);
    assert_eq!(events.len(), 14);
    let stored = stored_answer(&client, &events).await;
    assert_eq!(stored.content, text(&events));
    assert_eq!(stored.status, tidewire_client::MessageStatus::Complete);
}

#[tokio::test]
async fn an_answer_through_a_proxy_that_cuts_every_few_hundred_bytes_is_exact() {
    let app = spawn_app_with(|config| config.retry = Duration::from_millis(5)).await;
    // A cut lands anywhere from inside the first event (the response headers are
    // about 230 bytes, the `run` event about 290) to a few events later.
    let proxy = start_proxy(app.addr, |n| Behaviour::CutAfter(300 + (n * 97) % 400)).await;
    let client = Client::builder(&proxy.url())
        .retry(RetryPolicy {
            max_attempts: 50,
            ..fast_retries()
        })
        .build()
        .unwrap();
    let events = collect(client.chat(ask("cut me often", 60, 300.0)))
        .await
        .unwrap();
    assert!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst) > 10,
        "the proxy really cut"
    );
    assert_consecutive(&events);
    let direct = client_direct_events(&app.base, &events).await;
    assert_eq!(events, direct, "the same events as an uninterrupted stream");
    let stored = stored_answer(&Client::new(&app.base).unwrap(), &events).await;
    assert_eq!(stored.content.as_bytes(), text(&events).as_bytes());
    // One generation only, however many times the POST was retried.
    let (_, list) = app.get_json("/api/conversations").await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1);
}

/// The run's events read again straight from the server.
async fn client_direct_events(base: &str, events: &[(u64, ChatEvent)]) -> Vec<(u64, ChatEvent)> {
    let ChatEvent::Run(run) = &events[0].1 else {
        panic!("run first")
    };
    collect(Client::new(base).unwrap().attach(&run.run_id, 0))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_server_that_answers_503_twice_then_200_is_retried() {
    let app = spawn_app_with(|_| {}).await;
    let front = start_front(&app.base, |n| {
        (n < 2).then_some((StatusCode::SERVICE_UNAVAILABLE, None))
    })
    .await;
    let events = collect(client(&front.url()).chat(ask("retry me", 5, 0.0)))
        .await
        .unwrap();
    assert_consecutive(&events);
    assert_eq!(front.count(), 3);
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let app = spawn_app_with(|_| {}).await;
    let front = start_front(&app.base, |n| {
        (n == 0).then_some((StatusCode::TOO_MANY_REQUESTS, Some("1")))
    })
    .await;
    let started = Instant::now();
    let events = collect(client(&front.url()).chat(ask("slow down", 3, 0.0)))
        .await
        .unwrap();
    assert_consecutive(&events);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(front.count(), 2);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let app = spawn_app_with(|_| {}).await;
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::NOT_FOUND,
        StatusCode::UNPROCESSABLE_ENTITY,
    ] {
        let front = start_front(&app.base, move |_| Some((status, None))).await;
        let error = collect(client(&front.url()).chat(ask("no", 3, 0.0)))
            .await
            .unwrap_err();
        match error {
            ClientError::Http {
                status: got, code, ..
            } => {
                assert_eq!(got, status.as_u16());
                assert_eq!(code, "injected");
            }
            other => panic!("expected an HTTP error, got {other:?}"),
        }
        assert_eq!(front.count(), 1, "{status} was not retried");
    }
    // The real server's own refusal: an empty message is 422, with its message.
    let error = collect(client(&app.base).chat(ChatRequest::new("  ")))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Http { status: 422, code, .. } if code == "empty_message"),
        "{error}"
    );
}

#[tokio::test]
async fn it_gives_up_after_the_maximum_attempts_with_the_last_cause() {
    let app = spawn_app_with(|_| {}).await;
    let front = start_front(&app.base, |_| Some((StatusCode::BAD_GATEWAY, None))).await;
    let error = collect(client(&front.url()).chat(ask("never", 3, 0.0)))
        .await
        .unwrap_err();
    match &error {
        ClientError::GaveUp { attempts, last } => {
            assert_eq!(*attempts, 6);
            assert_eq!(last.status(), Some(502));
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert_eq!(front.count(), 6);
    assert!(
        error.to_string().contains("gave up after 6 attempts"),
        "{error}"
    );
}

#[tokio::test]
async fn an_idle_timeout_triggers_a_resume() {
    let app = spawn_app_with(|config| config.retry = Duration::from_millis(5)).await;
    // The first connection goes silent after 700 bytes without closing.
    let proxy = start_proxy(app.addr, |n| {
        if n == 0 {
            Behaviour::StallAfter(700)
        } else {
            Behaviour::Pass
        }
    })
    .await;
    let client = Client::builder(&proxy.url())
        .retry(fast_retries())
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let started = Instant::now();
    let events = collect(client.chat(ask("stall", 30, 200.0))).await.unwrap();
    assert_consecutive(&events);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(proxy.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let stored = stored_answer(&client, &events).await;
    assert_eq!(stored.content, text(&events));
}

#[tokio::test]
async fn an_overall_timeout_ends_the_stream() {
    let app = spawn_app_with(|_| {}).await;
    let client = Client::builder(&app.base)
        .overall_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let error = collect(client.chat(ask("too long", 1000, 20.0)))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Timeout(_)), "{error}");
}

#[tokio::test]
async fn cancel_stops_the_run_on_the_server() {
    let app = spawn_app_with(|_| {}).await;
    let client = client(&app.base);
    let mut stream = client.chat(ask("cancel me", 1000, 20.0));
    let mut events = Vec::new();
    while events.len() < 5 {
        events.push((
            stream.last_event_id(),
            stream.next().await.unwrap().unwrap(),
        ));
    }
    stream.cancel().await.unwrap();
    while let Some(event) = stream.next().await {
        events.push((stream.last_event_id(), event.unwrap()));
    }
    let ChatEvent::Done(done) = &events.last().unwrap().1 else {
        panic!("done last")
    };
    assert_eq!(done.status, tidewire_client::MessageStatus::Cancelled);
    let run_id = stream.run_id().unwrap();
    let view = client.run(&run_id).await.unwrap();
    assert_eq!(view.status, tidewire_client::MessageStatus::Cancelled);
    let stored = stored_answer(&client, &events).await;
    assert_eq!(stored.status, tidewire_client::MessageStatus::Cancelled);
    assert_eq!(stored.content, text(&events));
}

#[tokio::test]
async fn a_post_cut_before_the_run_event_is_reposted_without_a_second_run() {
    let app = spawn_app_with(|config| config.retry = Duration::from_millis(5)).await;
    // The first answer is cut inside its headers: the client never sees `run`.
    let proxy = start_proxy(app.addr, |n| {
        if n == 0 {
            Behaviour::CutAfter(60)
        } else {
            Behaviour::Pass
        }
    })
    .await;
    let events = collect(client(&proxy.url()).chat(ask("only once", 20, 100.0)))
        .await
        .unwrap();
    assert_consecutive(&events);
    let (_, list) = app.get_json("/api/conversations").await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1, "{list}");
    let stored = stored_answer(&Client::new(&app.base).unwrap(), &events).await;
    assert_eq!(stored.content, text(&events));
}

#[tokio::test]
async fn attach_resumes_after_an_event_id() {
    let app = spawn_app_with(|_| {}).await;
    let stream = app
        .chat_stream(serde_json::json!({"message": "attach", "options": {"max_tokens": 6, "tokens_per_second": 0}}))
        .await;
    let events = collect(client(&app.base).attach(&stream.run_id(), 4))
        .await
        .unwrap();
    assert_eq!(events.first().unwrap().0, 5);
    assert_eq!(events.len(), stream.events.len() - 4);
    let error = collect(client(&app.base).attach("no-such-run", 0))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
}
