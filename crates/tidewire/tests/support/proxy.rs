//! Test doubles in front of the real server: a TCP proxy that cuts or stalls
//! connections, and an HTTP front that answers with chosen errors before passing
//! requests through.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one connection's server-to-client bytes.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Pass everything.
    Pass,
    /// Pass this many bytes, then close the connection.
    CutAfter(usize),
    /// Pass this many bytes, then pass nothing more but keep the connection open.
    StallAfter(usize),
}

/// A TCP proxy to `upstream`; connection number `n` (from 0) behaves as `plan(n)`.
pub struct Proxy {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub async fn start_proxy(
    upstream: SocketAddr,
    plan: impl Fn(usize) -> Behaviour + Send + Sync + 'static,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let plan = Arc::new(plan);
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let behaviour = plan(n);
            tokio::spawn(relay(client, upstream, behaviour));
        }
    });
    Proxy { addr, connections }
}

async fn relay(client: TcpStream, upstream: SocketAddr, behaviour: Behaviour) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream_task = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let budget = match behaviour {
        Behaviour::Pass => usize::MAX,
        Behaviour::CutAfter(n) | Behaviour::StallAfter(n) => n,
    };
    let mut sent = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while sent < budget {
        let Ok(read) = server_read.read(&mut buf).await else {
            break;
        };
        if read == 0 {
            break;
        }
        let allowed = read.min(budget - sent);
        if client_write.write_all(&buf[..allowed]).await.is_err() {
            break;
        }
        sent += allowed;
    }
    match behaviour {
        Behaviour::StallAfter(_) if sent >= budget => {
            // Hold both connections open, silent, until the client gives up on them.
            let _keep = (client_write, server_read);
            std::future::pending::<()>().await;
        }
        _ => {
            upstream_task.abort();
        }
    }
}

/// An HTTP front: request number `n` (from 0) gets `plan(n)` as an error status, or,
/// with `None`, is passed to `upstream` and its answer streamed back.
pub struct Front {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
}

impl Front {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

type Plan = Arc<dyn Fn(usize) -> Option<(StatusCode, Option<&'static str>)> + Send + Sync>;

#[derive(Clone)]
struct FrontState {
    upstream: String,
    requests: Arc<AtomicUsize>,
    plan: Plan,
    http: reqwest::Client,
}

/// `plan(n)` gives `(status, Retry-After)` for an error, or `None` to pass through.
pub async fn start_front(
    upstream: &str,
    plan: impl Fn(usize) -> Option<(StatusCode, Option<&'static str>)> + Send + Sync + 'static,
) -> Front {
    let requests = Arc::new(AtomicUsize::new(0));
    let state = FrontState {
        upstream: upstream.to_owned(),
        requests: Arc::clone(&requests),
        plan: Arc::new(plan),
        http: reqwest::Client::new(),
    };
    let app = axum::Router::new().fallback(front).with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Front { addr, requests }
}

async fn front(State(state): State<FrontState>, request: Request) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    if let Some((status, retry_after)) = (state.plan)(n) {
        let body =
            format!("{{\"error\":{{\"code\":\"injected\",\"message\":\"injected {status}\"}}}}");
        let mut response = (status, [("content-type", "application/json")], body).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.parse().unwrap());
        }
        return response;
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let url = format!(
        "{}{}",
        state.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut forwarded = state.http.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            forwarded = forwarded.header(name, value);
        }
    }
    let upstream = forwarded.send().await.unwrap();
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response = response.header(name, value);
        }
    }
    let stream = upstream
        .bytes_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    response.body(Body::from_stream(stream)).unwrap()
}
