//! The encoder's exact output and its refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{decode, ev};
use tidewire_sse::{EncodeError, Frame, encode_comment, encode_retry};

fn encoded(frame: Frame<'_>) -> String {
    let mut out = Vec::new();
    frame.encode(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn writes_every_field_in_order() {
    let frame = Frame::new("{\"token\":\"hi\"}")
        .id("42")
        .event("token")
        .retry(Duration::from_millis(3000));
    assert_eq!(
        encoded(frame),
        "id: 42\nevent: token\nretry: 3000\ndata: {\"token\":\"hi\"}\n\n"
    );
}

#[test]
fn data_with_line_breaks_becomes_several_data_lines() {
    assert_eq!(
        encoded(Frame::new("a\nb\r\nc\rd")),
        "data: a\ndata: b\ndata: c\ndata: d\n\n"
    );
    assert_eq!(encoded(Frame::new("a\n")), "data: a\ndata: \n\n");
    assert_eq!(
        decode(encoded(Frame::new("a\nb\r\nc\rd\n")).as_bytes()),
        [ev("message", "a\nb\nc\nd\n", "")]
    );
}

#[test]
fn empty_data_is_still_sent() {
    assert_eq!(encoded(Frame::new("")), "data: \n\n");
    assert_eq!(
        decode(encoded(Frame::new("")).as_bytes()),
        [ev("message", "", "")]
    );
}

#[test]
fn leading_spaces_of_data_survive() {
    let wire = encoded(Frame::new("  two spaces"));
    assert_eq!(decode(wire.as_bytes()), [ev("message", "  two spaces", "")]);
}

#[test]
fn an_id_with_cr_lf_or_null_is_refused_and_nothing_is_written() {
    for id in ["a\nb", "a\rb", "a\0b"] {
        let mut out = b"kept".to_vec();
        assert_eq!(
            Frame::new("x").id(id).encode(&mut out),
            Err(EncodeError::InvalidId)
        );
        assert_eq!(out, b"kept");
    }
}

#[test]
fn an_event_name_with_cr_or_lf_is_refused() {
    for name in ["a\nb", "a\rb"] {
        let mut out = Vec::new();
        assert_eq!(
            Frame::new("x").event(name).encode(&mut out),
            Err(EncodeError::InvalidEventName)
        );
        assert!(out.is_empty());
    }
}

#[test]
fn comments_split_on_line_breaks() {
    let mut out = Vec::new();
    encode_comment(&mut out, "keepalive");
    encode_comment(&mut out, "a\nb");
    assert_eq!(out, b": keepalive\n: a\n: b\n");
    assert!(decode(&out).is_empty());
}

#[test]
fn a_lone_retry_sets_the_reconnection_time() {
    let mut out = Vec::new();
    encode_retry(&mut out, Duration::from_secs(2));
    assert_eq!(out, b"retry: 2000\n\n");
    let mut decoder = tidewire_sse::Decoder::new();
    decoder.push(&out);
    assert!(decoder.next_event().is_none());
    assert_eq!(decoder.retry_millis(), Some(2000));
}

#[test]
fn the_buffer_is_reused_without_growing() {
    let mut out = Vec::with_capacity(256);
    let capacity = out.capacity();
    for i in 0..1000u32 {
        out.clear();
        let id = i.to_string();
        Frame::new("{\"token\":\"word\"}")
            .id(&id)
            .event("token")
            .encode(&mut out)
            .unwrap();
    }
    assert_eq!(out.capacity(), capacity);
}
