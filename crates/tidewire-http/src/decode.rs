//! Taking a request body's data out of the read buffer, by its framing: a
//! `Content-Length`, or `Transfer-Encoding: chunked`. Sans-I/O: the caller reads
//! from the socket when a decoder says it needs more.

use bytes::Bytes;

use crate::body::BodyError;

/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// What a decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body data, removed from the buffer.
    Data(Bytes),
    /// The body is complete.
    End,
    /// Nothing more until more bytes are read.
    NeedMore,
}

/// How a request's body is framed.
#[derive(Debug)]
pub(crate) enum Decoder {
    /// This many bytes are left.
    Length(u64),
    /// A chunked body, in this state.
    Chunked(Chunked),
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines, then an empty line.
    Trailers,
    /// The body is complete.
    Done,
}

impl Decoder {
    /// A chunked body's decoder.
    pub(crate) fn chunked() -> Self {
        Decoder::Chunked(Chunked::Size)
    }

    /// The next piece of the body, taken out of `buf`.
    pub(crate) fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Decoded, BodyError> {
        match self {
            Decoder::Length(0) => Ok(Decoded::End),
            Decoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                *left -= take as u64;
                Ok(Decoded::Data(take_front(buf, take)))
            }
            Decoder::Chunked(state) => decode_chunked(state, buf),
        }
    }
}

fn decode_chunked(state: &mut Chunked, buf: &mut Vec<u8>) -> Result<Decoded, BodyError> {
    loop {
        match *state {
            Chunked::Size => {
                let Some(line) = take_line(buf)? else {
                    return Ok(Decoded::NeedMore);
                };
                let size = chunk_size(&line)?;
                *state = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
            }
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
                let left = left - take as u64;
                *state = if left == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left)
                };
                return Ok(Decoded::Data(take_front(buf, take)));
            }
            Chunked::DataEnd => {
                let Some(line) = take_line(buf)? else {
                    return Ok(Decoded::NeedMore);
                };
                if !line.is_empty() {
                    return Err(BodyError::Malformed("chunk data longer than its size"));
                }
                *state = Chunked::Size;
            }
            Chunked::Trailers => {
                let Some(line) = take_line(buf)? else {
                    return Ok(Decoded::NeedMore);
                };
                // Trailer fields are read past; an empty line ends the body.
                if line.is_empty() {
                    *state = Chunked::Done;
                }
            }
            Chunked::Done => return Ok(Decoded::End),
        }
    }
}

/// The chunk-size of a chunk-size line (hex digits, then optional extensions).
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line
        .iter()
        .position(|byte| !byte.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if digits == 0 || digits > 16 || !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(BodyError::Malformed("invalid chunk size line"));
    }
    let hex = std::str::from_utf8(&line[..digits])
        .map_err(|_| BodyError::Malformed("invalid chunk size line"))?;
    u64::from_str_radix(hex, 16).map_err(|_| BodyError::Malformed("invalid chunk size line"))
}

/// The next line of `buf` without its line ending (CRLF, or a bare LF), removed
/// from `buf`; `None` while the line is incomplete.
fn take_line(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, BodyError> {
    let Some(end) = buf.iter().position(|&byte| byte == b'\n') else {
        if buf.len() > MAX_LINE {
            return Err(BodyError::Malformed("chunk line too long"));
        }
        return Ok(None);
    };
    if end > MAX_LINE {
        return Err(BodyError::Malformed("chunk line too long"));
    }
    let mut line: Vec<u8> = buf.drain(..=end).collect();
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// The first `n` bytes of `buf`, removed from it.
fn take_front(buf: &mut Vec<u8>, n: usize) -> Bytes {
    if n == buf.len() {
        // The whole buffer: hand over its allocation instead of copying.
        return Bytes::from(std::mem::take(buf));
    }
    let front = Bytes::copy_from_slice(&buf[..n]);
    buf.drain(..n);
    front
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Feeds `wire` one byte at a time and collects the body.
    fn decode_bytewise(decoder: &mut Decoder, wire: &[u8]) -> Result<Vec<u8>, BodyError> {
        let mut buf = Vec::new();
        let mut body = Vec::new();
        let mut wire = wire.iter();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => return Ok(body),
                Decoded::NeedMore => match wire.next() {
                    Some(&byte) => buf.push(byte),
                    None => return Err(BodyError::Incomplete),
                },
            }
        }
    }

    #[test]
    fn a_chunked_body_decodes_whole_and_byte_by_byte() {
        let wire = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut decoder = Decoder::chunked();
        let mut buf = wire.to_vec();
        let mut body = Vec::new();
        loop {
            match decoder.decode(&mut buf).unwrap() {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => break,
                Decoded::NeedMore => panic!("the whole body was there"),
            }
        }
        assert_eq!(body, b"hello world");
        // What follows the body (a pipelined request) stays in the buffer.
        assert_eq!(buf, b"NEXT");

        let mut decoder = Decoder::chunked();
        assert_eq!(decode_bytewise(&mut decoder, wire).unwrap(), b"hello world");
    }

    #[test]
    fn bare_line_feeds_are_accepted() {
        let mut decoder = Decoder::chunked();
        let body = decode_bytewise(&mut decoder, b"3\nabc\n0\n\n").unwrap();
        assert_eq!(body, b"abc");
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for wire in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            b"3\r\nabcdef\r\n0\r\n\r\n",
            b"3 x\r\nabc\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
        ] {
            let mut decoder = Decoder::chunked();
            assert!(
                matches!(
                    decode_bytewise(&mut decoder, wire),
                    Err(BodyError::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut decoder = Decoder::chunked();
        let long = vec![b'1'; MAX_LINE + 2];
        assert!(decode_bytewise(&mut decoder, &long).is_err());
    }

    #[test]
    fn a_length_body_takes_exactly_its_length() {
        let mut decoder = Decoder::Length(4);
        let mut buf = b"abcdefgh".to_vec();
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"abcd"))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::End);
        assert_eq!(buf, b"efgh");
        let mut decoder = Decoder::Length(3);
        assert!(matches!(
            decode_bytewise(&mut decoder, b"ab"),
            Err(BodyError::Incomplete)
        ));
    }
}
