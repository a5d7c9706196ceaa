//! The async adapter over a stream of byte chunks.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "stream")]

use futures::StreamExt;
use futures::executor::block_on;
use futures::stream;
use tidewire_sse::{DecodeError, Decoder, EventStream, Limits, StreamError};

#[test]
fn decodes_chunks_into_events_and_keeps_the_last_id() {
    let chunks: Vec<Result<&[u8], std::io::Error>> = vec![
        Ok(b"id: 1\nevent: tok"),
        Ok(b"en\ndata: a\r"),
        Ok(b"\n\r\nid: 2\ndata: b\n\ndata: unfinished"),
    ];
    let mut events = EventStream::new(stream::iter(chunks));
    let first = block_on(events.next()).unwrap().unwrap();
    assert_eq!(
        (first.event(), first.data(), first.id()),
        ("token", "a", "1")
    );
    let second = block_on(events.next()).unwrap().unwrap();
    assert_eq!(
        (second.event(), second.data(), second.id()),
        ("message", "b", "2")
    );
    assert!(block_on(events.next()).is_none());
    assert_eq!(events.last_event_id(), "2");
}

#[test]
fn transport_errors_and_limit_errors_are_items() {
    let chunks: Vec<Result<Vec<u8>, &str>> = vec![
        Ok(b"data: 0123456789\n\n".to_vec()),
        Ok(b"data: ok\n\n".to_vec()),
        Err("reset"),
    ];
    let decoder = Decoder::with_limits(Limits {
        max_line: 8,
        max_event: 64,
    });
    let items: Vec<_> =
        block_on(EventStream::with_decoder(stream::iter(chunks), decoder).collect());
    assert!(matches!(
        items[0],
        Err(StreamError::Decode(DecodeError::LineTooLong { limit: 8 }))
    ));
    assert_eq!(items[1].as_ref().unwrap().data(), "ok");
    assert!(matches!(items[2], Err(StreamError::Transport("reset"))));
}
