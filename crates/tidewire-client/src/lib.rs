//! tidewire-client: an async client for tidewire that never loses or repeats a token.
//!
//! [`Client::chat`] posts a message and returns a [`ChatStream`] of typed
//! [`ChatEvent`]s. When the connection drops, the body ends before `done`, or no byte
//! arrives within the idle timeout, the stream reconnects by itself (exponential
//! backoff with full jitter, honouring the server's `retry:` hint) and resumes with
//! `Last-Event-ID`, so the caller sees every event exactly once, in order. A POST
//! that fails before the run started is retried with the same `Idempotency-Key`, so
//! no second generation starts.
//!
//! It does not reconnect after `done`, after a 4xx other than 408 and 429, or after
//! the caller cancelled; 5xx and network errors are retried up to the policy's limit.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use tidewire_client::{ChatEvent, ChatRequest, Client};
//!
//! # async fn example() -> Result<(), tidewire_client::ClientError> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let mut answer = client.chat(ChatRequest::new("What is a tide?"));
//! while let Some(event) = answer.next().await {
//!     match event? {
//!         ChatEvent::Token(token) => print!("{}", token.token),
//!         ChatEvent::Done(done) => println!("\n[{}]", done.status),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod error;
mod retry;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use tidewire_protocol::api::{MessageList, RunView};
use url::Url;

pub use error::ClientError;
pub use retry::RetryPolicy;
pub use stream::ChatStream;
pub use tidewire_protocol::api::{ChatOptions, ChatRequest};
pub use tidewire_protocol::{ChatEvent, MessageStatus};

use stream::{Start, http_error};

/// A tidewire server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    idle_timeout: Option<Duration>,
    overall_timeout: Option<Duration>,
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    retry: RetryPolicy,
    idle_timeout: Option<Duration>,
    overall_timeout: Option<Duration>,
    connect_timeout: Duration,
    token: Option<String>,
}

impl ClientBuilder {
    /// Reconnection delays and attempts.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Reconnect when no byte (not even a keepalive) arrives for this long; `None`
    /// waits forever. Default 45 s: three of the server's default keepalive intervals.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Give up on a stream that has not ended after this long. Default: none.
    pub fn overall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.overall_timeout = timeout;
        self
    }

    /// How long to wait for a TCP connection. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sends `Authorization: Bearer <token>` (an API key or a JWT) with every
    /// request, for a server with authentication on.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client, ClientError> {
        let base = Url::parse(&self.base)
            .map_err(|error| ClientError::InvalidUrl(format!("{}: {error}", self.base)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::InvalidUrl(format!(
                "{base}: not an http or https URL"
            )));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::InvalidToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .default_headers(headers)
            .build()
            .map_err(ClientError::from)?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                retry: self.retry,
                idle_timeout: self.idle_timeout,
                overall_timeout: self.overall_timeout,
            }),
        })
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:8080`), default settings.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::builder(base_url).build()
    }

    /// Settings for a client of the server at `base_url`.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_owned(),
            retry: RetryPolicy::default(),
            idle_timeout: Some(Duration::from_secs(45)),
            overall_timeout: None,
            connect_timeout: Duration::from_secs(10),
            token: None,
        }
    }

    /// Posts a message and streams the answer's events.
    pub fn chat(&self, request: ChatRequest) -> ChatStream {
        ChatStream::new(self.clone(), Start::Chat(request))
    }

    /// Follows a run from after event `last_event_id` (0: from the start).
    pub fn attach(&self, run_id: &str, last_event_id: u64) -> ChatStream {
        ChatStream::new(
            self.clone(),
            Start::Attach {
                run_id: run_id.to_owned(),
                last_event_id,
            },
        )
    }

    /// Stops a run on the server and returns its final state.
    pub async fn cancel(&self, run_id: &str) -> Result<RunView, ClientError> {
        let url = self.url(&format!("/api/runs/{run_id}/cancel"))?;
        self.json(self.inner.http.post(url)).await
    }

    /// The state of a run.
    pub async fn run(&self, run_id: &str) -> Result<RunView, ClientError> {
        let url = self.url(&format!("/api/runs/{run_id}"))?;
        self.json(self.inner.http.get(url)).await
    }

    /// The stored messages of a conversation.
    pub async fn messages(&self, conversation_id: &str) -> Result<MessageList, ClientError> {
        let url = self.url(&format!("/api/conversations/{conversation_id}/messages"))?;
        self.json(self.inner.http.get(url)).await
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(http_error(response).await);
        }
        let text = response.text().await?;
        serde_json::from_str(&text)
            .map_err(|error| ClientError::Protocol(format!("unexpected answer: {error}")))
    }

    /// `path` (absolute, as in `events_url`) on the server.
    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.inner
            .base
            .join(path)
            .map_err(|error| ClientError::InvalidUrl(format!("{path}: {error}")))
    }
}
