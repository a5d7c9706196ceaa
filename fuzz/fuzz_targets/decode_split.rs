//! Any split of any input gives the same events, errors and reconnection state as the
//! whole input; no input panics or grows memory past the limits.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tidewire_sse::{Decoder, Limits};

#[derive(Debug, Arbitrary)]
struct Input {
    bytes: Vec<u8>,
    cuts: Vec<u16>,
    small_limits: bool,
}

type Outcome = (Vec<Result<(String, String, String), tidewire_sse::DecodeError>>, String, Option<u64>);

fn decode(limits: Limits, chunks: &[&[u8]]) -> Outcome {
    let mut decoder = Decoder::with_limits(limits);
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(next) = decoder.next_event() {
            out.push(next.map(|e| (e.event.to_owned(), e.data.to_owned(), e.id.to_owned())));
        }
        assert!(decoder.buffered_len() <= limits.max_line + chunk.len() + 4);
    }
    decoder.finish();
    (out, decoder.last_event_id().to_owned(), decoder.retry_millis())
}

fuzz_target!(|input: Input| {
    let limits = if input.small_limits {
        Limits { max_line: 16, max_event: 64 }
    } else {
        Limits::default()
    };
    let bytes = &input.bytes[..];
    let whole = decode(limits, &[bytes]);

    let mut at: Vec<usize> = input.cuts.iter().map(|&c| usize::from(c) % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in at {
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    assert_eq!(decode(limits, &chunks), whole);

    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(decode(limits, &bytewise), whole);
});
