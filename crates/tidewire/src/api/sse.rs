//! The SSE response of a run: headers, a prelude, the subscriber's batches and
//! keepalive comments while the run is quiet.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, Version, header};
use bytes::Bytes;
use futures_util::Stream;
use http_body::Frame;
use tokio::time::{Instant, Sleep};

use crate::hub::{CancelReason, Run, Subscription};
use crate::metrics::{FormatLabel, Metrics};

/// The comment sent on idle streams.
pub const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// How a stream behaves.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// Idle time before a keepalive comment.
    pub keepalive: Duration,
    /// The reconnection delay suggested with `retry:`; `None` writes no `retry:`
    /// line (clients that parse every block as one `data:` line).
    pub retry: Option<Duration>,
    /// Cancel the run this long after the client went away, if nobody else follows
    /// it (for clients that cannot resume); `None` lets it finish.
    pub cancel_on_disconnect: Option<Duration>,
}

/// A piece of a run's stream: its bytes, and whether nothing follows them.
pub type Piece = (Bytes, bool);

/// The response body of a run's stream ([`event_stream`]).
pub fn event_body(subscription: Subscription, settings: StreamSettings) -> Body {
    Body::new(EventBody::new(event_stream(subscription, settings)))
}

/// A run's stream: at once a keepalive comment and the `retry:` hint (so proxies
/// pass the headers on), then every event after the subscriber's cursor as it is
/// appended, a keepalive comment after each `keepalive` of silence, and the end
/// after `done`.
pub fn event_stream(mut subscription: Subscription, settings: StreamSettings) -> EventStream {
    let mut prelude = Vec::with_capacity(512);
    match settings.retry {
        Some(retry) => {
            tidewire_sse::encode_comment(&mut prelude, "keepalive");
            tidewire_sse::encode_retry(&mut prelude, retry);
        }
        None => prelude.extend_from_slice(KEEPALIVE),
    }
    // What the run already has goes out with the prelude, in the same write.
    if let Some(ready) = subscription.ready_batch() {
        prelude.extend_from_slice(&ready);
    }
    let disconnect = settings.cancel_on_disconnect.map(|grace| DisconnectGuard {
        run: std::sync::Arc::clone(subscription.run()),
        grace,
    });
    let open = subscription
        .run()
        .metrics()
        .map(|metrics| OpenStream::new(std::sync::Arc::clone(metrics), subscription.format_name()));
    EventStream {
        subscription,
        prelude: Some(Bytes::from(prelude)),
        keepalive: Keepalive::new(settings.keepalive),
        _guards: (disconnect, open),
    }
}

/// The stream [`event_stream`] returns. Polled by hand, not built from `unfold`
/// and `select!`: each event of each stream goes through it, and those layers
/// were as much of a paced stream's server time as its own work.
pub struct EventStream {
    subscription: Subscription,
    prelude: Option<Bytes>,
    keepalive: Keepalive,
    /// Dropped with the stream: what happens when its client goes away.
    _guards: (Option<DisconnectGuard>, Option<OpenStream>),
}

impl Stream for EventStream {
    type Item = Piece;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Piece>> {
        let this = &mut *self;
        if let Some(prelude) = this.prelude.take() {
            return Poll::Ready(Some((prelude, this.subscription.is_complete())));
        }
        // Events first: a stream that has one sends it, not a keepalive.
        if let Poll::Ready(batch) = this.subscription.poll_batch(cx) {
            this.keepalive.sent();
            let last = this.subscription.is_complete();
            return Poll::Ready(batch.map(|bytes| (bytes, last)));
        }
        std::task::ready!(this.keepalive.poll_silence(cx));
        Poll::Ready(Some((Bytes::from_static(KEEPALIVE), false)))
    }
}

pin_project_lite::pin_project! {
    /// A run's stream as a response body. It says when its last piece is out
    /// (`is_end_stream`), so the connection writes the response's end with that
    /// piece instead of in a write of its own, one in four of a short answer's;
    /// and what the stream holds (the subscription, whose counts go to the
    /// metrics when dropped) is dropped before that write.
    pub struct EventBody<S> {
        #[pin]
        pieces: Option<S>,
    }
}

impl<S> EventBody<S> {
    /// The body of `pieces`.
    pub fn new(pieces: S) -> Self {
        Self {
            pieces: Some(pieces),
        }
    }
}

