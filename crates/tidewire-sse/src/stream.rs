//! The async adapter: a `Stream` of byte chunks into a `Stream` of events.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;

use crate::decoder::{DecodeError, Decoder, Limits};
use crate::event::Event;

/// What an [`EventStream`] yields besides events.
#[derive(Debug, thiserror::Error)]
pub enum StreamError<E> {
    /// The bytes broke a decoder limit; the stream goes on after the offending event.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The byte stream failed.
    #[error("event stream transport failed: {0}")]
    Transport(E),
}

pin_project_lite::pin_project! {
    /// Decodes a stream of byte chunks into events as each chunk arrives.
    #[derive(Debug)]
    pub struct EventStream<S> {
        #[pin]
        inner: S,
        decoder: Decoder,
        done: bool,
    }
}

impl<S> EventStream<S> {
    /// Decodes `inner` with the default limits.
    pub fn new(inner: S) -> Self {
        Self::with_decoder(inner, Decoder::new())
    }

    /// Decodes `inner` with a decoder of the caller's, for its limits or its last event ID.
    pub fn with_decoder(inner: S, decoder: Decoder) -> Self {
        Self {
            inner,
            decoder,
            done: false,
        }
    }

    /// The last event ID string, for `Last-Event-ID` on reconnect.
    pub fn last_event_id(&self) -> &str {
        self.decoder.last_event_id()
    }

    /// The decoder, with its last event ID and reconnection time.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Gives back the decoder, to carry its state to the next connection.
    pub fn into_decoder(self) -> Decoder {
        self.decoder
    }

    /// The limits in effect.
    pub fn limits(&self) -> Limits {
        self.decoder.limits()
    }
}

impl<S, B, E> Stream for EventStream<S>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    type Item = Result<Event, StreamError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(next) = this.decoder.next_owned() {
                return Poll::Ready(Some(next.map_err(StreamError::Decode)));
            }
            if *this.done {
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => this.decoder.push(chunk.as_ref()),
                Some(Err(error)) => return Poll::Ready(Some(Err(StreamError::Transport(error)))),
                None => {
                    *this.done = true;
                    this.decoder.finish();
                    return Poll::Ready(None);
                }
            }
        }
    }
}
