//! The body of a request as the service sees it: data the connection reads from
//! the socket as the service asks for it (one chunk in flight), or hyper's body on
//! an HTTP/2 connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client closed the connection before the body's end.
    #[error("the request body ended early: the client closed the connection")]
    Incomplete,
    /// The body's framing is broken.
    #[error("malformed request body: {0}")]
    Malformed(&'static str),
    /// The response was sent before the body was read; the rest is not read.
    #[error("the request body was not read before the response")]
    NotRead,
    /// The socket failed while the body was read.
    #[error("reading the request body failed: {0}")]
    Io(#[from] std::io::Error),
    /// An HTTP/2 body failed.
    #[error("reading the request body failed: {0}")]
    Http2(#[from] hyper::Error),
}

/// A request's body.
#[derive(Debug)]
pub struct RequestBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Empty,
    Channel {
        chunks: mpsc::Receiver<Result<Bytes, BodyError>>,
        /// Bytes left, when the request said (`Content-Length`).
        left: Option<u64>,
    },
    Http2(hyper::body::Incoming),
}

impl RequestBody {
    /// No body.
    pub(crate) fn empty() -> Self {
        Self {
            inner: Inner::Empty,
        }
    }

    /// A body that the connection feeds through `Feeder`.
    pub(crate) fn channel(length: Option<u64>) -> (Self, Feeder) {
        let (sender, chunks) = mpsc::channel(1);
        let body = Self {
            inner: Inner::Channel {
                chunks,
                left: length,
            },
        };
        (body, Feeder { sender })
    }

    /// The body of an HTTP/2 request.
    pub(crate) fn http2(incoming: hyper::body::Incoming) -> Self {
        Self {
            inner: Inner::Http2(incoming),
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Channel { chunks, left } => match chunks.poll_recv(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    if let Some(left) = left {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Poll::Ready(Some(Err(error))) => {
                    this.inner = Inner::Empty;
                    Poll::Ready(Some(Err(error)))
                }
                Poll::Ready(None) => {
                    this.inner = Inner::Empty;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
            Inner::Http2(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(BodyError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Channel { .. } => false,
            Inner::Http2(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Channel {
                left: Some(left), ..
            } => SizeHint::with_exact(*left),
            Inner::Channel { left: None, .. } => SizeHint::default(),
            Inner::Http2(incoming) => incoming.size_hint(),
        }
    }
}

/// The connection's end of a request body.
#[derive(Debug)]
pub(crate) struct Feeder {
    sender: mpsc::Sender<Result<Bytes, BodyError>>,
}

impl Feeder {
    /// Room for one chunk, once the service has taken the previous one; `None` if
    /// the service dropped the body.
    pub(crate) async fn reserve(&self) -> Option<mpsc::Permit<'_, Result<Bytes, BodyError>>> {
        self.sender.reserve().await.ok()
    }

    /// Ends the body with `error`, if the service still reads it and has room.
    pub(crate) fn fail(self, error: BodyError) {
        let _ = self.sender.try_send(Err(error));
    }
}
