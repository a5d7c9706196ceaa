//! tidewire-protocol: the vocabulary shared by the tidewire server and its clients.
//!
//! - [`ChatEvent`]: every event of a run's stream, with its native wire name and JSON
//!   payload (see `DESIGN.md`, "The event model").
//! - [`Answer`]: the answer so far, folded from the events.
//! - [`api`]: the JSON bodies of the native HTTP API.
//! - [`documents`]: the JSON bodies of the documents API.
//!
//! The crate knows nothing of HTTP or of the server, so a client can depend on it alone.

mod answer;
pub mod api;
pub mod documents;
mod event;

pub use answer::Answer;

pub use event::{
    ChatEvent, ClientToolCall, Done, ErrorEvent, EventParseError, FollowUpQuestions, MessageStatus,
    Metadata, QualityScore, RunStarted, Source, Sources, Stage, Timing, Token, ToolCallRecord,
    ToolFinished, ToolStarted, Usage,
};
