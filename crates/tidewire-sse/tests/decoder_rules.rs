//! One test per rule of the WHATWG event stream format, and the bug classes other
//! SSE libraries are known for, as regression tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Out, assert_events, decode, decode_chunks, ev};
use tidewire_sse::{DecodeError, Decoder, Limits};

#[test]
fn simple_event_defaults_to_message() {
    assert_events(b"data: hello\n\n", &[ev("message", "hello", "")]);
}

#[test]
fn lines_end_with_lf_crlf_or_lone_cr() {
    let expected = [
        ev("message", "a", ""),
        ev("message", "b", ""),
        ev("message", "c", ""),
    ];
    assert_events(b"data: a\n\ndata: b\r\n\r\ndata: c\r\r", &expected);
    assert_events(b"data: a\r\n\ndata: b\r\r\ndata: c\n\r", &expected);
}

#[test]
fn crlf_split_across_chunks_is_one_line_ending() {
    let mut decoder = Decoder::new();
    let out = decode_chunks(
        &mut decoder,
        [&b"data: a\r"[..], b"\n", b"data: b\r", b"\n\r", b"\n"],
    );
    assert_eq!(out, [ev("message", "a\nb", "")]);
}

#[test]
fn bom_is_stripped_once_at_the_start_only() {
    assert_events(b"\xEF\xBB\xBFdata: a\n\n", &[ev("message", "a", "")]);
    // A second BOM is part of the first field name, so the line is an unknown field.
    assert_events(
        b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n",
        &[ev("message", "b", "")],
    );
    // A BOM later in the stream is not stripped.
    assert_events(
        b"data: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n",
        &[ev("message", "a", ""), ev("message", "c", "")],
    );
}

#[test]
fn a_partial_bom_prefix_is_ordinary_input() {
    // 0xEF 0xBB followed by something else is not a BOM: it is invalid UTF-8 in a
    // field name, so that line is an unknown field.
    assert_events(b"\xEF\xBBdata: a\n\ndata: b\n\n", &[ev("message", "b", "")]);
}

#[test]
fn comment_lines_are_ignored() {
    assert_events(
        b": keepalive\ndata: a\n:\n: another\ndata: b\n\n",
        &[ev("message", "a\nb", "")],
    );
}

#[test]
fn a_line_without_colon_is_a_field_with_an_empty_value() {
    assert_events(b"data\n\n", &[ev("message", "", "")]);
    assert_events(b"data\ndata\n\n", &[ev("message", "\n", "")]);
    assert_events(b"id: 5\nid\ndata: x\n\n", &[ev("message", "x", "")]);
    assert_events(b"event: a\nevent\ndata: x\n\n", &[ev("message", "x", "")]);
}

#[test]
fn only_one_leading_space_of_the_value_is_removed() {
    assert_events(
        b"data:no space\ndata: one\ndata:  two\n\n",
        &[ev("message", "no space\none\n two", "")],
    );
}

#[test]
fn data_lines_are_joined_with_lf() {
    assert_events(
        b"data: a\ndata: b\ndata: c\n\n",
        &[ev("message", "a\nb\nc", "")],
    );
    assert_events(
        b"data: a\ndata:\ndata: c\n\n",
        &[ev("message", "a\n\nc", "")],
    );
}

#[test]
fn an_empty_data_buffer_is_not_dispatched() {
    assert_events(b"event: x\n\n\n\n", &[]);
    assert_events(
        b"id: 1\nevent: x\n\ndata: y\n\n",
        &[ev("message", "y", "1")],
    );
}

#[test]
fn one_empty_data_line_is_dispatched_with_empty_data() {
    assert_events(b"data:\n\n", &[ev("message", "", "")]);
    assert_events(b"data: \n\n", &[ev("message", "", "")]);
}

#[test]
fn event_type_resets_after_each_dispatch() {
    assert_events(
        b"event: token\ndata: a\n\ndata: b\n\nevent: done\ndata: c\n\n",
        &[
            ev("token", "a", ""),
            ev("message", "b", ""),
            ev("done", "c", ""),
        ],
    );
}

