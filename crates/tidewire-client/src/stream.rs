//! [`ChatStream`]: the events of one run, delivered exactly once and in order across
//! any number of reconnections.
//!
//! A session posts the chat request (or attaches to a run), decodes the stream with
//! tidewire-sse and remembers the id of the last event it delivered. When the
//! connection drops, the body ends before `done`, or nothing arrives within the idle
//! timeout, it waits (backoff with full jitter, at least the server's `retry:` hint)
//! and resumes from the run's `events_url` with `Last-Event-ID`. Before the `run`
//! event it re-posts with the same `Idempotency-Key`, so the server attaches to the
//! first run instead of starting a second generation.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use tidewire_protocol::api::{ChatRequest, ErrorBody};
use tidewire_protocol::{ChatEvent, EventParseError};
use tokio::time::Instant;
use url::Url;

use crate::{Client, ClientError};

/// What the caller and the session share.
#[derive(Debug, Default)]
struct Shared {
    run_id: Mutex<Option<String>>,
    last_event_id: AtomicU64,
    cancelled: AtomicBool,
}

impl Shared {
    fn run_id(&self) -> Option<String> {
        self.run_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The events of a run, each exactly once, in order. Ends after `done`, after an
/// error that retrying cannot fix, or when the connection drops after [`cancel`].
///
/// Dropping the stream closes its connection; the run goes on on the server.
///
/// [`cancel`]: ChatStream::cancel
pub struct ChatStream {
    events: BoxStream<'static, Result<ChatEvent, ClientError>>,
    shared: Arc<Shared>,
    client: Client,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    pub(crate) fn new(client: Client, start: Start) -> Self {
        let shared = Arc::new(Shared::default());
        let session = Session::new(client.clone(), start, Arc::clone(&shared));
        if let Some(last) = session.resume_from() {
            shared.last_event_id.store(last, Ordering::Relaxed);
        }
        let events = futures_util::stream::unfold(session, |mut session| async move {
            session.next().await.map(|item| (item, session))
        })
        .boxed();
        Self {
            events,
            shared,
            client,
        }
    }

    /// The run's id, once its `run` event arrived (or from the start, when attached).
    pub fn run_id(&self) -> Option<String> {
        self.shared.run_id()
    }

    /// The id of the last event delivered: what a later [`Client::attach`] resumes after.
    pub fn last_event_id(&self) -> u64 {
        self.shared.last_event_id.load(Ordering::Relaxed)
    }

    /// Asks the server to stop the run. The stream goes on to the run's `done`
    /// (`cancelled`) but no longer reconnects. Before the `run` event arrived, the
    /// cancel is sent as soon as it does.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.shared.cancelled.store(true, Ordering::Relaxed);
        match self.shared.run_id() {
            Some(run_id) => self.client.cancel(&run_id).await.map(drop),
            None => Ok(()),
        }
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_next_unpin(cx)
    }
}

/// How a session begins.
#[derive(Debug, Clone)]
pub(crate) enum Start {
    /// `POST /api/chat`.
    Chat(ChatRequest),
    /// `GET /api/runs/{id}/events` after an event id.
    Attach { run_id: String, last_event_id: u64 },
}

type Body = BoxStream<'static, reqwest::Result<Bytes>>;

struct Session {
    client: Client,
    shared: Arc<Shared>,
    request: Option<ChatRequest>,
    idempotency_key: String,
    events_url: Option<Url>,
    last_event_id: u64,
    decoder: tidewire_sse::Decoder,
    body: Option<Body>,
    /// Attempts in a row that brought no event.
    failures: u32,
    last_error: Option<ClientError>,
    /// `Retry-After` of the last refusal, for the next wait only.
    retry_after: Option<Duration>,
    deadline: Option<Instant>,
    finished: bool,
    cancel_sent: bool,
}

impl Session {
    fn new(client: Client, start: Start, shared: Arc<Shared>) -> Self {
        let deadline = client
            .inner
            .overall_timeout
            .map(|timeout| Instant::now() + timeout);
        let mut session = Self {
            client,
            shared,
            request: None,
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            events_url: None,
            last_event_id: 0,
            decoder: tidewire_sse::Decoder::new(),
            body: None,
            failures: 0,
            last_error: None,
            retry_after: None,
            deadline,
            finished: false,
            cancel_sent: false,
        };
        match start {
            Start::Chat(mut request) => {
                request.stream = None;
                session.request = Some(request);
            }
            Start::Attach {
                run_id,
                last_event_id,
            } => {
                match session.client.url(&format!("/api/runs/{run_id}/events")) {
                    Ok(url) => session.events_url = Some(url),
                    Err(error) => session.last_error = Some(error),
                }
                session.last_event_id = last_event_id;
                *session
                    .shared
                    .run_id
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(run_id);
            }
        }
        session
    }

    fn resume_from(&self) -> Option<u64> {
        (self.last_event_id > 0).then_some(self.last_event_id)
    }

    /// The next event, an error that ends the stream, or the end.
    async fn next(&mut self) -> Option<Result<ChatEvent, ClientError>> {
        if self.finished {
            return None;
        }
        if self.events_url.is_none() && self.request.is_none() {
            let error = self
                .last_error
                .take()
                .unwrap_or(ClientError::InvalidUrl("no URL".into()));
            return Some(Err(self.fail(error)));
        }
        let deadline = self.deadline;
        let next = self.next_event();
        match deadline {
            None => next.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                Ok(item) => item,
                Err(_) => {
                    let timeout = self.client.inner.overall_timeout.unwrap_or_default();
                    Some(Err(self.fail(ClientError::Timeout(timeout))))
                }
            },
        }
    }

