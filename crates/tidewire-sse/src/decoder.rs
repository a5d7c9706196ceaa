//! The incremental `text/event-stream` decoder.
//!
//! It follows the WHATWG HTML rules for parsing and interpreting an event stream
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>)
//! and never depends on how its input was split: bytes are pushed in chunks of
//! any size and events are pulled out as soon as their terminating blank line is
//! complete.

use std::ops::Range;
use std::time::Duration;

use crate::event::{Event, EventRef};

const SHRINK_ABOVE: usize = 64 * 1024;

/// Size limits that keep a hostile or broken stream from growing memory without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest line accepted, in bytes, not counting its line ending.
    pub max_line: usize,
    /// The largest event accepted, in bytes: every byte of every line of one event plus
    /// one for each line ending, so many short lines cannot bypass it. (A CRLF counts
    /// as one, so the count never depends on where the input was split.)
    pub max_event: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: 4 * 1024 * 1024,
            max_event: 16 * 1024 * 1024,
        }
    }
}

/// A limit of [`Limits`] was exceeded. The offending event is discarded and decoding
/// resumes after the blank line that ends it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A line grew past [`Limits::max_line`] bytes.
    #[error("event stream line longer than the limit of {limit} bytes")]
    LineTooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// An event grew past [`Limits::max_event`] bytes.
    #[error("event stream event larger than the limit of {limit} bytes")]
    EventTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
}

/// An incremental, sans-I/O event stream decoder.
///
/// Push bytes with [`Decoder::push`], then pull events with [`Decoder::next_event`]
/// (borrowed, no allocation) or [`Decoder::next_owned`] until it returns `None`.
///
/// ```
/// use tidewire_sse::Decoder;
///
/// let mut decoder = Decoder::new();
/// decoder.push(b"id: 7\nevent: token\ndata: {\"token\":\"hi\"}\n\r");
/// let event = decoder.next_event().unwrap().unwrap();
/// assert_eq!((event.event, event.data, event.id), ("token", "{\"token\":\"hi\"}", "7"));
/// assert!(decoder.next_event().is_none());
/// assert_eq!(decoder.last_event_id(), "7");
/// ```
#[derive(Debug, Default)]
pub struct Decoder {
    input: Input,
    fields: Fields,
}

/// The text decoded from the pushed bytes but not yet split into lines.
struct Input {
    /// The stream decoded as UTF-8, as the standard requires before parsing: invalid
    /// sequences replaced by U+FFFD, one leading BOM removed. `encoding_rs` does this
    /// incrementally (a sequence split between pushes is decoded whole) and exactly as
    /// the WHATWG Encoding Standard says, so lines are `str` and never re-validated.
    utf8: encoding_rs::Decoder,
    buf: String,
    /// Start of the unconsumed text in `buf`.
    pos: usize,
    /// How many bytes after `pos` are known to hold no line ending, so a long line fed
    /// in small chunks is scanned once, not once per chunk.
    scanned: usize,
    /// The previous line ended with a CR at the end of the input: an LF right after it
    /// belongs to the same line ending.
    skip_lf: bool,
    /// The current line exceeded the limit and its remaining text is dropped.
    skipping_line: bool,
}

impl Default for Input {
    fn default() -> Self {
        Self {
            utf8: encoding_rs::UTF_8.new_decoder_with_bom_removal(),
            buf: String::new(),
            pos: 0,
            scanned: 0,
            skip_lf: false,
            skipping_line: false,
        }
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("buffered", &(self.buf.len() - self.pos))
            .field("skip_lf", &self.skip_lf)
            .field("skipping_line", &self.skipping_line)
            .finish_non_exhaustive()
    }
}

/// The buffers of the event being built, and the state that outlives events.
#[derive(Debug, Clone, Default)]
struct Fields {
    limits: Limits,
    /// Data lines joined, each followed by LF, as the standard's data buffer.
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    retry: Option<u64>,
    /// Bytes of the event so far: every line, plus one per line ending.
    event_size: usize,
    /// The event exceeded a limit and is dropped at its blank line.
    discarding: bool,
    /// An event was handed out and its buffers are cleared before the next line.
    dispatched: bool,
    /// Non-standard fields read as `event: <name>` plus `data: <value>`.
    event_fields: Vec<String>,
}

/// What one line did to the event being built.
enum LineOutcome {
    Continue,
    Dispatch,
    Error(DecodeError),
}