#[test]
fn the_last_event_field_wins() {
    assert_events(b"event: a\nevent: b\ndata: x\n\n", &[ev("b", "x", "")]);
}

#[test]
fn an_empty_event_field_means_message() {
    assert_events(b"event:\ndata: x\n\n", &[ev("message", "x", "")]);
}

#[test]
fn last_event_id_persists_across_events() {
    assert_events(
        b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n",
        &[
            ev("message", "a", "1"),
            ev("message", "b", "1"),
            ev("message", "c", "2"),
        ],
    );
}

#[test]
fn an_id_only_block_updates_the_last_event_id() {
    let mut decoder = Decoder::new();
    let out = decode_chunks(
        &mut decoder,
        [&b"id: 1\ndata: a\n\nid: 9\n\ndata: b\n\n"[..]],
    );
    assert_eq!(out, [ev("message", "a", "1"), ev("message", "b", "9")]);
    assert_eq!(decoder.last_event_id(), "9");
}

#[test]
fn an_empty_id_resets_the_last_event_id() {
    assert_events(
        b"id: 1\ndata: a\n\nid\ndata: b\n\nid: 3\ndata: c\n\nid:\ndata: d\n\n",
        &[
            ev("message", "a", "1"),
            ev("message", "b", ""),
            ev("message", "c", "3"),
            ev("message", "d", ""),
        ],
    );
}

#[test]
fn an_id_containing_null_is_ignored() {
    assert_events(
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        &[ev("message", "a", "1"), ev("message", "b", "1")],
    );
}

#[test]
fn the_id_of_an_unfinished_block_is_not_the_last_event_id() {
    let mut decoder = Decoder::new();
    decode_chunks(&mut decoder, [&b"id: 1\ndata: a\n\nid: 2\ndata: b\n"[..]]);
    assert_eq!(decoder.last_event_id(), "1");
}

fn retry_after(input: &[u8]) -> Option<u64> {
    let mut decoder = Decoder::new();
    decode_chunks(&mut decoder, [input]);
    decoder.retry_millis()
}

#[test]
fn retry_is_accepted_only_when_all_ascii_digits() {
    assert_eq!(retry_after(b"retry: 5000\n"), Some(5000));
    assert_eq!(retry_after(b"retry: 12345678910\n"), Some(12_345_678_910));
    assert_eq!(retry_after(b"retry:0\n"), Some(0));
    for ignored in ["+5", "-1", "1000x", "1.5", " 10", "", "1e3", "\u{0665}"] {
        let line = format!("retry: {ignored}\n");
        assert_eq!(
            retry_after(line.as_bytes()),
            None,
            "retry value {ignored:?}"
        );
    }
    assert_eq!(retry_after(b"retry: 100\nretry: x\n"), Some(100));
    assert_eq!(retry_after(b"retry\n"), None);
}

#[test]
fn retry_applies_without_a_blank_line_and_dispatches_nothing() {
    let mut decoder = Decoder::new();
    let out = decode_chunks(&mut decoder, [&b"retry: 250\n"[..]]);
    assert!(out.is_empty());
    assert_eq!(decoder.retry(), Some(std::time::Duration::from_millis(250)));
}

#[test]
fn huge_retry_saturates() {
    assert_eq!(
        retry_after(b"retry: 99999999999999999999999999\n"),
        Some(u64::MAX)
    );
}

#[test]
fn unknown_fields_are_ignored() {
    assert_events(
        b"foo: bar\ndata: a\nDATA: b\nData: c\n data: d\n\n",
        &[ev("message", "a", "")],
    );
}

#[test]
fn field_names_are_exact_and_case_sensitive() {
    assert_events(b"Event: x\ndata: a\n\n", &[ev("message", "a", "")]);
}

