//! A lean HTTP/1.1 server for services whose responses are long-lived streams.
//!
//! A chat gateway spends its life holding thousands of Server-Sent Events
//! streams that are mostly idle, so what an idle connection costs is what counts.
//! hyper keeps 24 KiB of buffers with every connection (an 8 KiB write buffer
//! from the start, and a read buffer it grows to 16 KiB while the request's head
//! still holds the first one); that was two thirds of the memory of an idle
//! stream. This server holds no buffer while a response waits for its next
//! frame: a request's bytes are read into a buffer freed once they are parsed
//! (with httparse, hyper's parser), and each batch of response frames is freed
//! once written. HTTP/2 with prior knowledge is handed to hyper.
//!
//! It serves any tower [`Service`](tower_service::Service) of
//! `Request<RequestBody>`, such as an axum `Router`.

mod body;
mod conn;
mod decode;
mod h2;
mod head;
mod response;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use body::{BodyError, RequestBody};

/// The error type services and bodies may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`serve`] serves: a tower service of requests, cloned for each
/// connection (implemented for every such service).
pub trait Serve: Clone + Send + 'static {
    /// The response body.
    type Body: http_body::Body<Data: Send, Error: Into<BoxError> + Send> + Send + 'static;
    /// The service's error.
    type Error: Into<BoxError> + Send;
    /// The response future.
    type Future: Future<Output = Result<Response<Self::Body>, Self::Error>> + Send + 'static;

    /// Whether the service can take a request.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;

    /// Handles a request.
    fn call(&mut self, request: Request<RequestBody>) -> Self::Future;
}

impl<S, B> Serve for S
where
    S: tower_service::Service<Request<RequestBody>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
    B: http_body::Body<Data: Send, Error: Into<BoxError> + Send> + Send + 'static,
{
    type Body = B;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        tower_service::Service::poll_ready(self, cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> S::Future {
        tower_service::Service::call(self, request)
    }
}

/// Connections that may wait to be accepted: a chat service sees thousands of
/// streams open at once (a deploy, a reconnecting fleet). The kernel caps it at
/// `net.core.somaxconn`.
pub const BACKLOG: u32 = 4096;

/// Listens on `addr` with room for [`BACKLOG`] connections waiting to be accepted.
///
/// `TcpListener::bind` leaves room for 128 (of 1,500 connections opened at once
/// and never accepted, 129 got through): 5,000 streams opening at once overflowed
/// it, the kernel dropped the handshakes it had no room for, and a client now and
/// then saw its connection closed without an answer.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server may listen while the old
    // one's connections linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `service` on `listener` until `shutdown` resolves; then stops
/// accepting, closes idle connections, and returns once every response in
/// flight has been written.
pub async fn serve<S: Serve>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) if is_per_connection(&error) => continue,
            Err(error) => {
                // Out of descriptors, most likely: wait for some to close.
                tracing::error!(%error, "accepting a connection failed; retrying in a second");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        // Events are small writes that must leave at once: no Nagle delay.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        connections.spawn(conn::serve_connection(
            stream,
            service.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Accept errors that concern one connection only, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
