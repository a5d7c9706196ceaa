//! [`ClientError`]: what went wrong, in words that say what happened.

use std::time::Duration;

/// A failure of a tidewire request or stream.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status and its JSON error.
    #[error("HTTP {status}: {message} ({code})")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The server's error code (`conversation_not_found`, ...), or `http_error`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server sent something that is not the tidewire protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection failed or broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The stream ended before its `done` event.
    #[error("the stream ended before its done event")]
    EndedEarly,
    /// No byte, not even a keepalive, arrived for this long.
    #[error("no data for {0:?}")]
    Idle(Duration),
    /// The whole stream took longer than the overall timeout.
    #[error("the stream did not finish within {0:?}")]
    Timeout(Duration),
    /// Every attempt failed.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// The error of the last one.
        last: Box<ClientError>,
    },
    /// The base URL or a path cannot form a URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The token cannot be sent in a header.
    #[error("the token holds characters an HTTP header cannot")]
    InvalidToken,
}

impl ClientError {
    /// Whether trying again may help: network failures, early ends, idle timeouts,
    /// 408, 429 and 5xx. Other 4xx mean the request itself is wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            Self::Connection(_) | Self::EndedEarly | Self::Idle(_) => true,
            Self::Protocol(_)
            | Self::Timeout(_)
            | Self::GaveUp { .. }
            | Self::InvalidUrl(_)
            | Self::InvalidToken => false,
        }
    }

    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            Self::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(error: reqwest::Error) -> Self {
        // reqwest's Display omits the cause; the chain says what actually broke.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Connection(message)
    }
}
