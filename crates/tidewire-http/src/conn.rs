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

use bytes::Buf;
use http::{Request, Response, StatusCode};
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
/// How long a closing connection reads what the client still sends, so that it
/// reads the response rather than a reset.
const LINGER: Duration = Duration::from_secs(1);
/// The first bytes of every HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What came next on the connection. The head is boxed: this value's slot in
/// the connection's future would otherwise be as large as a head for the whole
/// life of the connection.
enum Next {
    Request(Box<Head>),
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
        let head = match conn.next_head(&shutdown).await {
            Ok(Next::Request(head)) => head,
            Ok(Next::Http2) => {
                // Boxed: hyper's connection would otherwise size every connection's task.
                Box::pin(crate::h2::serve(conn.stream, conn.buf, service, shutdown)).await;
                return;
            }
            Ok(Next::Refuse(status, message)) => {
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
            Ok(Next::Closed) => return,
            Err(error) => {
                tracing::debug!(%error, "reading a request failed");
                return;
            }
        };
        match conn.exchange(&mut service, head).await {
            Ok(true) if !shutdown.is_cancelled() => {}
            Ok(_) => return,
            Err(error) => {
                tracing::debug!(%error, "the connection failed");
                return;
            }
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
                            return Ok(Next::Request(Box::new(head)));
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
    async fn exchange<S: Serve>(&mut self, service: &mut S, head: Box<Head>) -> io::Result<bool> {
        // Boxed: until the response starts, the request, the service's future and
        // the response's head are large and short-lived. Inline they would size
        // the connection's task for as long as the stream that follows lasts;
        // that stream needs only what `write_body` holds.
        let Some((start, unread)) = Box::pin(self.begin(service, head)).await? else {
            return Ok(false);
        };
        let kept = self
            .write_body(start.head, start.body, start.framing, start.keep_alive)
            .await?;
        if unread {
            self.linger().await;
            return Ok(false);
        }
        self.free_if_empty();
        Ok(kept)
    }

    /// Calls the service with the request and encodes its response's head; with
    /// whether the request body was left unread. `None` when the service failed
    /// (it was answered 500).
    async fn begin<S: Serve>(
        &mut self,
        service: &mut S,
        head: Box<Head>,
    ) -> io::Result<Option<(response::Start<S::Body>, bool)>> {
        let Head {
            parts,
            body,
            keep_alive,
            expect_continue,
        } = *head;
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
        let request = Request::from_parts(parts, request_body);
        if expect_continue && feed.is_some() {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
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
        match response {
            Ok(response) => Ok(Some((
                response::start(response, &method, version, keep_alive && !unread),
                unread,
            ))),
            Err(error) => {
                let error: BoxError = error.into();
                tracing::warn!(%error, "the service failed");
                let refusal = response::refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the server could not handle the request",
                );
                self.stream.write_all(&refusal).await?;
                Ok(None)
            }
        }
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

    /// Writes a response's head (in `out`) and its body frame by frame as they
    /// come (what is ready together goes in one write); whether the connection
    /// may stay open. Only the body and the bytes to write are held while it
    /// waits: the response's head is encoded before, outside this future.
    async fn write_body<B>(
        &mut self,
        mut out: Vec<u8>,
        body: B,
        framing: Framing,
        keep_alive: bool,
    ) -> io::Result<bool>
    where
        B: Body<Data: Send, Error: Into<BoxError> + Send> + Send,
    {
        if framing == Framing::None {
            self.stream.write_all(&out).await?;
            return Ok(keep_alive);
        }
        let chunked = framing == Framing::Chunked;
        let mut body = pin!(body);
        let mut written: u64 = 0;
        // The head goes out with the first frame when the body has one ready (a
        // whole response, or a stream's prelude): one write.
        let mut ready =
            match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx).map(Step::of))).await {
                Poll::Ready(step) => Some(step),
                Poll::Pending => None,
            };
        loop {
            let step = match ready.take() {
                Some(step) => step,
                None => {
                    if !out.is_empty() {
                        self.stream.write_all(&out).await?;
                        out = Vec::new();
                    }
                    // The body first: woken for a frame, the socket is not polled.
                    tokio::select! {
                        biased;
                        step = poll_fn(|cx| body.as_mut().poll_frame(cx).map(Step::of)) => step,
                        gone = self.peer_gone() => {
                            gone?;
                            return Ok(false);
                        }
                    }
                }
            };
            match step {
                Step::Data(mut data) => {
                    let length = data.remaining();
                    written += length as u64;
                    // A body that knows this frame was its last (`is_end_stream`) has
                    // the response's end go out in the same write.
                    let last = body.is_end_stream();
                    if out.is_empty() && length > 0 {
                        // A stream's frame goes out as it is, between its chunk line
                        // and CRLF, in one vectored write: nothing copied or allocated.
                        let line = response::ChunkLine::new(length, chunked);
                        let end: &[u8] = if chunked { b"\r\n" } else { b"" };
                        let last_chunk: &[u8] = if chunked && last {
                            response::LAST_CHUNK
                        } else {
                            b""
                        };
                        let mut framed = line
                            .as_bytes()
                            .chain(&mut data)
                            .chain(end)
                            .chain(last_chunk);
                        self.stream.write_all_buf(&mut framed).await?;
                    } else {
                        response::encode_data(data, chunked, &mut out);
                        if last {
                            if chunked {
                                out.extend_from_slice(response::LAST_CHUNK);
                            }
                            self.stream.write_all(&out).await?;
                        }
                    }
                    if last {
                        return Ok(keep_alive && framing.is_whole(written));
                    }
                }
                // Trailers are not sent: no client of a stream reads them.
                Step::Trailers => {}
                Step::Failed(error) => {
                    // The client sees the body cut short, never a clean end.
                    tracing::debug!(%error, "a response body failed");
                    self.stream.write_all(&out).await?;
                    return Ok(false);
                }
                Step::End => {
                    if chunked {
                        out.extend_from_slice(response::LAST_CHUNK);
                    }
                    if !out.is_empty() {
                        self.stream.write_all(&out).await?;
                    }
                    return Ok(keep_alive && framing.is_whole(written));
                }
            }
        }
    }

    /// Resolves when the client has closed the connection (or it failed). What it
    /// sends meanwhile (a pipelined request) is kept, up to a head's worth.
    async fn peer_gone(&mut self) -> io::Result<()> {
        // `poll_read_ready` keeps one waker per direction in the socket: waiting
        // here between two events registers nothing and unregisters nothing.
        poll_fn(|cx| {
            loop {
                if self.buf.len() >= MAX_HEAD {
                    return Poll::Pending;
                }
                if let Err(error) = std::task::ready!(self.stream.poll_read_ready(cx)) {
                    return Poll::Ready(Err(error));
                }
                match read_into(&self.stream, &mut self.buf) {
                    Ok(0) => return Poll::Ready(Ok(())),
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
            }
        })
        .await
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

/// A response body's next frame, made small at once: a `Frame` has room for
/// trailers (a whole header map), and one kept across an `.await` would size the
/// connection's future.
enum Step<D> {
    Data(D),
    Trailers,
    Failed(BoxError),
    End,
}

impl<D> Step<D> {
    fn of<E: Into<BoxError>>(frame: Option<Result<http_body::Frame<D>, E>>) -> Self {
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Step::Data(data),
                Err(_) => Step::Trailers,
            },
            Some(Err(error)) => Step::Failed(error.into()),
            None => Step::End,
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
