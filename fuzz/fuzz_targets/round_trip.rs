//! Encoding then decoding any events, split anywhere, gives them back.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tidewire_sse::{Decoder, Frame};

#[derive(Debug, Arbitrary)]
struct Event {
    data: String,
    id: Option<String>,
    event: Option<String>,
    retry: Option<u32>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    events: Vec<Event>,
    cuts: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut last_id = String::new();
    for event in &input.events {
        let mut frame = Frame::new(&event.data);
        frame.id = event.id.as_deref();
        frame.event = event.event.as_deref();
        frame.retry = event.retry.map(|r| std::time::Duration::from_millis(u64::from(r)));
        let before = wire.len();
        match frame.encode(&mut wire) {
            Ok(()) => {}
            Err(_) => {
                // Refused: nothing written, and the refusal was right.
                assert_eq!(wire.len(), before);
                let bad_id = event.id.as_deref().is_some_and(|id| id.contains(['\r', '\n', '\0']));
                let bad_event = event.event.as_deref().is_some_and(|e| e.contains(['\r', '\n']));
                assert!(bad_id || bad_event);
                continue;
            }
        }
        if let Some(id) = &event.id {
            last_id.clone_from(id);
        }
        let name = event.event.as_deref().filter(|e| !e.is_empty()).unwrap_or("message").to_owned();
        let data = event.data.replace("\r\n", "\n").replace('\r', "\n");
        expected.push((name, data, last_id.clone()));
    }

    let mut at: Vec<usize> = input.cuts.iter().map(|&c| usize::from(c) % (wire.len() + 1)).collect();
    at.sort_unstable();
    let mut decoder = Decoder::new();
    let mut got = Vec::new();
    let mut start = 0;
    at.push(wire.len());
    for cut in at {
        decoder.push(&wire[start..cut]);
        start = cut;
        while let Some(next) = decoder.next_event() {
            let e = next.expect("encoded events are within the default limits");
            got.push((e.event.to_owned(), e.data.to_owned(), e.id.to_owned()));
        }
    }
    assert_eq!(got, expected);
    assert_eq!(decoder.last_event_id(), last_id);
});
