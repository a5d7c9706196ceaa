//! The events the decoder dispatches.

use compact_str::CompactString;

/// A dispatched event, borrowed from the [`Decoder`](crate::Decoder) that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventRef<'a> {
    /// The event type: the last `event:` field of the block, or `message`.
    pub event: &'a str,
    /// The `data:` lines of the block joined with LF.
    pub data: &'a str,
    /// The last event ID in effect when the event was dispatched (`""` if none), as a
    /// browser's `MessageEvent.lastEventId`.
    pub id: &'a str,
}

impl EventRef<'_> {
    /// Copies the event into an owned [`Event`].
    pub fn to_event(&self) -> Event {
        Event::new(self.event, self.data, self.id)
    }
}

/// A dispatched event that owns its text.
///
/// Event types and ids are short in practice, so they are stored inline without a
/// heap allocation; an owned event costs one allocation, for its data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Event {
    event: CompactString,
    data: String,
    id: CompactString,
}

impl Event {
    /// An event of type `event` with `data`, dispatched when the last event ID was `id`.
    pub fn new(event: &str, data: impl Into<String>, id: &str) -> Self {
        Self {
            event: CompactString::new(event),
            data: data.into(),
            id: CompactString::new(id),
        }
    }

    /// The event type: the last `event:` field of the block, or `message`.
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The `data:` lines of the block joined with LF.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The last event ID in effect when the event was dispatched (`""` if none), as a
    /// browser's `MessageEvent.lastEventId`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Takes the data out of the event.
    pub fn into_data(self) -> String {
        self.data
    }

    /// Borrows the event.
    pub fn as_event_ref(&self) -> EventRef<'_> {
        EventRef {
            event: &self.event,
            data: &self.data,
            id: &self.id,
        }
    }
}