#[test]
fn an_unfinished_event_at_end_of_stream_is_discarded() {
    assert_events(b"data: a\n\ndata: b\n", &[ev("message", "a", "")]);
    assert_events(b"data: a\n\ndata: b", &[ev("message", "a", "")]);
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    assert_events(b"data: a\xFFb\n\n", &[ev("message", "a\u{FFFD}b", "")]);
    // A truncated sequence before the line ending.
    assert_events(b"data: a\xE2\x82\n\n", &[ev("message", "a\u{FFFD}", "")]);
    assert_events(
        b"event: t\xC3\nid: \xF0\ndata: x\n\n",
        &[ev("t\u{FFFD}", "x", "\u{FFFD}")],
    );
}

#[test]
fn utf8_split_across_chunks_is_decoded_whole() {
    let text = "data: héllo wörld 🌊 中文\n\n".as_bytes();
    let expected = [ev("message", "héllo wörld 🌊 中文", "")];
    assert_events(text, &expected);
}

#[test]
fn colon_in_the_value_is_kept() {
    assert_events(b"data: a: b:c\n\n", &[ev("message", "a: b:c", "")]);
    assert_events(b"data::x\n\n", &[ev("message", ":x", "")]);
}

#[test]
fn event_is_dispatched_as_soon_as_its_blank_line_ends() {
    let mut decoder = Decoder::new();
    decoder.push(b"data: a\n");
    assert!(decoder.next_event().is_none());
    decoder.push(b"\n");
    assert_eq!(decoder.next_event().unwrap().unwrap().data, "a");
}

#[test]
fn a_lone_cr_at_the_end_of_a_chunk_dispatches_at_once() {
    let mut decoder = Decoder::new();
    decoder.push(b"data: a\r\r");
    assert_eq!(decoder.next_event().unwrap().unwrap().data, "a");
    // The LF that follows belongs to the CR before it, not a new blank line.
    decoder.push(b"\ndata: b\r");
    assert!(decoder.next_event().is_none());
    decoder.push(b"\n\r\n");
    assert_eq!(decoder.next_event().unwrap().unwrap().data, "b");
    assert!(decoder.next_event().is_none());
}

#[test]
fn reset_after_finish_keeps_id_and_retry_and_strips_a_new_bom() {
    let mut decoder = Decoder::new();
    decode_chunks(
        &mut decoder,
        [&b"retry: 10\nid: 4\ndata: a\n\ndata: half"[..]],
    );
    let out = decode_chunks(&mut decoder, [&b"\xEF\xBB\xBFdata: b\n\n"[..]]);
    assert_eq!(out, [ev("message", "b", "4")]);
    assert_eq!(decoder.retry_millis(), Some(10));
}

#[test]
fn a_line_over_the_limit_is_an_error_and_the_event_is_dropped() {
    let limits = Limits {
        max_line: 16,
        max_event: 1024,
    };
    let input = b"data: short\n\ndata: 0123456789abcdefXYZ\ndata: rest\n\ndata: after\n\n";
    let expected = [
        ev("message", "short", ""),
        Out::Error(DecodeError::LineTooLong { limit: 16 }),
        ev("message", "after", ""),
    ];
    let mut whole = Decoder::with_limits(limits);
    assert_eq!(decode_chunks(&mut whole, [&input[..]]), expected);
    let mut bytewise = Decoder::with_limits(limits);
    assert_eq!(decode_chunks(&mut bytewise, input.chunks(1)), expected);
}

#[test]
fn an_unterminated_line_over_the_limit_fails_before_its_end_arrives() {
    let mut decoder = Decoder::with_limits(Limits {
        max_line: 100,
        max_event: 1000,
    });
    for _ in 0..1000 {
        decoder.push(&[b'x'; 64]);
        if let Some(next) = decoder.next_event() {
            assert_eq!(next.unwrap_err(), DecodeError::LineTooLong { limit: 100 });
            break;
        }
    }
    // The rest of the line is dropped, not buffered.
    decoder.push(&[b'x'; 4096]);
    assert!(decoder.next_event().is_none());
    assert!(decoder.buffered_len() < 200);
    // The blank line ends the broken event; the next one decodes.
    decoder.push(b"\n\ndata: ok\n\n");
    assert_eq!(decoder.next_event().unwrap().unwrap().data, "ok");
}