impl<S: Stream<Item = Piece>> http_body::Body for EventBody<S> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut pieces = self.project().pieces;
        let Some(stream) = pieces.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match std::task::ready!(stream.poll_next(cx)) {
            Some((bytes, last)) => {
                if last {
                    pieces.set(None);
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            None => {
                pieces.set(None);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_none()
    }
}

/// When a stream has been quiet for its keepalive interval. One timer per stream,
/// moved only when it fires: resetting it on every event put two timer-wheel
/// operations (under the driver's lock) on each event of every stream.
struct Keepalive {
    every: Duration,
    last_sent: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Keepalive {
    fn new(every: Duration) -> Self {
        let now = Instant::now();
        Self {
            every,
            last_sent: now,
            timer: Box::pin(tokio::time::sleep_until(now + every)),
        }
    }

    /// Something was sent: the silence starts again.
    fn sent(&mut self) {
        self.last_sent = Instant::now();
    }

    /// Ready once nothing was sent for `every`; the caller sends a keepalive.
    fn poll_silence(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            std::task::ready!(self.timer.as_mut().poll(cx));
            let due = self.last_sent + self.every;
            let now = Instant::now();
            if now >= due {
                self.last_sent = now;
                self.timer.as_mut().reset(now + self.every);
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(due);
        }
    }
}

/// Counts a stream as open, by its wire format, until it is dropped.
struct OpenStream {
    metrics: std::sync::Arc<Metrics>,
    format: FormatLabel,
}

impl OpenStream {
    fn new(metrics: std::sync::Arc<Metrics>, format: &str) -> Self {
        let format = FormatLabel {
            format: format.to_owned(),
        };
        metrics.open_streams.get_or_create(&format).inc();
        Self { metrics, format }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.open_streams.get_or_create(&self.format).dec();
    }
}

/// Cancels its run `grace` after the stream is dropped (its client went away),
/// unless the run finished or someone else follows it by then.
struct DisconnectGuard {
    run: std::sync::Arc<Run>,
    grace: Duration,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.run.is_finished() {
            return;
        }
        let run = std::sync::Arc::clone(&self.run);
        let grace = self.grace;
        // Dropped inside the runtime (hyper drops bodies on its tasks); outside of
        // one there is nothing left to cancel for.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(grace).await;
                if !run.is_finished() && run.subscribers() == 0 {
                    tracing::debug!(run_id = run.id(), "client went away; cancelling");
                    run.cancel(CancelReason::Disconnected);
                }
            });
        }
    }
}

/// A `text/event-stream` response with the headers every stream carries.
pub fn sse_response(version: Version, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // HTTP/2 forbids connection-specific headers.
    if version <= Version::HTTP_11 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use tidewire_protocol::{ChatEvent, MessageStatus};
    use tokio::time::Instant;

    use super::*;
    use crate::api::native::Native;
    use crate::hub::{Run, RunIdentity};

    fn a_run() -> Arc<Run> {
        let identity = RunIdentity {
            run_id: "r".into(),
            conversation_id: "c".into(),
            message_id: "m".into(),
            created: 0,
            attributes: None,
            user_id: crate::store::LOCAL_USER.into(),
        };
        Arc::new(Run::new(identity, usize::MAX))
    }

    /// Keepalives every 15 s.
    fn settings(retry: Option<Duration>) -> StreamSettings {
        StreamSettings {
            keepalive: Duration::from_secs(15),
            retry,
            cancel_on_disconnect: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keepalives_go_out_at_once_and_after_each_quiet_interval() {
        let run = a_run();
        let stream = event_stream(
            run.subscribe(0, Arc::new(Native::default())),
            settings(Some(Duration::from_millis(1500))),
        );
        let producer = Arc::clone(&run);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(40)).await;
            producer.append(ChatEvent::token("hi"));
            tokio::time::sleep(Duration::from_secs(20)).await;
            producer.append(ChatEvent::done(MessageStatus::Complete));
        });
        let start = Instant::now();
        let items: Vec<(u64, String)> = stream
            .map(|(bytes, _)| {
                (
                    start.elapsed().as_secs(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                )
            })
            .collect()
            .await;
        let keepalive = ": keepalive\n\n".to_owned();
        assert_eq!(
            items,
            vec![
                (0, ": keepalive\nretry: 1500\n\n".to_owned()),
                (15, keepalive.clone()),
                (30, keepalive.clone()),
                (
                    40,
                    "id: 1\nevent: token\ndata: {\"token\":\"hi\"}\n\n".to_owned()
                ),
                (55, keepalive),
                (
                    60,
                    "id: 2\nevent: done\ndata: {\"status\":\"complete\"}\n\n".to_owned()
                ),
            ]
        );
    }

    async fn next_frame<B: http_body::Body>(
        body: &mut Pin<&mut B>,
    ) -> Option<Result<Frame<B::Data>, B::Error>> {
        std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
    }

    /// The next frame, which must be data.
    async fn next_data<B>(body: &mut Pin<&mut B>) -> B::Data
    where
        B: http_body::Body<Error = Infallible>,
    {
        let frame = next_frame(body).await.unwrap().unwrap();
        frame.into_data().ok().unwrap()
    }

    #[tokio::test]
    async fn the_body_ends_with_its_last_piece_having_let_go_of_the_run() {
        use http_body::Body as _;

        let run = a_run();
        let mut body = std::pin::pin!(EventBody::new(event_stream(
            run.subscribe(0, Arc::new(Native::default())),
            settings(None)
        )));

        let prelude = next_frame(&mut body).await.unwrap().unwrap();
        assert!(prelude.is_data());
        assert!(!body.is_end_stream());
        run.append(ChatEvent::token("hi"));
        let token = next_data(&mut body).await;
        assert!(token.ends_with(b"{\"token\":\"hi\"}\n\n"), "{token:?}");
        assert!(!body.is_end_stream(), "ended before done");
        run.append(ChatEvent::done(MessageStatus::Complete));
        let done = next_data(&mut body).await;
        assert!(done.starts_with(b"id: 2\nevent: done"), "{done:?}");
        assert!(body.is_end_stream(), "done was the last piece");
        assert_eq!(run.subscribers(), 0, "the subscription outlived the stream");
        assert!(next_frame(&mut body).await.is_none());
    }
}
