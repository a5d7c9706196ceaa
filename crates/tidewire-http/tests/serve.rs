//! The server over real sockets: a small service on port 0, spoken to with raw
//! bytes, so every framing rule is seen as a client sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tidewire_http::{RequestBody, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type Body = BoxBody<Bytes, Infallible>;

/// `/echo` answers with the request body; `/stream` with `tick N` frames every
/// 20 ms (N = the query, forever without one), and marks `dropped` when its body
/// goes; anything else with `hello`.
#[derive(Clone, Default)]
struct TestService {
    dropped: Arc<AtomicBool>,
}

/// Two frames, after which it says it has ended (`is_end_stream`); polled again,
/// it would send a third that no client may see.
struct KnownEnd {
    sent: u8,
}

impl http_body::Body for KnownEnd {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.sent += 1;
        let part = Bytes::from(format!("part {}\n", self.sent));
        Poll::Ready(Some(Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= 2
    }
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl tower_service::Service<Request<RequestBody>> for TestService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let dropped = Arc::clone(&self.dropped);
        Box::pin(async move {
            let body: Body = match request.uri().path() {
                "/echo" => match request.into_body().collect().await {
                    Ok(body) => Full::new(body.to_bytes()).boxed(),
                    Err(error) => {
                        return Ok(Response::builder()
                            .status(400)
                            .body(Full::new(Bytes::from(error.to_string())).boxed())
                            .unwrap());
                    }
                },
                "/stream" => {
                    let limit: Option<u32> = request.uri().query().and_then(|q| q.parse().ok());
                    let flag = DropFlag(dropped);
                    let ticks =
                        futures_util::stream::unfold((0u32, flag), move |(n, flag)| async move {
                            if limit.is_some_and(|limit| n >= limit) {
                                return None;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let frame = Frame::data(Bytes::from(format!("tick {n}\n")));
                            Some((Ok::<_, Infallible>(frame), (n + 1, flag)))
                        });
                    BodyExt::boxed(StreamBody::new(ticks))
                }
                "/known-end" => KnownEnd { sent: 0 }.boxed(),
                _ => Full::new(Bytes::from_static(b"hello")).boxed(),
            };
            Ok(Response::builder()
                .header("content-type", "text/plain")
                .body(body)
                .unwrap())
        })
    }
}

struct Server {
    addr: std::net::SocketAddr,
    service: TestService,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn spawn_server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TestService::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, service.clone(), async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        service,
        stop: Some(stop),
        done,
    }
}

/// Writes `wire`, then reads until the peer closes (or 5 s pass).
async fn exchange(addr: std::net::SocketAddr, wire: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(wire).await.unwrap();
    read_to_close(&mut socket).await
}

async fn read_to_close(socket: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until `out` contains `needle`.
async fn read_until(socket: &mut TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&out).contains(needle) {
            let read = socket.read(&mut chunk).await.unwrap();
            assert!(
                read > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&chunk[..read]);
        }
    })
    .await
    .expect("timed out");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_each_get_their_response() {
    let server = spawn_server().await;
    let wire = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
                POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nping\
                GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let out = exchange(server.addr, wire.as_bytes()).await;
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{out}");
    let bodies: Vec<&str> = out
        .split("\r\n\r\n")
        .skip(1)
        .map(|rest| &rest[..4])
        .collect();
    assert_eq!(bodies[..2], ["hell", "ping"], "{out}");
    assert!(out.contains("content-length: 5\r\n") && out.contains("content-length: 4\r\n"));
    assert!(out.contains("date: "), "{out}");
    assert!(out.ends_with("connection: close\r\n\r\nhello"), "{out}");
}

#[tokio::test]
async fn a_chunked_request_body_reaches_the_service_whole() {
    let server = spawn_server().await;
    let wire = "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n";
    let out = exchange(server.addr, wire.as_bytes()).await;
    assert!(out.ends_with("\r\n\r\nhello, world"), "{out}");
}

#[tokio::test]
async fn a_large_body_arrives_in_order() {
    let server = spawn_server().await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (mut reader, mut writer) = socket.split();
    let write = async {
        writer.write_all(head.as_bytes()).await.unwrap();
        writer.write_all(&body).await.unwrap();
    };
    let mut out = Vec::new();
    let read = reader.read_to_end(&mut out);
    let ((), read) = tokio::join!(write, read);
    read.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&out[split..], &body[..]);
}

