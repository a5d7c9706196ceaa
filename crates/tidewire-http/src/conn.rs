//! One HTTP/1 connection: read a request head, call the service while feeding it
//! the request body, write the response as its frames come, and again while the
//! connection is kept alive.
//!
//! Memory is the point: while a response waits for its next frame, the
//! connection holds no buffer. Bytes are read into a `Vec` only as long as they
//! are unparsed, and each write's bytes are freed once written. Nothing here keeps
//! a large array across an `.await`: the connection's future is allocated with
//! its task for as long as the connection lives.

use std::future::poll_fn;
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::body::{BodyError, Feeder, RequestBody};
use crate::decode::{Decoded, Decoder};
use crate::head::{self, Head, HeadError};
use crate::response::{self, Framing};
use crate::{BoxError, Serve};

/// The largest request head read.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read from the socket at a time (on the stack, in a synchronous call).
const READ_CHUNK: usize = 8 * 1024;
/// Ready response frames are gathered into one write up to this size.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a closing connection reads what the client still sends, so that it
/// reads the response rather than a reset.
const LINGER: Duration = Duration::from_secs(1);
/// The first bytes of every HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What came next on the connection.
#[allow(clippy::large_enum_variant, reason = "lives only until it is matched")]
enum Next {
    Request(Head),
    Http2,
    Refuse(StatusCode, &'static str),
    Closed,
}

/// A connection's socket and what was read from it and not yet used.
struct Connection {
    stream: TcpStream,
    /// Unparsed bytes; empty, without an allocation, between requests.
    buf: Vec<u8>,
}

/// Serves requests on `stream` until the client closes it, an error, or
/// `shutdown` (an idle connection closes at once; a busy one after its response).
pub(crate) async fn serve_connection<S: Serve>(
    stream: TcpStream,
    mut service: S,
    shutdown: CancellationToken,
) {
    let mut conn = Connection {
        stream,
        buf: Vec::new(),
    };
    loop {
        let next = match conn.next_head(&shutdown).await {
            Ok(next) => next,
            Err(error) => {
                tracing::debug!(%error, "reading a request failed");
                return;
            }
        };
        match next {
            Next::Request(head) => match conn.exchange(&mut service, head).await {
                Ok(true) if !shutdown.is_cancelled() => {}
                Ok(_) => return,
                Err(error) => {
                    tracing::debug!(%error, "the connection failed");
                    return;
                }
            },
            Next::Http2 => {
                // Boxed: hyper's connection would otherwise size every connection's task.
                Box::pin(crate::h2::serve(conn.stream, conn.buf, service, shutdown)).await;
                return;
            }
            Next::Refuse(status, message) => {
                tracing::debug!(%status, message, "refused a request");
                if conn
                    .stream
                    .write_all(&response::refusal(status, message))
                    .await
                    .is_ok()
                {
                    conn.linger().await;
                }
                return;
            }
            Next::Closed => return,
        }
    }
}

impl Connection {
    /// Reads until a whole request head is in the buffer.
    async fn next_head(&mut self, shutdown: &CancellationToken) -> io::Result<Next> {
        loop {
            if !self.buf.is_empty() {
                let seen = self.buf.len().min(H2_PREFACE.len());
                if self.buf[..seen] == H2_PREFACE[..seen] {
                    if seen == H2_PREFACE.len() {
                        return Ok(Next::Http2);
                    }
                } else {
                    match head::parse(&self.buf) {
                        Ok(Some((head, length))) if length <= MAX_HEAD => {
                            self.buf.drain(..length);
                            self.free_if_empty();
                            return Ok(Next::Request(head));
                        }
                        Ok(Some(_)) => {
                            return Ok(Next::Refuse(
                                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                "the request head is too large",
                            ));
                        }
                        Ok(None) if self.buf.len() > MAX_HEAD => {
                            return Ok(Next::Refuse(
                                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                "the request head is too large",
                            ));
                        }
                        Ok(None) => {}
                        Err(HeadError::TooManyHeaders) => {
                            return Ok(Next::Refuse(
                                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                "too many header fields",
                            ));
                        }
                        Err(HeadError::Malformed(why)) => {
                            return Ok(Next::Refuse(StatusCode::BAD_REQUEST, why));
                        }
                    }
                }
            }
            // Between requests the connection is idle: a shutdown closes it.
            let read = if self.buf.is_empty() {
                tokio::select! {
                    read = self.read_more() => read?,
                    () = shutdown.cancelled() => return Ok(Next::Closed),
                }
            } else {
                self.read_more().await?
            };
            if read == 0 {
                return Ok(Next::Closed);
            }
        }
    }