impl Decoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        let mut decoder = Self::default();
        decoder.fields.limits = limits;
        decoder
    }

    /// Reads a non-standard field as an event: a line `name: value` counts as
    /// `event: name` followed by `data: value`. The standard ignores unknown fields;
    /// this is for servers that put errors in one (llama.cpp sends `error: {...}`).
    pub fn field_as_event(mut self, name: &str) -> Self {
        self.fields.event_fields.push(name.to_owned());
        self
    }

    /// The limits in effect.
    pub fn limits(&self) -> Limits {
        self.fields.limits
    }

    /// Appends bytes to the input. Call [`Decoder::next_event`] until it returns `None`
    /// before pushing again, so the unconsumed input stays small.
    pub fn push(&mut self, chunk: &[u8]) {
        self.input.push(chunk);
    }

    /// The next complete event, borrowed from the decoder until the next call.
    ///
    /// `None` means more input is needed. A limit error is returned once, in order
    /// with the events around it; decoding continues after it.
    pub fn next_event(&mut self) -> Option<Result<EventRef<'_>, DecodeError>> {
        match self.advance()? {
            Ok(()) => Some(Ok(self.fields.current())),
            Err(error) => Some(Err(error)),
        }
    }

    /// The next complete event as an owned [`Event`].
    pub fn next_owned(&mut self) -> Option<Result<Event, DecodeError>> {
        match self.advance()? {
            Ok(()) => Some(Ok(self.fields.take_current())),
            Err(error) => Some(Err(error)),
        }
    }

    /// Ends the stream: the unfinished event and any partial line are discarded, as
    /// the standard requires at end of stream. The last event ID and the reconnection
    /// time are kept, and the decoder is ready for the next connection's bytes.
    pub fn finish(&mut self) {
        self.input = Input::default();
        self.fields.reset_event();
        self.fields.dispatched = false;
    }

    /// The last event ID string: what a client sends as `Last-Event-ID` when it
    /// reconnects. Updated when an event block ends, even one without data.
    pub fn last_event_id(&self) -> &str {
        &self.fields.last_event_id
    }

    /// Sets the last event ID, as when resuming a stream a previous decoder read.
    pub fn set_last_event_id(&mut self, id: &str) {
        self.fields.last_event_id = id.to_owned();
        self.fields.id_buffer.clone_from(&self.fields.last_event_id);
    }

    /// The reconnection time the server asked for with `retry:`, if it did.
    pub fn retry(&self) -> Option<Duration> {
        self.fields.retry.map(Duration::from_millis)
    }

    /// The reconnection time in milliseconds, exactly as sent (saturating at `u64::MAX`).
    pub fn retry_millis(&self) -> Option<u64> {
        self.fields.retry
    }

    /// How many pushed bytes wait for the end of their line.
    pub fn buffered_len(&self) -> usize {
        self.input.buf.len() - self.input.pos
    }

    /// Runs lines through the field rules until an event is ready (`Ok`), a limit is
    /// exceeded (`Err`) or the input holds no complete line (`None`).
    fn advance(&mut self) -> Option<Result<(), DecodeError>> {
        if self.fields.dispatched {
            self.fields.dispatched = false;
            self.fields.reset_event();
        }
        loop {
            let max_line = self.fields.limits.max_line;
            let line = match self.input.next_line(max_line)? {
                Ok(line) => line,
                // One error per event: a second long line in an event already
                // being discarded says nothing new.
                Err(_) if self.fields.discarding => continue,
                Err(error) => {
                    self.fields.discard();
                    return Some(Err(error));
                }
            };
            match self.fields.process_line(&self.input.buf[line]) {
                LineOutcome::Continue => {}
                LineOutcome::Dispatch => {
                    self.fields.dispatched = true;
                    return Some(Ok(()));
                }
                LineOutcome::Error(error) => return Some(Err(error)),
            }
        }
    }
}

impl Input {
    fn push(&mut self, chunk: &[u8]) {
        self.compact();
        let mut rest = chunk;
        while !rest.is_empty() {
            let room = self
                .utf8
                .max_utf8_buffer_length(rest.len())
                .unwrap_or(rest.len());
            self.buf.reserve(room);
            let (_, read, _) = self.utf8.decode_to_string(rest, &mut self.buf, false);
            rest = &rest[read..];
        }
    }

