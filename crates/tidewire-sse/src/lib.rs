//! tidewire-sse: the `text/event-stream` wire format, exact and fast.
//!
//! - [`Decoder`]: incremental and sans-I/O. Push bytes split anywhere, pull events.
//!   It follows the WHATWG HTML rules for parsing and interpreting an event stream,
//!   with configurable [`Limits`] so no input grows memory without bound.
//! - [`Frame`]: the encoder, writing into a reusable buffer.
//! - `EventStream` (feature `stream`): a `Stream` of byte chunks into a `Stream` of events.
//!
//! ```
//! use tidewire_sse::{Decoder, Frame};
//!
//! let mut wire = Vec::new();
//! Frame::new("line one\nline two").id("1").event("token").encode(&mut wire)?;
//!
//! let mut decoder = Decoder::new();
//! for byte in &wire {
//!     decoder.push(std::slice::from_ref(byte));
//! }
//! let event = decoder.next_owned().expect("one event")?;
//! assert_eq!(event.data(), "line one\nline two");
//! assert_eq!(event.event(), "token");
//! assert_eq!(decoder.last_event_id(), "1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod decoder;
mod encoder;
mod event;
#[cfg(feature = "stream")]
mod stream;

pub use decoder::{DecodeError, Decoder, Limits};
pub use encoder::{EncodeError, Frame, encode_comment, encode_retry};
pub use event::{Event, EventRef};
#[cfg(feature = "stream")]
pub use stream::{EventStream, StreamError};
