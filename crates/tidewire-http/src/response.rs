//! A response on the wire: how its body is framed, its head, and the framing of
//! each chunk. Sans-I/O: everything is encoded into a `Vec<u8>` the connection
//! writes.

use bytes::Buf;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version, response};

use crate::head::has_token;

/// How a response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`: a stream of unknown length.
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 clients of a stream).
    UntilClose,
}

impl Framing {
    /// Whether a body of `written` bytes is all this framing promised.
    pub(crate) fn is_whole(self, written: u64) -> bool {
        match self {
            Framing::Length(length) => written == length,
            _ => true,
        }
    }
}

/// The framing of a response to a request with `method` and `version`, whose body
/// says it has exactly `exact` bytes, if it knows.
fn framing(
    parts: &response::Parts,
    method: &Method,
    version: Version,
    exact: Option<u64>,
) -> Framing {
    let status = parts.status;
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Framing::None;
    }
    if let Some(length) = exact {
        return Framing::Length(length);
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    match declared {
        Some(length) => Framing::Length(length),
        None if version == Version::HTTP_11 => Framing::Chunked,
        None => Framing::UntilClose,
    }
}

/// A response ready to go: its head encoded, its body, how the body is framed,
/// and whether the connection stays open after it.
pub(crate) struct Start<B> {
    pub(crate) head: Vec<u8>,
    pub(crate) body: B,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
}

/// Encodes the head of `response` to a request with `method` and `version`.
pub(crate) fn start<B: http_body::Body>(
    response: http::Response<B>,
    method: &Method,
    version: Version,
    keep_alive: bool,
) -> Start<B> {
    let (mut parts, body) = response.into_parts();
    let exact = body.size_hint().exact();
    let framing = framing(&parts, method, version, exact);
    if let (Some(length), true) = (exact, method == Method::HEAD) {
        // HEAD says the length the body would have had.
        parts
            .headers
            .entry(CONTENT_LENGTH)
            .or_insert_with(|| length.into());
    }
    let keep_alive = keep_alive && framing != Framing::UntilClose && !wants_close(&parts);
    let mut head = Vec::with_capacity(512);
    encode_head(&parts, framing, keep_alive, &mut head);
    Start {
        head,
        body,
        framing,
        keep_alive,
    }
}

/// Whether the handler asked to close the connection after the response.
fn wants_close(parts: &response::Parts) -> bool {
    has_token(&parts.headers, &CONNECTION, "close")
}

