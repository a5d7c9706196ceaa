//! A request's head: parsed from the read buffer (with httparse) into owned
//! `http` parts, so nothing keeps the buffer alive once the head is read.

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::decode::Decoder;

/// Most header fields in one request (hyper's default too).
const MAX_HEADERS: usize = 100;

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    /// Method, URI, version and headers.
    pub(crate) parts: http::request::Parts,
    /// How the body is framed; `None` without a body.
    pub(crate) body: Option<Decoder>,
    /// Whether the connection may serve another request after this one.
    pub(crate) keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub(crate) expect_continue: bool,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// Not an HTTP/1 request head.
    Malformed(&'static str),
    /// More header fields than the server reads.
    TooManyHeaders,
}

/// The head at the start of `buf` and its length in bytes, or `None` while the
/// head is incomplete.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let length = match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1 request")),
    };
    let method = request
        .method
        .and_then(|method| Method::from_bytes(method.as_bytes()).ok())
        .ok_or(HeadError::Malformed("invalid method"))?;
    let uri = request
        .path
        .and_then(|path| path.parse::<Uri>().ok())
        .ok_or(HeadError::Malformed("invalid request target"))?;
    let version = match request.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let body = body_framing(&headers, version)?;
    let keep_alive = version == Version::HTTP_11 && !has_token(&headers, &CONNECTION, "close");
    let expect_continue = version == Version::HTTP_11
        && headers
            .get(EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut builder = Request::builder().method(method).uri(uri).version(version);
    if let Some(slot) = builder.headers_mut() {
        *slot = headers;
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|_| HeadError::Malformed("invalid request"))?
        .into_parts();
    Ok(Some((
        Head {
            parts,
            body,
            keep_alive,
            expect_continue,
        },
        length,
    )))
}

/// How the body is framed (RFC 9112, section 6.3): chunked when the last transfer
/// coding is `chunked`, else `Content-Length`, else no body.
fn body_framing(headers: &HeaderMap, version: Version) -> Result<Option<Decoder>, HeadError> {
    if headers.contains_key(TRANSFER_ENCODING) {
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .rfind(|coding| !coding.is_empty());
        return match last {
            Some(coding)
                if coding.eq_ignore_ascii_case("chunked") && version == Version::HTTP_11 =>
            {
                Ok(Some(Decoder::chunked()))
            }
            _ => Err(HeadError::Malformed("unsupported transfer-encoding")),
        };
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let parsed = value
            .to_str()
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or(HeadError::Malformed("invalid content-length"))?;
        if length.is_some_and(|length| length != parsed) {
            return Err(HeadError::Malformed("conflicting content-length"));
        }
        length = Some(parsed);
    }
    Ok(length.filter(|&length| length > 0).map(Decoder::Length))
}

/// Whether a comma-separated header has `token` (case-insensitive).
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn head(wire: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse(wire.as_bytes())
    }

    #[test]
    fn a_complete_head_is_parsed_into_owned_parts() {
        let wire = "POST /api/chat?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello";
        let (head, length) = head(wire).unwrap().unwrap();
        assert_eq!(length, wire.len() - 5);
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri.path(), "/api/chat");
        assert_eq!(head.parts.uri.query(), Some("x=1"));
        assert_eq!(head.parts.headers.get_all("x-a").iter().count(), 2);
        assert!(matches!(head.body, Some(Decoder::Length(5))));
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    }

    #[test]
    fn connection_and_version_decide_keep_alive() {
        let close = head("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(!close.unwrap().unwrap().0.keep_alive);
        let old = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().0;
        assert!(!old.keep_alive);
        assert_eq!(old.parts.version, Version::HTTP_10);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(matches!(
            chunked.unwrap().unwrap().0.body,
            Some(Decoder::Chunked(_))
        ));
        let same = head("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert!(matches!(
            same.unwrap().unwrap().0.body,
            Some(Decoder::Length(3))
        ));
        let empty = head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(empty.unwrap().unwrap().0.body.is_none());
        for bad in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(matches!(head(bad), Err(HeadError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn garbage_and_too_many_headers_are_refused() {
        assert!(matches!(
            head("\u{1}\u{2} nonsense\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(head(&many).unwrap_err(), HeadError::TooManyHeaders);
    }

    #[test]
    fn expect_continue_is_seen() {
        let wire = "PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
        assert!(head(wire).unwrap().unwrap().0.expect_continue);
    }
}
