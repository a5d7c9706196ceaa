//! A node whose PostgreSQL goes away and comes back: readiness says so, new runs
//! are refused with 503 and `Retry-After`, the running answer streams on and is
//! stored once the database is back, and the node reconnects by itself. The
//! database is the machine's, behind a TCP relay the test can cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{read_events, share, spawn_app_with};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay to PostgreSQL that can be taken down (every connection cut, new ones
/// closed at once) and brought back on the same port.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl Relay {
    async fn start(target: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let relay = Self {
            port,
            up: Arc::clone(&up),
            generation: generation.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up.load(Ordering::Acquire) {
                    continue; // dropped: the connection closes at once
                }
                let mut cut = generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        relay
    }

    fn down(&self) {
        self.up.store(false, Ordering::Release);
        self.generation.send_modify(|n| *n += 1);
    }

    fn up(&self) {
        self.up.store(true, Ordering::Release);
    }
}

#[tokio::test]
async fn postgresql_going_away_refuses_new_runs_and_loses_nothing() {
    let relay = Relay::start("127.0.0.1:5432").await;
    let port = relay.port;
    let app = spawn_app_with(|config| {
        share(config);
        config.postgres_url = Some(
            format!("postgres://postgres@127.0.0.1:{port}/test")
                .parse()
                .unwrap(),
        );
        config.flush_interval = Duration::from_millis(50);
    })
    .await;
    let response = app
        .chat(json!({"message": "keep going", "options": {"max_tokens": 120, "tokens_per_second": 40}}))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = read_events(&mut body, 4).await;
    let conversation_id = first[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    relay.down();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["store"]["status"], "failing", "{ready}");
    let refused = app.chat(json!({"message": "now?"})).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "store_unavailable", "{refused}");

    // The answer streams on meanwhile.
    let more = read_events(&mut body, 10).await;
    assert!(more.iter().all(|event| event.name == "token"));
    relay.up();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let (events, _) = support::decode(&rest);
    assert_eq!(events.last().unwrap().data["status"], "complete");
    assert!(
        events.iter().all(|event| event.name != "error"),
        "{events:?}"
    );
    // Stored whole, and the node takes new runs again.
    let messages = app.messages(&conversation_id).await;
    assert_eq!(messages[1]["status"], "complete");
    let text: String = first
        .iter()
        .chain(&more)
        .chain(&events)
        .filter(|event| event.name == "token")
        .map(|event| event.data["token"].as_str().unwrap())
        .collect();
    assert_eq!(messages[1]["content"], text);
    let again = app
        .chat(json!({"message": "and now?", "stream": false}))
        .await;
    assert_eq!(again.status(), 200);
}