/// Encodes the status line and headers into `out`. The framing headers are the
/// server's own: what the handler set for them is replaced.
pub(crate) fn encode_head(
    parts: &response::Parts,
    framing: Framing,
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        // The handler's `Connection` stays (some clients look for `keep-alive`),
        // unless the server closes.
        if name == TRANSFER_ENCODING || (name == CONNECTION && !keep_alive) {
            continue;
        }
        // HEAD and 304 keep the length the handler gave (that of the body they
        // would have had); elsewhere the framing decides it.
        if name == CONTENT_LENGTH && framing != Framing::None {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    if !parts.headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `data` to `out`, as one chunk when `chunked`.
pub(crate) fn encode_data(mut data: impl Buf, chunked: bool, out: &mut Vec<u8>) {
    let length = data.remaining();
    if length == 0 {
        // An empty chunk would end a chunked body.
        return;
    }
    out.extend_from_slice(ChunkLine::new(length, chunked).as_bytes());
    out.reserve(length + 2);
    while data.has_remaining() {
        let chunk = data.chunk();
        let taken = chunk.len();
        out.extend_from_slice(chunk);
        data.advance(taken);
    }
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
}

/// A chunk's size line (hex digits and CRLF), on the stack; empty when the body
/// is not chunked.
pub(crate) struct ChunkLine {
    bytes: [u8; 18],
    len: usize,
}

impl ChunkLine {
    pub(crate) fn new(length: usize, chunked: bool) -> Self {
        let mut line = Self {
            bytes: [0; 18],
            len: 0,
        };
        if chunked {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let digits = (usize::BITS - length.leading_zeros()).div_ceil(4).max(1) as usize;
            for (i, slot) in line.bytes[..digits].iter_mut().enumerate() {
                let shift = 4 * (digits - 1 - i);
                *slot = HEX[(length >> shift) & 0xf];
            }
            line.bytes[digits..digits + 2].copy_from_slice(b"\r\n");
            line.len = digits + 2;
        }
        line
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The end of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A whole response for a request the server refused before any service saw it:
/// a JSON error, and the connection closes.
pub(crate) fn refusal(status: StatusCode, message: &str) -> Vec<u8> {
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    let (parts, ()) = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(())
        .unwrap_or_default()
        .into_parts();
    let mut out = Vec::with_capacity(256 + body.len());
    encode_head(&parts, Framing::Length(body.len() as u64), false, &mut out);
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::Bytes;

    fn parts(status: u16, headers: &[(&str, &str)]) -> response::Parts {
        let mut builder = http::Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_framing_follows_method_status_and_size() {
        let ok = parts(200, &[]);
        assert_eq!(
            framing(&ok, &Method::GET, Version::HTTP_11, Some(5)),
            Framing::Length(5)
        );
        assert_eq!(
            framing(&ok, &Method::GET, Version::HTTP_11, None),
            Framing::Chunked
        );
        assert_eq!(
            framing(&ok, &Method::GET, Version::HTTP_10, None),
            Framing::UntilClose
        );
        assert_eq!(
            framing(&ok, &Method::HEAD, Version::HTTP_11, Some(5)),
            Framing::None
        );
        assert_eq!(
            framing(&parts(204, &[]), &Method::POST, Version::HTTP_11, None),
            Framing::None
        );
        let declared = parts(200, &[("content-length", "7")]);
        assert_eq!(
            framing(&declared, &Method::GET, Version::HTTP_11, None),
            Framing::Length(7)
        );
    }

    #[test]
    fn the_head_has_the_servers_framing_and_a_date() {
        let handler = parts(
            200,
            &[
                ("content-type", "text/event-stream"),
                ("transfer-encoding", "gzip"),
                ("content-length", "99"),
            ],
        );
        let mut out = Vec::new();
        encode_head(&handler, Framing::Chunked, false, &mut out);
        let head = String::from_utf8(out).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("content-type: text/event-stream\r\n"));
        assert!(head.contains("transfer-encoding: chunked\r\n"));
        assert!(!head.contains("gzip") && !head.contains("99"), "{head}");
        assert!(head.contains("\r\ndate: "));
        assert!(head.ends_with("connection: close\r\n\r\n"));

        // Kept alive, the handler's own `Connection` header stays.
        let handler = parts(200, &[("connection", "keep-alive")]);
        let mut out = Vec::new();
        encode_head(&handler, Framing::Chunked, true, &mut out);
        let head = String::from_utf8(out).unwrap();
        assert!(head.contains("connection: keep-alive\r\n"), "{head}");
        assert!(!head.contains("close"), "{head}");
    }

    #[test]
    fn chunks_are_framed_and_empty_data_is_skipped() {
        let mut out = Vec::new();
        encode_data(Bytes::from_static(b"data: hi\n\n"), true, &mut out);
        encode_data(Bytes::new(), true, &mut out);
        encode_data(Bytes::from_static(b"raw"), false, &mut out);
        assert_eq!(out, b"a\r\ndata: hi\n\n\r\nraw");
    }

    #[test]
    fn chunk_lines_are_lowercase_hex() {
        for length in [1, 9, 10, 255, 4096, 0x1234_5678, usize::MAX] {
            let line = ChunkLine::new(length, true);
            assert_eq!(line.as_bytes(), format!("{length:x}\r\n").as_bytes());
        }
        assert!(ChunkLine::new(5, false).as_bytes().is_empty());
    }

    #[test]
    fn a_refusal_is_a_whole_json_response() {
        let wire = String::from_utf8(refusal(StatusCode::BAD_REQUEST, "malformed")).unwrap();
        let (head, body) = wire.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            body,
            r#"{"error":{"code":"bad_request","message":"malformed"}}"#
        );
    }
}
