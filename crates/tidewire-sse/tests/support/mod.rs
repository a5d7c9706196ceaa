//! Helpers shared by the decoder tests.
#![allow(dead_code)]

use tidewire_sse::{DecodeError, Decoder, Event};

/// One thing the decoder produced, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Event(Event),
    Error(DecodeError),
}

/// An event as a test writes it: (type, data, last event id).
pub fn ev(event: &str, data: &str, id: &str) -> Out {
    Out::Event(Event::new(event, data, id))
}

/// Feeds `chunks` one by one, draining events after each, then ends the stream.
pub fn decode_chunks<'a>(
    decoder: &mut Decoder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Out> {
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        drain(decoder, &mut out);
    }
    decoder.finish();
    drain(decoder, &mut out);
    out
}

pub fn drain(decoder: &mut Decoder, out: &mut Vec<Out>) {
    while let Some(next) = decoder.next_owned() {
        out.push(match next {
            Ok(event) => Out::Event(event),
            Err(error) => Out::Error(error),
        });
    }
}

/// Decodes the whole input in one push.
pub fn decode(input: &[u8]) -> Vec<Out> {
    decode_chunks(&mut Decoder::new(), [input])
}

/// Decodes the input one byte at a time.
pub fn decode_bytewise(input: &[u8]) -> Vec<Out> {
    decode_chunks(&mut Decoder::new(), input.chunks(1))
}

/// Asserts the events of `input` whole, byte by byte and split at every position.
pub fn assert_events(input: &[u8], expected: &[Out]) {
    assert_eq!(decode(input), expected, "whole input");
    assert_eq!(decode_bytewise(input), expected, "one byte at a time");
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(
            decode_chunks(&mut Decoder::new(), [a, b]),
            expected,
            "split at {at}"
        );
    }
}
