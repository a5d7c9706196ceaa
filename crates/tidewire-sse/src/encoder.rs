//! The `text/event-stream` encoder: events and comments written into a caller's
//! reusable buffer, so the hot path allocates nothing per event.

use std::time::Duration;

/// An event to encode. Build it with [`Frame::new`] and the setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Frame<'a> {
    /// The `id:` field, if any.
    pub id: Option<&'a str>,
    /// The `event:` field, if any (a decoder reads a missing one as `message`).
    pub event: Option<&'a str>,
    /// The data; CR, LF and CRLF in it become separate `data:` lines.
    pub data: &'a str,
    /// The `retry:` field, if any.
    pub retry: Option<Duration>,
}

/// An event that cannot be written without breaking the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An id may not contain CR, LF or NULL.
    #[error("event id contains a CR, LF or NULL character")]
    InvalidId,
    /// An event name may not contain CR or LF.
    #[error("event name contains a CR or LF character")]
    InvalidEventName,
}

impl<'a> Frame<'a> {
    /// An event with this data and no other field.
    pub fn new(data: &'a str) -> Self {
        Self {
            data,
            ..Self::default()
        }
    }

    /// Sets the `id:` field.
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the `event:` field.
    pub fn event(mut self, event: &'a str) -> Self {
        self.event = Some(event);
        self
    }

    /// Sets the `retry:` field.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Appends the event to `out`. On error nothing is written.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self
            .id
            .is_some_and(|id| memchr::memchr3(b'\r', b'\n', 0, id.as_bytes()).is_some())
        {
            return Err(EncodeError::InvalidId);
        }
        if self
            .event
            .is_some_and(|event| memchr::memchr2(b'\r', b'\n', event.as_bytes()).is_some())
        {
            return Err(EncodeError::InvalidEventName);
        }
        if let Some(id) = self.id {
            write_field(out, b"id: ", id.as_bytes());
        }
        if let Some(event) = self.event {
            write_field(out, b"event: ", event.as_bytes());
        }
        if let Some(retry) = self.retry {
            write_retry(out, retry);
        }
        write_lines(out, b"data: ", self.data.as_bytes());
        out.push(b'\n');
        Ok(())
    }
}

/// Appends a comment (`: text`); text with line breaks becomes several comment lines.
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    write_lines(out, b": ", text.as_bytes());
}

/// Appends a lone `retry:` field followed by a blank line; a decoder applies it and
/// dispatches nothing.
pub fn encode_retry(out: &mut Vec<u8>, retry: Duration) {
    write_retry(out, retry);
    out.push(b'\n');
}

fn write_field(out: &mut Vec<u8>, prefix: &[u8], value: &[u8]) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn write_retry(out: &mut Vec<u8>, retry: Duration) {
    let millis = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = millis;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write_field(out, b"retry: ", &digits[at..]);
}

/// Writes `text` as one `prefix` line per line of it, splitting on CRLF, CR and LF.
fn write_lines(out: &mut Vec<u8>, prefix: &[u8], text: &[u8]) {
    let mut rest = text;
    loop {
        match memchr::memchr2(b'\r', b'\n', rest) {
            None => {
                write_field(out, prefix, rest);
                return;
            }
            Some(at) => {
                write_field(out, prefix, &rest[..at]);
                let ending = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[at + ending..];
            }
        }
    }
}
