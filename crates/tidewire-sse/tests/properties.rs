//! Property tests: chunking never changes the events, and encoding then decoding is
//! the identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use proptest::prelude::*;
use support::{Out, decode_chunks};
use tidewire_sse::{Decoder, Event, Frame, Limits};

/// Pieces that exercise the format's structure, mixed with arbitrary bytes.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"data".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"id:".to_vec()),
        Just(b"id: ".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"retry: ".to_vec()),
        Just(b":".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\0".to_vec()),
        Just("é🌊".as_bytes().to_vec()),
        Just(b"12".to_vec()),
        "[a-z]{1,8}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 1..6),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(piece(), 0..60).prop_map(|pieces| pieces.concat())
}

/// Cuts `input` at the given positions (taken modulo its length).
fn split<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in at {
        chunks.push(&input[start..cut]);
        start = cut;
    }
    chunks.push(&input[start..]);
    chunks
}

fn decode_with(limits: Limits, chunks: Vec<&[u8]>) -> (Vec<Out>, String, Option<u64>) {
    let mut decoder = Decoder::with_limits(limits);
    let out = decode_chunks(&mut decoder, chunks);
    (
        out,
        decoder.last_event_id().to_owned(),
        decoder.retry_millis(),
    )
}

/// A frame to encode: data, optional id, optional event name, optional retry.
fn frame() -> impl Strategy<Value = (String, Option<String>, Option<String>, Option<u64>)> {
    (
        prop_oneof![any::<String>(), "[a\r\n ]{0,12}", Just(String::new())],
        proptest::option::of("[^\r\n\0]{0,10}"),
        proptest::option::of("[^\r\n]{0,10}"),
        proptest::option::of(any::<u64>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_split_gives_the_same_events(input in stream(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let limits = Limits::default();
        let whole = decode_with(limits, vec![&input[..]]);
        prop_assert_eq!(&decode_with(limits, split(&input, &cuts)), &whole);
        prop_assert_eq!(&decode_with(limits, input.chunks(1).collect()), &whole);
    }

    #[test]
    fn any_split_gives_the_same_errors_under_small_limits(input in stream(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let limits = Limits { max_line: 12, max_event: 40 };
        let whole = decode_with(limits, vec![&input[..]]);
        prop_assert_eq!(&decode_with(limits, split(&input, &cuts)), &whole);
        prop_assert_eq!(&decode_with(limits, input.chunks(1).collect()), &whole);
    }

    #[test]
    fn encode_then_decode_is_the_identity(frames in proptest::collection::vec(frame(), 1..8), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let mut last_id = String::new();
        for (data, id, event, retry) in &frames {
            let mut frame = Frame::new(data);
            frame.id = id.as_deref();
            frame.event = event.as_deref();
            frame.retry = retry.map(std::time::Duration::from_millis);
            frame.encode(&mut wire).unwrap();
            if let Some(id) = id {
                last_id.clone_from(id);
            }
            let event = event.as_deref().filter(|e| !e.is_empty()).unwrap_or("message");
            // CR and CRLF in data come back as LF: the format has one line separator.
            let data = data.replace("\r\n", "\n").replace('\r', "\n");
            expected.push(Out::Event(Event::new(event, data, &last_id)));
        }
        let (out, final_id, retry) = decode_with(Limits::default(), split(&wire, &cuts));
        prop_assert_eq!(out, expected);
        prop_assert_eq!(final_id, last_id);
        prop_assert_eq!(retry, frames.iter().rev().find_map(|f| f.3));
    }
}
