//! The smallest writer of a paced stream (`tidewire bench raw-peer`): the chat
//! route's contract on raw sockets, with pre-encoded bytes and one write per token
//! on the same schedule as tidewire's (token k due at start + k / rate). No HTTP
//! library, no log, no store: what the `paced` and `fanout` workloads measure
//! against it is the machine's own limit, the ceiling any server's figure is a
//! fraction of.
//!
//! For the fan-out, each stream starts with a `run` event whose `events_url`
//! (`GET /api/runs/{id}/events`) follows the same run: every token written so far
//! at once, then each as the run writes it, woken through a watch channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// The largest request it reads.
const MAX_REQUEST: usize = 64 * 1024;

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
const TOKEN: &[u8] = b"event: token\ndata: {\"token\":\"word \"}\n\n";
const DONE: &[u8] = b"event: done\ndata: {\"finish_reason\":\"length\"}\n\n";
const HEALTHY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The runs being written: how many tokens each has written, and whether it is done.
type Runs = Mutex<HashMap<u64, watch::Receiver<(u64, bool)>>>;

/// Serves `POST /api/chat` (`options.max_tokens` tokens at
/// `options.tokens_per_second`, then `done`) and `GET /healthz` on `addr`, one
/// request per connection, until the process is stopped.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    // The server's backlog: a burst of streams opening at once fits in both.
    let listener = tidewire::listen(addr)?;
    eprintln!("raw peer listening on http://{}", listener.local_addr()?);
    let runs: Arc<Runs> = Arc::default();
    let ids = Arc::new(AtomicU64::new(0));
    loop {
        let (socket, _) = listener.accept().await?;
        let (runs, ids) = (Arc::clone(&runs), Arc::clone(&ids));
        tokio::spawn(async move {
            // A client that leaves mid-stream ends its stream; nothing to report.
            let _ = serve_one(socket, &runs, &ids).await;
        });
    }
}

async fn serve_one(mut socket: TcpStream, runs: &Runs, ids: &AtomicU64) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let Some((head, body)) = read_request(&mut socket).await? else {
        return socket.write_all(BAD_REQUEST).await;
    };
    if head.starts_with("GET /healthz") {
        return socket.write_all(HEALTHY).await;
    }
    if let Some(path) = head.strip_prefix("GET /api/runs/") {
        let run = path
            .split_once("/events")
            .and_then(|(id, _)| id.parse::<u64>().ok())
            .and_then(|id| runs.lock().ok()?.get(&id).cloned());
        return match run {
            Some(run) => follow(socket, run).await,
            None => socket.write_all(NOT_FOUND).await,
        };
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return socket.write_all(BAD_REQUEST).await;
    };
    let tokens = request["options"]["max_tokens"].as_u64().unwrap_or(16);
    let rate = request["options"]["tokens_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let interval = (rate > 0.0)
        .then(|| Duration::try_from_secs_f64(1.0 / rate).ok())
        .flatten();
    let id = ids.fetch_add(1, Ordering::Relaxed);
    let (written, run) = watch::channel((0, false));
    if let Ok(mut runs) = runs.lock() {
        runs.insert(id, run);
    }
    let run_event = format!(
        "event: run\ndata: {{\"run_id\":\"{id}\",\"events_url\":\"/api/runs/{id}/events\"}}\n\n"
    );
    let result = async {
        socket
            .write_all(&[HEAD, run_event.as_bytes()].concat())
            .await?;
        let start = Instant::now();
        for k in 0..tokens {
            if let Some(interval) = interval {
                tokio::time::sleep_until(start + interval.saturating_mul(k as u32)).await;
            }
            socket.write_all(TOKEN).await?;
            written.send_replace((k + 1, false));
        }
        written.send_replace((tokens, true));
        socket.write_all(DONE).await?;
        socket.shutdown().await
    }
    .await;
    // If the stream broke, its followers see the sender dropped and close.
    if let Ok(mut runs) = runs.lock() {
        runs.remove(&id);
    }
    result
}

/// A subscriber of a run: the tokens written so far in one write, then each one
/// as it is written, then `done`.
async fn follow(
    mut socket: TcpStream,
    mut run: watch::Receiver<(u64, bool)>,
) -> std::io::Result<()> {
    socket.write_all(HEAD).await?;
    let mut sent = 0;
    loop {
        let (written, done) = *run.borrow_and_update();
        // Live, one token at a time, goes out as the constant itself; only a
        // subscriber that is behind gets them copied into one write.
        match written.saturating_sub(sent) {
            0 => {}
            1 => socket.write_all(TOKEN).await?,
            behind => {
                let count = usize::try_from(behind).unwrap_or(usize::MAX);
                socket.write_all(&TOKEN.repeat(count)).await?;
            }
        }
        sent = written;
        if done {
            socket.write_all(DONE).await?;
            return socket.shutdown().await;
        }
        if run.changed().await.is_err() {
            return socket.shutdown().await;
        }
    }
}

/// The request's head (as text) and its `content-length` body; `None` if it is
/// not one.
async fn read_request(socket: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let body_start = end + 4;
            if length > MAX_REQUEST {
                return Ok(None);
            }
            while buffer.len() < body_start + length {
                if socket.read_buf(&mut buffer).await? == 0 {
                    return Ok(None);
                }
            }
            let body = buffer[body_start..body_start + length].to_vec();
            return Ok(Some((head, body)));
        }
        if buffer.len() > MAX_REQUEST || socket.read_buf(&mut buffer).await? == 0 {
            return Ok(None);
        }
    }
}
