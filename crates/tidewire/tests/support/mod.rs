//! The test harness: the whole server on a random port with a fresh data directory,
//! and helpers to read its streams.
//!
//! With `TIDEWIRE_TEST_SHARED=1`, every server of [`spawn_app_with`] is two nodes
//! sharing a run log in Redis and a store in PostgreSQL (a key prefix and a schema
//! of their own): requests go to the first, and [`TestApp::attach`] (the resumes)
//! to the second, so the hub's suites run against the shared log too.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;
pub mod scripted;
pub mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tempfile::TempDir;
use tidewire::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<Result<(), tidewire::ServeError>>,
    /// In shared mode: the second node, which resumes runs, and the schema to drop.
    pub follower: Option<Box<TestApp>>,
    shared_schema: Option<String>,
}

/// Whether the suites run on two nodes sharing Redis and PostgreSQL.
pub fn shared_mode() -> bool {
    std::env::var("TIDEWIRE_TEST_SHARED").is_ok_and(|value| value == "1")
}

/// The PostgreSQL of the tests: the machine's, or `TIDEWIRE_TEST_POSTGRES_URL`.
pub fn test_postgres_url() -> String {
    std::env::var("TIDEWIRE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Points `config` at the machine's Redis and PostgreSQL under a fresh prefix and
/// schema; returns the schema.
pub fn share(config: &mut Config) -> String {
    let name = format!("tw_test_{:016x}", random_u64());
    let redis = std::env::var("TIDEWIRE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    config.redis_url = Some(redis.parse().unwrap());
    config.postgres_url = Some(test_postgres_url().parse().unwrap());
    config.cluster.redis_prefix = format!("{name}:");
    config.cluster.postgres_schema = Some(name.clone());
    config.cluster.lease = Duration::from_secs(1);
    name
}

/// A random number from the standard library's hasher seeds (no rand crate in
/// every crate that includes this harness).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(schema) = &self.shared_schema {
            let _ = std::process::Command::new("psql")
                .args([test_postgres_url().as_str(), "-q", "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Runs a setup script of the repository (`sdk/setup.sh`, `web/setup.sh`: they
/// install what a test drives) once per test process, one at a time; panics with
/// its output if it fails.
pub fn run_setup(script: &str) {
    static DONE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Result<(), String>>>,
    > = std::sync::OnceLock::new();
    let mut done = DONE.get_or_init(Default::default).lock().unwrap();
    let result = done
        .entry(script.to_owned())
        .or_insert_with(|| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(script);
            let output = std::process::Command::new("bash")
                .arg(&path)
                .output()
                .map_err(|error| format!("cannot run {script}: {error}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{script} failed:\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        })
        .clone();
    drop(done);
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// The server with the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The server with a configuration adjusted by `adjust`. The base is the engine's
/// configuration: the deterministic `synthetic` backend and generation alone, so
/// the engine's tests see exactly the events they assert; the pipeline's own tests
/// turn the stages back on (`config.pipeline = PipelineConfig::default()`).
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: data_dir.path().to_owned(),
        pipeline: tidewire::config::PipelineConfig::generation_only(),
        ..Config::default()
    };
    config.llm.default = "synthetic".into();
    adjust(&mut config);
    if shared_mode() && config.redis_url.is_none() {
        let schema = share(&mut config);
        let mut leader = spawn_on(config.clone(), data_dir).await;
        let follower = spawn_on(config, tempfile::tempdir().unwrap()).await;
        leader.follower = Some(Box::new(follower));
        leader.shared_schema = Some(schema);
        return leader;
    }
    spawn_on(config, data_dir).await
}

/// The server with a configuration adjusted by `adjust`, and its state (for what
/// has no route, such as the documents' search).
pub async fn spawn_app_and_state(
    adjust: impl FnOnce(&mut Config),
) -> (TestApp, tidewire::AppState) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: data_dir.path().to_owned(),
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = tidewire::open(config).await.unwrap();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(tidewire::serve(listener, state.clone(), async {
        let _ = rx.await;
    }));
    let app = TestApp {
        addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        data_dir,
        shutdown: Some(tx),
        handle,
        follower: None,
        shared_schema: None,
    };
    (app, state)
}

/// A one-page PDF (hand-written, offsets computed) showing `lines` in Helvetica.
pub fn pdf_with_text(lines: &[&str]) -> Vec<u8> {
    let mut content = String::from("BT /F1 12 Tf 14 TL 72 720 Td");
    for line in lines {
        let escaped = line
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        content.push_str(&format!(" ({escaped}) Tj T*"));
    }
    content.push_str(" ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
         /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>"
            .to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

/// The server on an existing data directory.
pub async fn spawn_on(mut config: Config, data_dir: TempDir) -> TestApp {
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data_dir.path().to_owned();
    let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(tidewire::run(listener, config, async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    // Ready once it answers (the store is open); a server that failed to start
    // is returned as it is, for the test to look at its error.
    let health = format!("http://{addr}/healthz");
    for _ in 0..500 {
        if handle.is_finished() || client.get(&health).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    TestApp {
        addr,
        base: format!("http://{addr}"),
        client,
        data_dir,
        shutdown: Some(tx),
        handle,
        follower: None,
        shared_schema: None,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `POST /api/chat` with a JSON body.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/chat"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A whole streamed answer.
    pub async fn chat_stream(&self, body: Value) -> Stream {
        let response = self.chat(body).await;
        assert_eq!(response.status(), 200);
        read_stream(response).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn post_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.post(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// The node that resumes runs: the second one in shared mode, else this one.
    pub fn resumer(&self) -> &TestApp {
        self.follower.as_deref().unwrap_or(self)
    }

    /// `GET /api/runs/{id}/events` after `last_event_id` (on the second node in
    /// shared mode).
    pub async fn attach(&self, run_id: &str, last_event_id: Option<usize>) -> reqwest::Response {
        let node = self.resumer();
        let mut request = self
            .client
            .get(node.url(&format!("/api/runs/{run_id}/events")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        request.send().await.unwrap()
    }

    /// The stored messages of a conversation.
    pub async fn messages(&self, conversation_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(&format!("/api/conversations/{conversation_id}/messages"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["messages"].as_array().unwrap().clone()
    }

    /// Polls `check` until it returns `Some`, for at most `limit`.
    pub async fn eventually<T, F, Fut>(&self, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks the server to shut down and waits for it.
    pub async fn shutdown(mut self) -> (Result<(), tidewire::ServeError>, TempDir) {
        if let Some(follower) = self.follower.take() {
            let _ = Box::pin(follower.shutdown()).await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let handle = std::mem::replace(&mut self.handle, tokio::spawn(async { Ok(()) }));
        let result = tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .unwrap()
            .unwrap();
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap());
        (result, data_dir)
    }
}

/// One decoded event: (id, name, JSON payload).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub name: String,
    pub data: Value,
}

impl Event {
    fn from_wire(event: tidewire_sse::EventRef<'_>) -> Self {
        Self {
            id: event.id.to_owned(),
            name: event.event.to_owned(),
            data: serde_json::from_str(event.data).unwrap(),
        }
    }
}

/// A stream read to its end: raw bytes and decoded events.
#[derive(Debug, Clone)]
pub struct Stream {
    pub bytes: Vec<u8>,
    pub events: Vec<Event>,
    pub retry: Option<u64>,
}

impl Stream {
    pub fn run_id(&self) -> String {
        self.events[0].data["run_id"].as_str().unwrap().to_owned()
    }

    pub fn conversation_id(&self) -> String {
        self.events[0].data["conversation_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter(|e| e.name == "token")
            .map(|e| e.data["token"].as_str().unwrap())
            .collect()
    }

    pub fn last(&self) -> &Event {
        self.events.last().unwrap()
    }

    /// The bytes from the first `id:` line on: the events, without the prelude.
    pub fn event_bytes(&self) -> &[u8] {
        let at = find(&self.bytes, b"id: ").unwrap_or(self.bytes.len());
        &self.bytes[at..]
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn decode(bytes: &[u8]) -> (Vec<Event>, Option<u64>) {
    let mut decoder = tidewire_sse::Decoder::new();
    decoder.push(bytes);
    let mut events = Vec::new();
    while let Some(event) = decoder.next_event() {
        events.push(Event::from_wire(event.unwrap()));
    }
    (events, decoder.retry_millis())
}

/// Reads a streaming response to its end (bounded in time).
pub async fn read_stream(response: reqwest::Response) -> Stream {
    let bytes = read_all(&mut response.bytes_stream()).await;
    let (events, retry) = decode(&bytes);
    Stream {
        bytes,
        events,
        retry,
    }
}

/// Every byte left in a body (bounded in time).
async fn read_all(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
) -> Vec<u8> {
    let read = async {
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        bytes
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("stream ended in time")
}

/// Reads events from a streaming response until `count` events arrived.
pub async fn read_events(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    count: usize,
) -> Vec<Event> {
    let mut decoder = tidewire_sse::Decoder::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("event in time");
        let Some(chunk) = chunk else { break };
        decoder.push(&chunk.unwrap());
        while let Some(event) = decoder.next_event() {
            events.push(Event::from_wire(event.unwrap()));
        }
    }
    events
}

/// Reads events from a streaming response until one satisfies `stop` (it is the
/// last one returned).
pub async fn read_until(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    stop: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut decoder = tidewire_sse::Decoder::new();
    let mut events = Vec::new();
    loop {
        while let Some(event) = decoder.next_event() {
            let event = Event::from_wire(event.unwrap());
            let done = stop(&event);
            events.push(event);
            if done {
                return events;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("event in time")
            .expect("the stream went on");
        decoder.push(&chunk.unwrap());
    }
}

/// Reads a streaming response's body to its end and decodes its events.
pub async fn read_stream_body(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
) -> Vec<Event> {
    decode(&read_all(body).await).0
}
