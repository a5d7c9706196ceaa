//! The shared parser test vectors of `vectors.json`, run through [`Decoder`].
//!
//! The same file drives the browser client's parser (`crates/tidewire/assets/tidewire.js`,
//! tested by `web/test/parser.test.mjs`), so both parsers agree on every rule of the
//! WHATWG event stream format that `decoder_rules.rs` tests with plain events.
//!
//! Each vector is `{"name", "input", "events": [{"type", "data", "id"}]}`, with two
//! optional keys checked after the stream: `"last_event_id"` (a string) and `"retry"`
//! (milliseconds, or `null` for none). `input` holds bytes: each character U+0000 to
//! U+00FF of the JSON string is one byte (the latin1 encoding of the bytes), so BOMs and
//! invalid UTF-8 can be written.
//!
//! Left out, because they are not plain events or the two parsers may rightly differ:
//! - limit errors (`Limits`), `field_as_event` and `finish` followed by a new stream:
//!   features of this decoder only, tested in `decoder_rules.rs`;
//! - a huge `retry:` value: this decoder saturates at `u64::MAX`, JavaScript keeps a
//!   float (the standard says neither).
//!
//! Invalid UTF-8 is in: both parsers decode the whole stream with the WHATWG Encoding
//! Standard's UTF-8 decoder (`encoding_rs` here, `TextDecoder` in JavaScript) before
//! splitting lines, so they replace exactly the same bytes; no vector had to be left
//! out for a difference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Out, decode_chunks, ev};
use tidewire_sse::Decoder;

const VECTORS: &str = include_str!("vectors.json");

/// One test vector.
struct Vector {
    name: String,
    input: Vec<u8>,
    events: Vec<Out>,
    last_event_id: Option<String>,
    /// `Some(None)`: the vector says there is no retry value.
    retry: Option<Option<u64>>,
}

#[test]
fn every_vector_whole_byte_by_byte_and_split_everywhere() {
    let vectors = load();
    assert!(vectors.len() >= 60, "only {} vectors", vectors.len());
    for vector in &vectors {
        check(vector, "whole input", [&vector.input[..]]);
        check(vector, "one byte at a time", vector.input.chunks(1));
        for at in 0..=vector.input.len() {
            let (a, b) = vector.input.split_at(at);
            check(vector, &format!("split at {at}"), [a, b]);
        }
    }
}

#[test]
fn vector_names_are_unique() {
    let vectors = load();
    let mut names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "duplicate vector names");
}

fn check<'a>(vector: &Vector, how: &str, chunks: impl IntoIterator<Item = &'a [u8]>) {
    let mut decoder = Decoder::new();
    let out = decode_chunks(&mut decoder, chunks);
    assert_eq!(out, vector.events, "{}: {how}", vector.name);
    if let Some(id) = &vector.last_event_id {
        assert_eq!(
            decoder.last_event_id(),
            id,
            "{}: {how}: last event id",
            vector.name
        );
    }
    if let Some(retry) = vector.retry {
        assert_eq!(
            decoder.retry_millis(),
            retry,
            "{}: {how}: retry",
            vector.name
        );
    }
}

fn load() -> Vec<Vector> {
    let Json::Arr(items) = Parser::parse(VECTORS) else {
        panic!("vectors.json: an array expected")
    };
    items.iter().map(vector).collect()
}

fn vector(item: &Json) -> Vector {
    let name = item
        .get("name")
        .and_then(Json::str)
        .expect("a name")
        .to_owned();
    let input = item
        .get("input")
        .and_then(Json::str)
        .expect("an input")
        .chars()
        .map(|c| {
            u8::try_from(u32::from(c)).unwrap_or_else(|_| panic!("{name}: {c:?} is not a byte"))
        })
        .collect();
    let Some(Json::Arr(events)) = item.get("events") else {
        panic!("{name}: no events array")
    };
    let events = events
        .iter()
        .map(|e| {
            let field = |key| {
                e.get(key)
                    .and_then(Json::str)
                    .unwrap_or_else(|| panic!("{name}: event {key}"))
            };
            ev(field("type"), field("data"), field("id"))
        })
        .collect();
    let last_event_id = item
        .get("last_event_id")
        .map(|id| id.str().expect("a string id").to_owned());
    let retry = item.get("retry").map(|retry| match retry {
        Json::Null => None,
        Json::Num(n) => Some(*n),
        _ => panic!("{name}: retry must be a number or null"),
    });
    Vector {
        name,
        input,
        events,
        last_event_id,
        retry,
    }
}

/// Just enough JSON for `vectors.json` (the crate has no JSON dependency).
#[derive(Debug)]
enum Json {
    Null,
    Bool,
    Num(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn parse(text: &str) -> Json {
        let mut parser = Parser { text, pos: 0 };
        let value = parser.value();
        parser.skip_ws();
        assert_eq!(parser.pos, text.len(), "vectors.json: trailing text");
        value
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) -> char {
        let c = self.peek().expect("vectors.json: unexpected end");
        self.pos += c.len_utf8();
        c
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\n' | '\r' | '\t')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, word: &str) {
        assert!(
            self.text[self.pos..].starts_with(word),
            "vectors.json: {word:?} expected at byte {}",
            self.pos
        );
        self.pos += word.len();
    }

    fn value(&mut self) -> Json {
        self.skip_ws();
        match self.peek().expect("vectors.json: a value expected") {
            '{' => {
                self.bump();
                let mut fields = Vec::new();
                self.skip_ws();
                if self.peek() == Some('}') {
                    self.bump();
                    return Json::Obj(fields);
                }
                loop {
                    self.skip_ws();
                    let Json::Str(key) = self.value() else {
                        panic!("vectors.json: a key expected at byte {}", self.pos)
                    };
                    self.skip_ws();
                    self.expect(":");
                    fields.push((key, self.value()));
                    self.skip_ws();
                    if self.bump() == '}' {
                        return Json::Obj(fields);
                    }
                }
            }
            '[' => {
                self.bump();
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(']') {
                    self.bump();
                    return Json::Arr(items);
                }
                loop {
                    items.push(self.value());
                    self.skip_ws();
                    if self.bump() == ']' {
                        return Json::Arr(items);
                    }
                }
            }
            '"' => Json::Str(self.string()),
            'n' => {
                self.expect("null");
                Json::Null
            }
            't' => {
                self.expect("true");
                Json::Bool
            }
            'f' => {
                self.expect("false");
                Json::Bool
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                Json::Num(
                    self.text[start..self.pos]
                        .parse()
                        .expect("vectors.json: a whole number"),
                )
            }
        }
    }

    fn string(&mut self) -> String {
        self.expect("\"");
        let mut out = String::new();
        loop {
            match self.bump() {
                '"' => return out,
                '\\' => match self.bump() {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let unit = self.hex4();
                        let code = if (0xD800..0xDC00).contains(&unit) {
                            self.expect("\\u");
                            let low = self.hex4();
                            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            unit
                        };
                        out.push(char::from_u32(code).expect("vectors.json: a valid \\u escape"));
                    }
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> u32 {
        let digits = &self.text[self.pos..self.pos + 4];
        self.pos += 4;
        u32::from_str_radix(digits, 16).expect("vectors.json: four hex digits")
    }
}