    async fn next_event(&mut self) -> Option<Result<ChatEvent, ClientError>> {
        loop {
            while let Some(decoded) = self.decoder.next_event() {
                let decoded = match decoded {
                    Ok(event) => event,
                    Err(error) => {
                        return Some(Err(self.fail(ClientError::Protocol(error.to_string()))));
                    }
                };
                let id = decoded.id.parse::<u64>().ok();
                if id.is_some_and(|id| id <= self.last_event_id) {
                    // Already delivered before a reconnect.
                    continue;
                }
                let event = match ChatEvent::from_wire(decoded.event, decoded.data) {
                    Ok(event) => event,
                    Err(EventParseError::UnknownEvent(name)) => {
                        tracing::debug!(%name, "skipping an event this client does not know");
                        self.delivered(id);
                        continue;
                    }
                    Err(error) => {
                        return Some(Err(self.fail(ClientError::Protocol(error.to_string()))));
                    }
                };
                self.delivered(id);
                if let ChatEvent::Run(run) = &event
                    && let Err(error) = self.on_run(&run.run_id, &run.events_url).await
                {
                    return Some(Err(self.fail(error)));
                }
                if event.is_done() {
                    self.finished = true;
                    self.body = None;
                }
                return Some(Ok(event));
            }

            if self.body.is_none() {
                if self.shared.cancelled.load(Ordering::Relaxed) && self.failures > 0 {
                    // The caller cancelled and the connection is gone: do not come back.
                    self.finished = true;
                    return None;
                }
                match self.open().await {
                    Ok(body) => self.body = Some(body),
                    Err(error) => return Some(Err(self.fail(error))),
                }
            }
            let idle = self.client.inner.idle_timeout;
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let chunk = match idle {
                Some(idle) => match tokio::time::timeout(idle, body.next()).await {
                    Ok(chunk) => chunk,
                    Err(_) => {
                        self.lost(ClientError::Idle(idle));
                        continue;
                    }
                },
                None => body.next().await,
            };
            match chunk {
                Some(Ok(bytes)) => self.decoder.push(&bytes),
                Some(Err(error)) => self.lost(error.into()),
                None => self.lost(ClientError::EndedEarly),
            }
        }
    }

    /// Records an event as delivered.
    fn delivered(&mut self, id: Option<u64>) {
        self.failures = 0;
        if let Some(id) = id {
            self.last_event_id = id;
            self.shared.last_event_id.store(id, Ordering::Relaxed);
        }
    }

    async fn on_run(&mut self, run_id: &str, events_url: &str) -> Result<(), ClientError> {
        self.events_url = Some(self.client.url(events_url)?);
        *self.shared.run_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(run_id.to_owned());
        if self.shared.cancelled.load(Ordering::Relaxed) && !self.cancel_sent {
            self.cancel_sent = true;
            self.client.cancel(run_id).await?;
        }
        Ok(())
    }

    /// The connection is gone; the next loop reconnects.
    fn lost(&mut self, cause: ClientError) {
        tracing::debug!(%cause, last_event_id = self.last_event_id, "stream interrupted; will resume");
        self.body = None;
        self.decoder.finish();
        self.failures += 1;
        self.last_error = Some(cause);
    }

    /// Ends the stream with `error`.
    fn fail(&mut self, error: ClientError) -> ClientError {
        self.finished = true;
        self.body = None;
        error
    }

    /// Connects, waiting and retrying as the policy says.
    async fn open(&mut self) -> Result<Body, ClientError> {
        let policy = self.client.inner.retry.clone();
        loop {
            if self.failures > 0 {
                if self.failures >= policy.max_attempts {
                    let last = self.last_error.take().unwrap_or(ClientError::EndedEarly);
                    return Err(ClientError::GaveUp {
                        attempts: self.failures,
                        last: Box::new(last),
                    });
                }
                let hint = self.retry_after.take().or_else(|| self.decoder.retry());
                tokio::time::sleep(policy.delay(self.failures, hint)).await;
            }
            match self.connect().await {
                Ok(body) => return Ok(body),
                Err(error) if error.is_retryable() => {
                    tracing::debug!(%error, failures = self.failures + 1, "connection attempt failed");
                    self.failures += 1;
                    self.last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One attempt: resume from the run's events URL, or (before the `run` event)
    /// post the request with the session's idempotency key.
    async fn connect(&mut self) -> Result<Body, ClientError> {
        let http = &self.client.inner.http;
        let mut request = match (&self.events_url, &self.request) {
            (Some(url), _) => http.get(url.clone()),
            (None, Some(chat)) => http
                .post(self.client.url("/api/chat")?)
                .header("Idempotency-Key", &self.idempotency_key)
                .json(chat),
            (None, None) => return Err(ClientError::InvalidUrl("nothing to connect to".into())),
        };
        request = request.header(ACCEPT, "text/event-stream");
        if self.last_event_id > 0 {
            request = request.header("Last-Event-ID", self.last_event_id.to_string());
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !content_type.starts_with("text/event-stream") {
                return Err(ClientError::Protocol(format!(
                    "expected an event stream, got Content-Type {content_type:?}"
                )));
            }
            return Ok(response.bytes_stream().boxed());
        }
        self.retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(http_error(response).await)
    }
}

/// The server's JSON error, or the bare status when the body is not one.
pub(crate) async fn http_error(response: reqwest::Response) -> ClientError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Http {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ClientError::Http {
            status: status.as_u16(),
            code: "http_error".into(),
            message: status.canonical_reason().unwrap_or("error").to_owned(),
        },
    }
}
