//! Three `tidewire` binaries sharing the Redis run log and the PostgreSQL store:
//! any node serves any client. Each test has its own key prefix and schema, so
//! tests run side by side on the one Redis and PostgreSQL of the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tidewire/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Event, decode, read_events};

const REDIS: &str = "redis://127.0.0.1:6379";

/// One test's cluster: its configuration file (own prefix and schema) and nodes.
struct Cluster {
    dir: tempfile::TempDir,
    name: String,
    redis: String,
}

impl Cluster {
    fn new(redis: &str) -> Self {
        Self::with(
            redis,
            "[documents]\nseed_docs = false\n\
             [pipeline]\nquery_analysis = false\nretrieval = false\nscoring = false\nfollow_ups = false\n",
        )
    }

    /// A cluster whose nodes have `tables` (TOML) in their configuration.
    fn with(redis: &str, tables: &str) -> Self {
        let name = format!("tw_test_{:016x}", support::random_u64());
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "redis_url = \"{redis}\"\npostgres_url = \"{pg}\"\nflush_interval = \"50ms\"\n\
             drain_timeout = \"300ms\"\n\
             [cluster]\nlease = \"1s\"\nredis_prefix = \"{name}:\"\npostgres_schema = \"{name}\"\n\
             [llm]\ndefault = \"synthetic\"\n{tables}",
            pg = support::test_postgres_url(),
        );
        std::fs::write(dir.path().join("tidewire.toml"), config).unwrap();
        Self {
            dir,
            name,
            redis: redis.to_owned(),
        }
    }

    fn node(&self, id: &str) -> Node {
        let data_dir = self.dir.path().join(id);
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidewire"))
            .args(["serve", "--addr", "127.0.0.1:0", "--config"])
            .arg(self.dir.path().join("tidewire.toml"))
            .arg("--data-dir")
            .arg(&data_dir)
            .env("TIDEWIRE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            let Some(line) = lines.next() else {
                panic!("node {id} exited before listening: {:?}", child.wait());
            };
            let line = line.unwrap();
            if let Some(at) = line.find("listening on http://") {
                break line[at + "listening on ".len()..].trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Node { child, base }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort: the schema and keys of this test go.
        let _ = Command::new("psql")
            .args([&support::test_postgres_url(), "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .stderr(Stdio::null())
            .status();
        let port = self.redis.rsplit(':').next().unwrap_or("6379").to_owned();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "redis-cli -p {port} --scan --pattern '{}:*' | xargs -r redis-cli -p {port} del",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

struct Node {
    child: Child,
    base: String,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn ask(node: &Node, tokens: u32, per_second: u32) -> reqwest::Response {
    let response = client()
        .post(node.url("/api/chat"))
        .json(&json!({"message": "tell me a story", "options": {"max_tokens": tokens, "tokens_per_second": per_second}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

async fn attach(node: &Node, run_id: &str, after: Option<usize>) -> reqwest::Response {
    let mut request = client().get(node.url(&format!("/api/runs/{run_id}/events")));
    if let Some(after) = after {
        request = request.header("Last-Event-ID", after.to_string());
    }
    request.send().await.unwrap()
}

async fn all_bytes(response: reqwest::Response) -> Vec<u8> {
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap().to_vec()
}

/// The bytes of the events (from the first `id:` line on: a stream may start with
/// `retry:`).
fn events_part(bytes: &[u8]) -> &[u8] {
    let at = support::find(bytes, b"id: ").unwrap_or(0);
    &bytes[at..]
}

/// The stream's text with every `access_token` value left out.
fn without_tokens(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.split("access_token=");
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        out.push_str("access_token=…");
        out.push_str(&part[part.find('"').unwrap_or(part.len())..]);
    }
    out
}

async fn messages(node: &Node, conversation_id: &str) -> Vec<Value> {
    let body: Value = client()
        .get(node.url(&format!("/api/conversations/{conversation_id}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_run_started_on_a_resumes_on_b_byte_exact_and_is_followed_on_c() {
    let cluster = Cluster::new(REDIS);
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let response = ask(&a, 60, 100).await;
    let mut body = response.bytes_stream();
    let first = read_events(&mut body, 10).await;
    let run_id = first[0].data["run_id"].as_str().unwrap().to_owned();
    let conversation_id = first[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(body);

    // C follows from the start while the run goes on; B resumes after event 10.
    let on_c = tokio::spawn(all_bytes(attach(&c, &run_id, None).await));
    let resumed = all_bytes(attach(&b, &run_id, Some(10)).await).await;
    let followed = on_c.await.unwrap();
    // A holds the whole run: the reference bytes.
    let whole = all_bytes(attach(&a, &run_id, None).await).await;
    assert_eq!(
        events_part(&followed),
        events_part(&whole),
        "C's bytes are A's"
    );
    let tenth = support::find(&whole, b"id: 11\n").unwrap();
    assert_eq!(
        events_part(&resumed),
        &whole[tenth..],
        "B's resume is A's tail, byte for byte"
    );
    let (events, _) = decode(&whole);
    assert_eq!(events.last().unwrap().data["status"], "complete");

    // Every node reads the stored answer from the one store.
    for node in [&a, &b, &c] {
        let stored = messages(node, &conversation_id).await;
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[1]["status"], "complete");
    }
    // And the run's state.
    let view: Value = client()
        .get(c.url(&format!("/api/runs/{run_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "complete", "{view}");
}

#[tokio::test]
async fn a_cancel_on_c_stops_the_producer_on_a_within_200_ms() {
    let cluster = Cluster::new(REDIS);
    let (a, _b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let response = ask(&a, 2000, 20).await;
    let mut body = response.bytes_stream();
    let first = read_events(&mut body, 3).await;
    let run_id = first[0].data["run_id"].as_str().unwrap().to_owned();
    let conversation_id = first[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // C knows the run (a mirror is following it) before the cancel is timed.
    let (status, _) = (
        client()
            .get(c.url(&format!("/api/runs/{run_id}")))
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(status, 200);

    let asked = Instant::now();
    let cancel = tokio::spawn({
        let url = c.url(&format!("/api/runs/{run_id}/cancel"));
        async move { client().post(url).send().await.unwrap() }
    });
    // A's own subscriber sees its producer stop.
    let mut done_at = None;
    let mut buffer = Vec::new();
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk.unwrap());
        let (events, _) = decode(&buffer);
        if let Some(done) = events.iter().find(|event: &&Event| event.name == "done") {
            assert_eq!(done.data["status"], "cancelled");
            done_at = Some(asked.elapsed());
            break;
        }
    }
    let stopped_after = done_at.expect("A's stream ended with done");
    assert!(
        stopped_after < Duration::from_millis(200),
        "A's producer stopped {stopped_after:?} after the cancel on C"
    );
    let view: Value = cancel.await.unwrap().json().await.unwrap();
    assert_eq!(view["status"], "cancelled", "{view}");
    let stored = messages(&c, &conversation_id).await;
    assert_eq!(stored[1]["status"], "cancelled");
}

#[tokio::test]
async fn a_node_killed_mid_run_is_ended_interrupted_on_the_others_with_its_text_stored() {
    let cluster = Cluster::new(REDIS);
    let (mut a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let response = ask(&a, 5000, 40).await;
    let mut body = response.bytes_stream();
    let first = read_events(&mut body, 3).await;
    let run_id = first[0].data["run_id"].as_str().unwrap().to_owned();
    let conversation_id = first[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_b = tokio::spawn(all_bytes(attach(&b, &run_id, None).await));
    let on_c = tokio::spawn(all_bytes(attach(&c, &run_id, Some(2)).await));
    tokio::time::sleep(Duration::from_millis(500)).await;

    a.kill();
    let killed = Instant::now();
    let on_b = tokio::time::timeout(Duration::from_secs(10), on_b)
        .await
        .expect("B's stream ended")
        .unwrap();
    let ended_after = killed.elapsed();
    let on_c = tokio::time::timeout(Duration::from_secs(5), on_c)
        .await
        .expect("C's stream ended")
        .unwrap();
    // The lease is 1 s; nodes look for expired leases every half lease.
    assert!(
        ended_after < Duration::from_secs(3),
        "ended {ended_after:?} after the kill"
    );
    for bytes in [&on_b, &on_c] {
        let (events, _) = decode(bytes);
        let done = events.last().unwrap();
        assert_eq!(done.name, "done");
        assert_eq!(done.data["status"], "interrupted");
        let error = &events[events.len() - 2];
        assert_eq!(error.data["code"], "node_lost");
    }
    let (events, _) = decode(&on_b);
    let text: String = events
        .iter()
        .filter(|event| event.name == "token")
        .map(|event| event.data["token"].as_str().unwrap())
        .collect();
    assert!(!text.is_empty());
    let stored = messages(&b, &conversation_id).await;
    assert_eq!(stored[1]["status"], "interrupted");
    assert_eq!(
        stored[1]["content"], text,
        "the stored text is what the log held"
    );
    // The run's bytes on B and C agree from event 3 on.
    let from_three = support::find(&on_b, b"id: 3\n").unwrap();
    assert_eq!(events_part(&on_c), &on_b[from_three..]);
}

#[tokio::test]
async fn two_hundred_runs_resumed_on_a_random_node_at_every_cut_are_exact() {
    let cluster = Cluster::new(REDIS);
    let nodes = [cluster.node("a"), cluster.node("b"), cluster.node("c")];
    let nodes = &nodes;
    let runs = futures_util::stream::iter(0..200u64)
        .map(|n| async move {
            let mut seed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |bound: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % bound
            };
            let start = &nodes[next(3) as usize];
            let response = ask(start, 40, 400).await;
            let mut body = response.bytes_stream();
            let mut seen = read_events(&mut body, 1 + next(5) as usize).await;
            let run_id = seen[0].data["run_id"].as_str().unwrap().to_owned();
            drop(body);
            loop {
                if seen.last().is_some_and(|event| event.name == "done") {
                    break;
                }
                let node = &nodes[next(3) as usize];
                let after: usize = seen.last().unwrap().id.parse().unwrap();
                let response = attach(node, &run_id, Some(after)).await;
                assert_eq!(response.status(), 200, "run {run_id} after {after}");
                let mut body = response.bytes_stream();
                let more = read_events(&mut body, 1 + next(12) as usize).await;
                seen.extend(more);
            }
            let ids: Vec<usize> = seen.iter().map(|event| event.id.parse().unwrap()).collect();
            let expected: Vec<usize> = (1..=ids.len()).collect();
            assert_eq!(ids, expected, "run {run_id}: every event once, in order");
            let whole = all_bytes(attach(&nodes[0], &run_id, None).await).await;
            let (reference, _) = decode(&whole);
            assert_eq!(seen, reference, "run {run_id}");
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    tokio::time::timeout(Duration::from_secs(240), runs)
        .await
        .expect("200 runs within 4 minutes");
}

#[tokio::test]
async fn one_idempotency_key_on_two_nodes_starts_one_run() {
    let cluster = Cluster::new(REDIS);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let body =
        json!({"message": "once only", "options": {"max_tokens": 20, "tokens_per_second": 200}});
    let post = |node: &Node, body: Value| {
        client()
            .post(node.url("/api/chat"))
            .header("Idempotency-Key", "same-key-1")
            .json(&body)
            .send()
    };
    let (on_a, on_b) = tokio::join!(post(&a, body.clone()), post(&b, body.clone()));
    let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
    assert_eq!(on_a.status(), 200);
    assert_eq!(on_b.status(), 200);
    let (a_events, _) = decode(&on_a.bytes().await.unwrap());
    let (b_events, _) = decode(&on_b.bytes().await.unwrap());
    assert_eq!(a_events[0].data["run_id"], b_events[0].data["run_id"]);
    assert_eq!(a_events, b_events);
    let conversation_id = a_events[0].data["conversation_id"].as_str().unwrap();
    assert_eq!(
        messages(&b, conversation_id).await.len(),
        2,
        "one turn stored"
    );
    // The same key with another request is refused on any node.
    let other = post(&b, json!({"message": "something else"}))
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
}

/// A Redis of this test's own, on a port of its own, that it can stop and start.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn redis_restarted_mid_run_loses_nothing_and_new_runs_wait_for_it() {
    let mut redis = OwnRedis::start();
    let cluster = Cluster::new(&redis.url());
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let response = ask(&a, 150, 50).await;
    let mut on_a = response.bytes_stream();
    let first = read_events(&mut on_a, 3).await;
    let run_id = first[0].data["run_id"].as_str().unwrap().to_owned();
    let conversation_id = first[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_b = tokio::spawn(all_bytes(attach(&b, &run_id, None).await));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Redis goes away (with everything it held: it keeps nothing on disk).
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = client()
        .post(b.url("/api/chat"))
        .json(&json!({"message": "now?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let ready = client().get(b.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["run_log"]["status"], "failing", "{ready}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();

    // A's own subscriber never noticed; B's mirror gets the rest once A has
    // copied the run again.
    let mut rest = Vec::new();
    while let Some(chunk) = on_a.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let on_b = tokio::time::timeout(Duration::from_secs(15), on_b)
        .await
        .expect("B's stream ended")
        .unwrap();
    let whole = all_bytes(attach(&a, &run_id, None).await).await;
    assert_eq!(events_part(&on_b), events_part(&whole), "B's bytes are A's");
    let (events, _) = decode(&whole);
    assert_eq!(events.last().unwrap().data["status"], "complete");
    let stored = messages(&b, &conversation_id).await;
    assert_eq!(stored[1]["status"], "complete");
    // New runs are taken again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = client()
            .post(b.url("/api/chat"))
            .json(&json!({"message": "now?", "stream": false}))
            .send()
            .await
            .unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {}", again.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_settings_are_checked() {
    let output = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args([
            "serve",
            "--redis-url",
            "127.0.0.1:6379",
            "--addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("redis_url must start with redis://"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_conversation_deleted_on_one_node_takes_its_runs_from_every_node() {
    let cluster = Cluster::new(REDIS);
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let finished = all_bytes(ask(&a, 5, 500).await).await;
    let (events, _) = decode(&finished);
    let finished_run = events[0].data["run_id"].as_str().unwrap().to_owned();
    let conversation_id = events[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let live = client()
        .post(a.url("/api/chat"))
        .json(&json!({"message": "live", "conversation_id": conversation_id, "options": {"max_tokens": 2000, "tokens_per_second": 20}}))
        .send()
        .await
        .unwrap();
    let mut live_body = live.bytes_stream();
    let seen = read_events(&mut live_body, 3).await;
    let live_run = seen[0].data["run_id"].as_str().unwrap().to_owned();
    // C follows both, so it holds mirrors of them when the delete comes.
    for run in [&finished_run, &live_run] {
        assert_eq!(attach(&c, run, Some(1)).await.status(), 200);
    }
    let deleted = client()
        .delete(b.url(&format!("/api/conversations/{conversation_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for node in [&a, &b, &c] {
        for run in [&finished_run, &live_run] {
            let status = client()
                .get(node.url(&format!("/api/runs/{run}")))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 404, "run {run} on {}", node.base);
            assert_eq!(attach(node, run, None).await.status(), 404);
        }
    }
    // A's producer stopped: its stream ends.
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = live_body.next().await {}
    })
    .await
    .expect("the live run's stream ended");
}

#[tokio::test]
async fn every_node_indexes_the_documents_the_shared_store_records() {
    let cluster = Cluster::with(REDIS, "[pipeline]\nscoring = false\nfollow_ups = false\n");
    // Two nodes seed tidewire's documentation at once, a third joins later with
    // an empty index: each finds the documents, and none forgets the others'.
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let sources = |node: &Node| {
        let url = node.url("/api/chat");
        async move {
            let answer: Value = client()
                .post(url)
                .json(&json!({"message": "How do I resume a stream with Last-Event-ID?", "stream": false}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["sources"].as_array().map_or(0, Vec::len)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in [&a, &b] {
        while sources(node).await == 0 {
            assert!(Instant::now() < deadline, "{} found no sources", node.base);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let listed = |node: &Node| {
        let url = node.url("/api/documents");
        async move {
            let body: Value = client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["documents"].as_array().map_or(0, Vec::len)
        }
    };
    let documents = listed(&a).await;
    assert!(documents > 0);
    let c = cluster.node("c");
    while sources(&c).await == 0 {
        assert!(Instant::now() < deadline, "the late node found no sources");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        listed(&a).await,
        documents,
        "the late node forgot no record"
    );
    assert!(sources(&a).await > 0);
}

#[tokio::test]
async fn an_events_url_minted_by_one_node_opens_the_run_on_another() {
    let cluster = Cluster::with(
        REDIS,
        "[auth]\napi_keys = true\n[documents]\nseed_docs = false\n\
         [pipeline]\nquery_analysis = false\nretrieval = false\nscoring = false\nfollow_ups = false\n",
    );
    // A key made with the command, in the cluster's PostgreSQL.
    let made = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args(["keys", "create", "--user", "ada", "--postgres-url"])
        .arg(support::test_postgres_url())
        .args(["--postgres-schema", &cluster.name])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let response = client()
        .post(a.url("/api/chat"))
        .bearer_auth(&key)
        .json(&json!({"message": "hi", "options": {"max_tokens": 20, "tokens_per_second": 100}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let whole = response.bytes().await.unwrap();
    let (events, _) = decode(&whole);
    let events_url = events[0].data["events_url"].as_str().unwrap().to_owned();
    assert!(events_url.contains("access_token="), "{events_url}");
    // B, which never saw the run start, opens it from the URL alone, as an
    // EventSource would (no header).
    let on_b = client().get(b.url(&events_url)).send().await.unwrap();
    assert_eq!(on_b.status(), 200);
    let on_b = on_b.bytes().await.unwrap();
    // Each node mints the run event's own access token (it carries its expiry, in
    // seconds); everything else is byte for byte the same.
    assert_eq!(
        without_tokens(events_part(&on_b)),
        without_tokens(events_part(&whole))
    );
    // A token for another run, or a forged one, opens nothing.
    let forged = events_url.replace("access_token=", "access_token=1");
    assert_eq!(
        client().get(b.url(&forged)).send().await.unwrap().status(),
        401
    );
}
