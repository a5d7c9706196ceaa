//! Wire formats, as the hub sees them: something that turns a run's events into
//! bytes, one event at a time.
//!
//! The hub knows no format (the api layer defines them); it only keeps, per run and
//! format, the bytes encoded so far, so each event is encoded once per format and
//! shared by every subscriber that reads that format.

use tidewire_protocol::ChatEvent;

/// Who a run is: what an encoder may need besides the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIdentity {
    /// The run's id.
    pub run_id: String,
    /// The conversation of the answer.
    pub conversation_id: String,
    /// The assistant message the run writes.
    pub message_id: String,
    /// When the run started, in seconds since the Unix epoch.
    pub created: u64,
    /// What the route that started the run kept with it
    /// ([`RunRequest::attributes`](crate::pipeline::RunRequest::attributes)).
    pub attributes: Option<std::sync::Arc<serde_json::Value>>,
    /// The user whose run it is.
    pub user_id: String,
}

/// A wire format: makes an encoder for each run that is read in it.
pub trait WireFormat: Send + Sync + 'static {
    /// A name unique among formats: a run keeps one encoding per name.
    fn name(&self) -> &'static str;

    /// A fresh encoder for the events of `run`, from its first event on.
    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder>;
}

/// Encodes the events of one run, in order, each exactly once.
pub trait EventEncoder: Send {
    /// Appends the bytes of event number `seq` (1, 2, ...) to `out`; appending
    /// nothing leaves the event out of this format.
    fn encode(&mut self, seq: u64, event: &ChatEvent, out: &mut Vec<u8>);
}
