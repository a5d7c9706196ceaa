//! The smallest writer of a paced stream (`tidewire bench raw-peer`): the chat
//! route's contract on raw sockets, with pre-encoded bytes and one write per token
//! on the same schedule as tidewire's (token k due at start + k / rate). No HTTP
//! library, no log, no store: what the `paced` workload measures against it is
//! the machine's own limit, the ceiling any server's figure is a fraction of.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The largest request it reads.
const MAX_REQUEST: usize = 64 * 1024;

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
const TOKEN: &[u8] = b"event: token\ndata: {\"token\":\"word \"}\n\n";
const DONE: &[u8] = b"event: done\ndata: {\"finish_reason\":\"length\"}\n\n";
const HEALTHY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Serves `POST /api/chat` (`options.max_tokens` tokens at
/// `options.tokens_per_second`, then `done`) and `GET /healthz` on `addr`, one
/// request per connection, until the process is stopped.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("raw peer listening on http://{}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A client that leaves mid-stream ends its stream; nothing to report.
            let _ = serve_one(socket).await;
        });
    }
}

async fn serve_one(mut socket: TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let Some((head, body)) = read_request(&mut socket).await? else {
        return socket.write_all(BAD_REQUEST).await;
    };
    if head.starts_with("GET /healthz") {
        return socket.write_all(HEALTHY).await;
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
    socket.write_all(HEAD).await?;
    let start = Instant::now();
    for k in 0..tokens {
        if let Some(interval) = interval {
            tokio::time::sleep_until(start + interval.saturating_mul(k as u32)).await;
        }
        socket.write_all(TOKEN).await?;
    }
    socket.write_all(DONE).await?;
    socket.shutdown().await
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