    /// Drops consumed bytes once they are at least as many as the unconsumed ones, so
    /// each byte is moved at most a constant number of times.
    fn compact(&mut self) {
        if self.pos == 0 {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            // After one huge line, do not keep (and make the UTF-8 decoder touch) a
            // buffer sized for it.
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf.shrink_to(SHRINK_ABOVE);
            }
        } else if self.pos >= self.buf.len() - self.pos {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// The range in `buf` of the next complete line, without its line ending.
    fn next_line(&mut self, max_line: usize) -> Option<Result<Range<usize>, DecodeError>> {
        loop {
            if self.skip_lf {
                let next = *self.buf.as_bytes().get(self.pos)?;
                self.skip_lf = false;
                if next == b'\n' {
                    self.pos += 1;
                }
            }
            let rest = &self.buf.as_bytes()[self.pos..];
            let Some(found) = find_line_end(&rest[self.scanned..]) else {
                self.scanned = rest.len();
                if self.skipping_line {
                    self.pos = self.buf.len();
                    self.scanned = 0;
                } else if rest.len() > max_line {
                    self.skipping_line = true;
                    self.pos = self.buf.len();
                    self.scanned = 0;
                    return Some(Err(DecodeError::LineTooLong { limit: max_line }));
                }
                return None;
            };
            let len = self.scanned + found;
            let start = self.pos;
            let mut ending = 1;
            if rest[len] == b'\r' {
                match rest.get(len + 1) {
                    Some(b'\n') => ending = 2,
                    Some(_) => {}
                    // The line is complete now; an LF that may follow is part of it.
                    None => self.skip_lf = true,
                }
            }
            self.pos += len + ending;
            self.scanned = 0;
            if self.skipping_line {
                self.skipping_line = false;
                continue;
            }
            if len > max_line {
                return Some(Err(DecodeError::LineTooLong { limit: max_line }));
            }
            return Some(Ok(start..start + len));
        }
    }
}

impl Fields {
    /// Applies one line (without its ending) to the event being built.
    fn process_line(&mut self, line: &str) -> LineOutcome {
        if line.is_empty() {
            return self.end_of_block();
        }
        if self.discarding {
            return LineOutcome::Continue;
        }
        self.event_size += line.len() + 1;
        if self.event_size > self.limits.max_event {
            self.discard();
            return LineOutcome::Error(DecodeError::EventTooLarge {
                limit: self.limits.max_event,
            });
        }
        let (name, value) = match find_colon(line) {
            Some(0) => return LineOutcome::Continue,
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match name {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            "id" if !value.contains('\0') => {
                self.id_buffer.clear();
                self.id_buffer.push_str(value);
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = Some(value.bytes().fold(0u64, |n, digit| {
                    n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
                }));
            }
            other if self.event_fields.iter().any(|field| field == other) => {
                self.event_type.clear();
                self.event_type.push_str(other);
                self.data.push_str(value);
                self.data.push('\n');
            }
            _ => {}
        }
        LineOutcome::Continue
    }

    /// A blank line: the standard's "dispatch the event" steps.
    fn end_of_block(&mut self) -> LineOutcome {
        if self.discarding {
            self.reset_event();
            return LineOutcome::Continue;
        }
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.data.is_empty() {
            self.reset_event();
            return LineOutcome::Continue;
        }
        self.data.pop();
        LineOutcome::Dispatch
    }

    /// The event just dispatched, borrowed.
    fn current(&self) -> EventRef<'_> {
        EventRef {
            event: self.event_name(),
            data: &self.data,
            id: &self.last_event_id,
        }
    }

    /// The event just dispatched, copied out; the buffers stay for the next event.
    fn take_current(&self) -> Event {
        Event::new(self.event_name(), self.data.as_str(), &self.last_event_id)
    }

    fn event_name(&self) -> &str {
        if self.event_type.is_empty() {
            "message"
        } else {
            &self.event_type
        }
    }

    /// Drops the event being built and ignores its lines up to its blank line.
    fn discard(&mut self) {
        self.data = String::new();
        self.discarding = true;
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.event_type.clear();
        self.event_size = 0;
        self.discarding = false;
    }
}

/// The position of the first CR or LF.
///
/// Token streams are made of lines a few dozen bytes long, where starting a vectorised
/// search costs more than the search; so the first words are tested eight bytes at a
/// time with the classic "has zero byte" bit trick, and longer lines go to `memchr`.
fn find_line_end(text: &[u8]) -> Option<usize> {
    const WORDS: usize = 4;
    const LO: u64 = u64::from_le_bytes([1; 8]);
    const HI: u64 = LO << 7;
    const LF: u64 = LO * b'\n' as u64;
    const CR: u64 = LO * b'\r' as u64;
    let mut words = text.chunks_exact(8);
    for (index, word) in words.by_ref().take(WORDS).enumerate() {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let v = u64::from_le_bytes(bytes);
        let (lf, cr) = (v ^ LF, v ^ CR);
        // A byte of `found` has its high bit set where the byte matched; bits above a
        // real match may be false positives, so the lowest one is exact.
        let found = ((lf.wrapping_sub(LO) & !lf) | (cr.wrapping_sub(LO) & !cr)) & HI;
        if found != 0 {
            return Some(index * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let from = (text.len() / 8).min(WORDS) * 8;
    memchr::memchr2(b'\n', b'\r', &text[from..]).map(|at| at + from)
}

/// The position of the first colon. Field names are a few bytes long, so a plain
/// scan of the line's start beats setting up a vectorised search.
fn find_colon(line: &str) -> Option<usize> {
    const SHORT: usize = 16;
    let line = line.as_bytes();
    match line.iter().take(SHORT).position(|&b| b == b':') {
        Some(at) => Some(at),
        None if line.len() > SHORT => memchr::memchr(b':', &line[SHORT..]).map(|at| at + SHORT),
        None => None,
    }
}