#[tokio::test]
async fn expect_continue_gets_100_before_the_body_is_sent() {
    let server = spawn_server().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let interim = read_until(&mut socket, "\r\n\r\n").await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    socket.write_all(b"abc").await.unwrap();
    let out = read_to_close(&mut socket).await;
    assert!(
        out.starts_with("HTTP/1.1 200 OK") && out.ends_with("abc"),
        "{out}"
    );
}

#[tokio::test]
async fn head_gets_the_length_without_a_body() {
    let server = spawn_server().await;
    let out = exchange(server.addr, b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(out.contains("content-length: 5\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "{out}");
}

#[tokio::test]
async fn a_stream_is_chunked_and_ends_with_the_last_chunk() {
    let server = spawn_server().await;
    let out = exchange(
        server.addr,
        b"GET /stream?3 HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
    assert!(
        out.ends_with("\r\n\r\n7\r\ntick 0\n\r\n7\r\ntick 1\n\r\n7\r\ntick 2\n\r\n0\r\n\r\n"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_body_that_says_it_ended_is_not_polled_again_and_the_connection_goes_on() {
    let server = spawn_server().await;
    let out = exchange(
        server.addr,
        b"GET /known-end HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.contains("\r\n\r\n7\r\npart 1\n\r\n7\r\npart 2\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{out:?}"
    );
    assert!(!out.contains("part 3"), "{out:?}");
    assert!(out.ends_with("hello"), "{out:?}");
}

#[tokio::test]
async fn an_http_1_0_client_gets_a_stream_ended_by_close() {
    let server = spawn_server().await;
    let out = exchange(server.addr, b"GET /stream?2 HTTP/1.0\r\n\r\n").await;
    assert!(!out.contains("transfer-encoding"), "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\ntick 0\ntick 1\n"), "{out:?}");
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_drops_the_body() {
    let server = spawn_server().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"GET /stream HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut socket, "tick 1").await;
    assert!(!server.service.dropped.load(Ordering::SeqCst));
    drop(socket);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !server.service.dropped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the stream's body was never dropped");
}

#[tokio::test]
async fn malformed_requests_get_a_json_error_and_a_close() {
    let server = spawn_server().await;
    for (wire, status) in [
        ("GARBAGE\r\n\r\n".to_owned(), "400 Bad Request"),
        (
            "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_owned(),
            "400 Bad Request",
        ),
        (
            format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000)),
            "431 Request Header Fields Too Large",
        ),
    ] {
        let out = exchange(server.addr, wire.as_bytes()).await;
        assert!(out.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{out}");
        assert!(out.contains("content-type: application/json"), "{out}");
        assert!(out.contains(r#"{"error":{"code":"#), "{out}");
    }
}

#[tokio::test]
async fn a_broken_chunked_body_is_an_error_for_the_service() {
    let server = spawn_server().await;
    let out = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request"), "{out}");
    assert!(out.contains("malformed request body"), "{out}");
    assert!(out.contains("connection: close"), "{out}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_waits_for_streams() {
    let mut server = spawn_server().await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"GET /stream?10 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut busy, "tick 0").await;
    server.stop.take().unwrap().send(()).unwrap();
    // The idle connection closes with no response.
    assert_eq!(read_to_close(&mut idle).await, "");
    // The stream runs to its end, closes, and only then does the server return.
    let rest = read_to_close(&mut busy).await;
    assert!(rest.ends_with("tick 9\n\r\n0\r\n\r\n"), "{rest:?}");
    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn a_burst_of_connections_beyond_the_default_backlog_is_not_dropped() {
    // Nothing accepts: every connection waits in the listener's backlog. With the
    // 128 of `TcpListener::bind`, the kernel drops the handshakes past it and their
    // connects hang in retries (129 of the 1,500 got through).
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|cap| cap.trim().parse::<u32>().ok());
    if cap.is_some_and(|cap| cap < 1500) {
        eprintln!("skipped: the kernel caps every backlog at net.core.somaxconn = {cap:?}");
        return;
    }
    let listener = tidewire_http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let connects = (0..1500)
        .map(|_| tokio::time::timeout(Duration::from_millis(900), TcpStream::connect(addr)));
    let connected = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .filter(|outcome| matches!(outcome, Ok(Ok(_))))
        .count();
    assert_eq!(connected, 1500);
    drop(listener);
}
