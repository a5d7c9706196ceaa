//! HTTP/2 with prior knowledge (h2c): rare on a streaming gateway, so the whole
//! connection is handed to hyper, with the bytes already read put back in front.

use std::future::poll_fn;
use std::pin::pin;

use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::Serve;
use crate::body::RequestBody;

/// Serves an HTTP/2 connection whose first bytes (`read`) are already read.
pub(crate) async fn serve<S: Serve>(
    stream: TcpStream,
    read: Vec<u8>,
    service: S,
    shutdown: CancellationToken,
) {
    let (reader, writer) = stream.into_split();
    let io = tokio::io::join(std::io::Cursor::new(read).chain(reader), writer);
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let mut service = service.clone();
        async move {
            poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(request.map(RequestBody::http2)).await
        }
    });
    let mut connection = pin!(
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
    );
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "an HTTP/2 connection ended with an error");
    }
}