    /// One request and its response; whether the connection stays open.
    async fn exchange<S: Serve>(&mut self, service: &mut S, head: Head) -> io::Result<bool> {
        let Head {
            parts,
            body,
            keep_alive,
            expect_continue,
        } = head;
        let method = parts.method.clone();
        let version = parts.version;
        let (request_body, mut feed) = match body {
            None => (RequestBody::empty(), None),
            Some(decoder) => {
                let length = match decoder {
                    Decoder::Length(length) => Some(length),
                    Decoder::Chunked(_) => None,
                };
                let (body, feeder) = RequestBody::channel(length);
                (body, Some((decoder, feeder)))
            }
        };
        if expect_continue && feed.is_some() {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        let request = Request::from_parts(parts, request_body);
        let response = self.respond(service, request, &mut feed).await?;
        // A body the service did not read to its end is not read further: the
        // connection closes after the response.
        let unread = match feed.take() {
            Some((_, feeder)) => {
                feeder.fail(BodyError::NotRead);
                true
            }
            None => false,
        };
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                let error: BoxError = error.into();
                tracing::warn!(%error, "the service failed");
                let refusal = response::refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the server could not handle the request",
                );
                self.stream.write_all(&refusal).await?;
                return Ok(false);
            }
        };
        let kept = self
            .write_response(response, &method, version, keep_alive && !unread)
            .await?;
        if unread {
            self.linger().await;
            return Ok(false);
        }
        self.free_if_empty();
        Ok(kept)
    }

    /// Calls the service, feeding it the request body while it runs; `feed` is
    /// left `Some` if the body was not read to its end.
    async fn respond<S: Serve>(
        &mut self,
        service: &mut S,
        request: Request<RequestBody>,
        feed: &mut Option<(Decoder, Feeder)>,
    ) -> io::Result<Result<Response<S::Body>, S::Error>> {
        if let Err(error) = poll_fn(|cx| service.poll_ready(cx)).await {
            return Ok(Err(error));
        }
        let mut future = pin!(service.call(request));
        loop {
            let Some((decoder, feeder)) = feed.as_mut() else {
                return Ok(future.await);
            };
            let fed = tokio::select! {
                biased;
                response = &mut future => return Ok(response),
                fed = self.feed(decoder, feeder) => fed,
            };
            match fed {
                Fed::Chunk => {}
                Fed::End => *feed = None,
                // The service dropped the body, or the body broke (the service got
                // the error): the rest is not read.
                Fed::Dropped | Fed::Failed => return Ok(future.await),
            }
        }
    }

    /// Hands the service the next piece of the body, once it has room for it.
    async fn feed(&mut self, decoder: &mut Decoder, feeder: &Feeder) -> Fed {
        let Some(permit) = feeder.reserve().await else {
            return Fed::Dropped;
        };
        loop {
            match decoder.decode(&mut self.buf) {
                Ok(Decoded::Data(data)) => {
                    permit.send(Ok(data));
                    return Fed::Chunk;
                }
                Ok(Decoded::End) => return Fed::End,
                Ok(Decoded::NeedMore) => match self.read_more().await {
                    Ok(0) => {
                        permit.send(Err(BodyError::Incomplete));
                        return Fed::Failed;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        permit.send(Err(BodyError::Io(error)));
                        return Fed::Failed;
                    }
                },
                Err(error) => {
                    permit.send(Err(error));
                    return Fed::Failed;
                }
            }
        }
    }

    /// Writes `response`, its body frame by frame as they come (what is ready
    /// together goes in one write); whether the connection may stay open.
    async fn write_response<B>(
        &mut self,
        response: Response<B>,
        method: &Method,
        version: Version,
        keep_alive: bool,
    ) -> io::Result<bool>
    where
        B: Body<Data: Send, Error: Into<BoxError> + Send> + Send,
    {
        let (mut parts, body) = response.into_parts();
        let exact = body.size_hint().exact();
        let framing = response::framing(&parts, method, version, exact);
        if let (Some(length), true) = (exact, method == Method::HEAD) {
            // HEAD says the length the body would have had.
            parts
                .headers
                .entry(http::header::CONTENT_LENGTH)
                .or_insert_with(|| length.into());
        }
        let keep_alive =
            keep_alive && framing != Framing::UntilClose && !response::wants_close(&parts);
        let mut out = Vec::with_capacity(512);
        response::encode_head(&parts, framing, keep_alive, &mut out);
        drop(parts);
        if framing == Framing::None {
            self.stream.write_all(&out).await?;
            return Ok(keep_alive);
        }
        let chunked = framing == Framing::Chunked;
        let mut body = pin!(body);
        let mut written: u64 = 0;
        loop {
            // What the body has ready is gathered without waiting; only with
            // nothing ready is the batch written and the next frame awaited.
            let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if !out.is_empty() {
                        self.stream.write_all(&out).await?;
                        out = Vec::new();
                    }
                    tokio::select! {
                        frame = poll_fn(|cx| body.as_mut().poll_frame(cx)) => frame,
                        gone = self.peer_gone() => {
                            gone?;
                            return Ok(false);
                        }
                    }
                }
            };
            match frame {
                Some(Ok(frame)) => {
                    // Trailers are not sent: no client of a stream reads them.
                    if let Ok(data) = frame.into_data() {
                        written += bytes::Buf::remaining(&data) as u64;
                        response::encode_data(data, chunked, &mut out);
                        if out.len() >= WRITE_BATCH {
                            self.stream.write_all(&out).await?;
                            out = Vec::new();
                        }
                    }
                }
                Some(Err(error)) => {
                    // The client sees the body cut short, never a clean end.
                    let error: BoxError = error.into();
                    tracing::debug!(%error, "a response body failed");
                    self.stream.write_all(&out).await?;
                    return Ok(false);
                }
                None => {
                    if chunked {
                        out.extend_from_slice(response::LAST_CHUNK);
                    }
                    self.stream.write_all(&out).await?;
                    let whole = match framing {
                        Framing::Length(length) => written == length,
                        _ => true,
                    };
                    return Ok(keep_alive && whole);
                }
            }
        }
    }

    /// Resolves when the client has closed the connection (or it failed). What it
    /// sends meanwhile (a pipelined request) is kept, up to a head's worth.
    async fn peer_gone(&mut self) -> io::Result<()> {
        loop {
            if self.buf.len() >= MAX_HEAD {
                return std::future::pending().await;
            }
            if self.read_more().await? == 0 {
                return Ok(());
            }
        }
    }

    /// Reads what the socket has into the buffer; 0 at the end of the stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        loop {
            self.stream.readable().await?;
            match read_into(&self.stream, &mut self.buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                read => return read,
            }
        }
    }

    /// Closes while the client may still be sending (an unread body, a refused
    /// head): stops writing, then reads and drops for a moment, so the client
    /// reads the response before the connection goes, not a reset.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let _ = tokio::time::timeout(LINGER, async {
            loop {
                self.buf.clear();
                if !matches!(self.read_more().await, Ok(read) if read > 0) {
                    return;
                }
            }
        })
        .await;
    }

    fn free_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
    }
}

/// What one step of feeding a body did.
enum Fed {
    Chunk,
    End,
    Dropped,
    Failed,
}

/// One non-blocking read appended to `buf`. The chunk lives on this synchronous
/// call's stack, so it costs no connection any memory while it waits.
fn read_into(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let read = stream.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..read]);
    Ok(read)
}
