//! The native wire format: every event with `id: <seq>`, `event: <name>` and one
//! `data:` line of JSON, as `DESIGN.md` describes.

use tidewire_protocol::{ChatEvent, RunStarted};
use tidewire_sse::Frame;

use std::cell::RefCell;
use std::sync::Arc;

use crate::auth::Auth;
use crate::hub::{EventEncoder, RunIdentity, WireFormat};

/// Where a client attaches to a run again.
pub fn events_url(run_id: &str) -> String {
    format!("/api/runs/{run_id}/events")
}

/// The native format.
#[derive(Debug, Clone, Default)]
pub struct Native {
    auth: Option<Arc<Auth>>,
}

impl Native {
    /// The format; with `auth` on, the `run` event's `events_url` carries a token
    /// that lets a browser's `EventSource` (which sends no headers) read the run.
    pub fn new(auth: Option<Arc<Auth>>) -> Self {
        Self { auth }
    }
}

impl WireFormat for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn encoder(&self, run: &RunIdentity) -> Box<dyn EventEncoder> {
        let token = self
            .auth
            .as_ref()
            .and_then(|auth| auth.streams.mint(&run.run_id, &run.user_id));
        Box::new(NativeEncoder { token })
    }
}

thread_local! {
    /// Where each payload is serialized before it is framed: one buffer per thread,
    /// reused, rather than one per run, which a quiet run would hold for nothing.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer that grew past this for one large event is let go after it.
const SCRATCH_KEPT: usize = 64 * 1024;

struct NativeEncoder {
    /// The `access_token` of the run's `events_url`, when one is needed.
    token: Option<String>,
}

impl EventEncoder for NativeEncoder {
    fn encode(&mut self, seq: u64, event: &ChatEvent, out: &mut Vec<u8>) {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            self.frame(seq, event, scratch, out);
            if scratch.capacity() > SCRATCH_KEPT {
                *scratch = Vec::new();
            }
        });
    }
}

impl NativeEncoder {
    fn frame(&self, seq: u64, event: &ChatEvent, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
        // Serializing the protocol's plain structs into memory cannot fail, and JSON
        // escapes every line break, so the data is one line.
        let _ = match event {
            // The hub does not know URLs: the run event gets its own here.
            ChatEvent::Run(run) => serde_json::to_writer(
                &mut *scratch,
                &RunStarted {
                    events_url: match &self.token {
                        Some(token) => {
                            format!("{}?access_token={token}", events_url(&run.run_id))
                        }
                        None => events_url(&run.run_id),
                    },
                    ..(**run).clone()
                },
            ),
            other => other.write_data(scratch),
        };
        // serde_json writes UTF-8, so the check passes; `from_utf8`'s check reads
        // ASCII a word at a time, the lossy one a byte at a time (1.7 % of a paced
        // stream's server instructions).
        let data = match std::str::from_utf8(scratch) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(scratch),
        };
        let mut digits = [0u8; 20];
        let id = format_decimal(seq, &mut digits);
        // Ids are digits and names fixed identifiers: neither can hold CR or LF.
        let _ = Frame::new(&data).id(id).event(event.name()).encode(out);
    }
}

/// `n` in decimal, written into `buf`, without allocating.
fn format_decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use tidewire_protocol::MessageStatus;

    use super::*;

    #[test]
    fn events_are_framed_with_id_name_and_one_data_line() {
        let identity = RunIdentity {
            run_id: "r1".into(),
            conversation_id: "c".into(),
            message_id: "m".into(),
            created: 0,
            attributes: None,
            user_id: crate::store::LOCAL_USER.into(),
        };
        let mut encoder = Native::default().encoder(&identity);
        let mut out = Vec::new();
        encoder.encode(
            1,
            &ChatEvent::Run(Box::new(RunStarted {
                run_id: "r1".into(),
                conversation_id: "c".into(),
                message_id: "m".into(),
                events_url: String::new(),
            })),
            &mut out,
        );
        encoder.encode(2, &ChatEvent::token("a\nb"), &mut out);
        encoder.encode(3, &ChatEvent::done(MessageStatus::Complete), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id: 1\nevent: run\ndata: {\"run_id\":\"r1\",\"conversation_id\":\"c\",\"message_id\":\"m\",\"events_url\":\"/api/runs/r1/events\"}\n\n\
             id: 2\nevent: token\ndata: {\"token\":\"a\\nb\"}\n\n\
             id: 3\nevent: done\ndata: {\"status\":\"complete\"}\n\n"
        );
    }
}