#[test]
fn many_empty_data_lines_cannot_bypass_the_event_limit() {
    let mut decoder = Decoder::with_limits(Limits {
        max_line: 64,
        max_event: 1000,
    });
    let mut input = b"data:\n".repeat(100_000);
    input.extend_from_slice(b"\ndata: next\n\n");
    let out = decode_chunks(&mut decoder, input.chunks(4096));
    assert_eq!(
        out,
        [
            Out::Error(DecodeError::EventTooLarge { limit: 1000 }),
            ev("message", "next", "")
        ]
    );
}

#[test]
fn comments_count_toward_the_event_limit() {
    let mut decoder = Decoder::with_limits(Limits {
        max_line: 64,
        max_event: 100,
    });
    let out = decode_chunks(&mut decoder, [&b": ping\n".repeat(50)[..]]);
    assert_eq!(out, [Out::Error(DecodeError::EventTooLarge { limit: 100 })]);
}

#[test]
fn a_large_event_in_small_chunks_is_decoded() {
    let line = "x".repeat(1000);
    let mut input = Vec::new();
    for _ in 0..10_000 {
        input.extend_from_slice(b"data: ");
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    input.push(b'\n');
    let mut decoder = Decoder::new();
    let out = decode_chunks(&mut decoder, input.chunks(64));
    let [Out::Event(event)] = &out[..] else {
        panic!("one event expected, got {}", out.len())
    };
    assert_eq!(event.data().len(), 10_000 * 1001 - 1);
}

#[test]
fn a_single_ten_megabyte_line_in_small_chunks_is_linear() {
    // Quadratic rescanning would take minutes here; linear work takes milliseconds.
    let mut input = b"data: ".to_vec();
    input.resize(10 * 1024 * 1024, b'y');
    input.extend_from_slice(b"\n\n");
    let mut decoder = Decoder::with_limits(Limits {
        max_line: 16 * 1024 * 1024,
        max_event: 16 * 1024 * 1024,
    });
    let out = decode_chunks(&mut decoder, input.chunks(64));
    let [Out::Event(event)] = &out[..] else {
        panic!("one event expected")
    };
    assert_eq!(event.data().len(), 10 * 1024 * 1024 - 6);
}

#[test]
fn borrowed_events_match_owned_events() {
    let mut decoder = Decoder::new();
    decoder.push(b"id: 3\nevent: token\ndata: {\"token\":\"a\"}\n\ndata: b\n\n");
    let first = decoder.next_event().unwrap().unwrap().to_event();
    let second = decoder.next_event().unwrap().unwrap().to_event();
    assert_eq!(
        decode(b"id: 3\nevent: token\ndata: {\"token\":\"a\"}\n\ndata: b\n\n"),
        [Out::Event(first), Out::Event(second)]
    );
}

#[test]
fn whatwg_spec_examples() {
    // The examples of the HTML standard's event stream section.
    assert_events(
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        &[
            ev("message", "first event", "1"),
            ev("message", "second event", ""),
            ev("message", " third event", ""),
        ],
    );
    assert_events(
        b"data\n\ndata\ndata\n\ndata:",
        &[ev("message", "", ""), ev("message", "\n", "")],
    );
    assert_events(
        b"data:test\n\ndata: test\n\n",
        &[ev("message", "test", ""), ev("message", "test", "")],
    );
}

#[test]
fn a_field_read_as_an_event_becomes_one_and_others_stay_ignored() {
    let mut decoder = Decoder::new().field_as_event("error");
    let out = decode_chunks(
        &mut decoder,
        [&b"data: {\"a\":1}\n\nerror: {\"message\":\"boom\"}\n\nwarning: x\ndata: b\n\n"[..]],
    );
    assert_eq!(
        out,
        [
            ev("message", "{\"a\":1}", ""),
            ev("error", "{\"message\":\"boom\"}", ""),
            ev("message", "b", "")
        ]
    );
    // Without the option the field is ignored, as the standard says.
    assert_events(b"error: {\"message\":\"boom\"}\n\n", &[]);
}
