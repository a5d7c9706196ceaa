//! The load generator's HTTP/1.1 client: plain TCP, the request written as prepared
//! bytes, the response head parsed with httparse and its body de-chunked in place.
//!
//! Why not reqwest: the load generator shares the machine's two cores with the
//! server it measures, so what it spends is taken from the server. A pooled client
//! reads each connection in a task of its own and hands every chunk to the reader
//! through a channel: two wakeups and a copy per read. Here the stream's own task
//! reads its socket, one wakeup per read, and the SSE decoder sees the bytes where
//! they landed. Every server is measured through this same client.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a request failed, as the benchmark reports it.
pub type Error = String;

/// Bytes read at a time, at least; a burst stream's whole answer fits.
const READ_SIZE: usize = 8 * 1024;
/// The longest response head, chunk-size line or trailer line accepted.
const MAX_LINE: usize = 64 * 1024;
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where requests go: the address to connect to, and the URL's parts the request
/// line and `host` header carry.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
}

impl Target {
    /// The target of an `http://` URL, its host resolved now.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!(
                "{url}: the load generator speaks plain http:// only"
            ));
        }
        let host = parsed.host_str().ok_or_else(|| format!("{url}: no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {host} has no address"))?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let path = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        Ok(Self {
            addr,
            authority,
            path,
        })
    }

    /// The bytes of one request: an SSE request with these headers and this JSON body.
    pub fn request(
        &self,
        method: &str,
        headers: &[(String, String)],
        body: Option<&str>,
    ) -> Vec<u8> {
        let mut request = format!(
            "{method} {} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n",
            self.path, self.authority
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            request.push_str("\r\n");
        }
        request.into_bytes()
    }
}

/// One open connection and its read buffer; `pos` is where unread bytes start.
#[derive(Debug)]
struct Connection {
    socket: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Self, Error> {
        let socket = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("connecting to {addr} failed: {e}"))?;
        socket
            .set_nodelay(true)
            .map_err(|e| format!("setting TCP_NODELAY failed: {e}"))?;
        Ok(Self {
            socket,
            buf: Vec::with_capacity(READ_SIZE),
            pos: 0,
        })
    }

    /// Reads once, keeping unread bytes; 0 means the peer closed.
    async fn fill(&mut self) -> Result<usize, Error> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_SIZE / 2);
        self.socket
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| format!("reading failed: {e}"))
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }
}

/// A client with at most one kept-alive connection, reused by its next request.
#[derive(Debug, Default)]
pub struct Client {
    idle: Option<Connection>,
}

impl Client {
    /// Sends `request` and reads the response head. A reused connection the server
    /// has closed meanwhile is replaced once, as pooled clients do.
    pub async fn send(&mut self, target: &Target, request: &[u8]) -> Result<Response<'_>, Error> {
        let (mut connection, reused) = match self.idle.take() {
            Some(connection) => (connection, true),
            None => (Connection::open(target.addr).await?, false),
        };
        let head = match exchange(&mut connection, request).await {
            Ok(head) => head,
            Err(Exchange::Silent(_)) if reused => {
                connection = Connection::open(target.addr).await?;
                exchange(&mut connection, request)
                    .await
                    .map_err(Exchange::into_error)?
            }
            Err(error) => return Err(error.into_error()),
        };
        if !(200..300).contains(&head.status) {
            return Err(format!("HTTP {}", head.status));
        }
        Ok(Response {
            connection: Some(connection),
            framing: head.framing,
            keep_alive: head.keep_alive,
            home: &mut self.idle,
        })
    }
}

/// What the response head said.
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

/// How an exchange failed: before the server sent a byte (a closed idle
/// connection), or later.
enum Exchange {
    Silent(Error),
    Failed(Error),
}

impl Exchange {
    fn into_error(self) -> Error {
        match self {
            Exchange::Silent(error) | Exchange::Failed(error) => error,
        }
    }
}

async fn exchange(connection: &mut Connection, request: &[u8]) -> Result<Head, Exchange> {
    connection
        .socket
        .write_all(request)
        .await
        .map_err(|e| Exchange::Silent(format!("sending the request failed: {e}")))?;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(connection.unread()) {
            Ok(httparse::Status::Complete(length)) => {
                let head = read_head(&response);
                connection.pos += length;
                return Ok(head);
            }
            Ok(httparse::Status::Partial) if connection.unread().len() > MAX_LINE => {
                return Err(Exchange::Failed("the response head is too long".into()));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(Exchange::Failed(format!("bad response head: {e}"))),
        }
        let started = !connection.unread().is_empty();
        match connection.fill().await {
            Ok(0) | Err(_) if !started => {
                return Err(Exchange::Silent("the server closed the connection".into()));
            }
            Ok(0) => return Err(Exchange::Failed("the response head was cut short".into())),
            Ok(_) => {}
            Err(error) => return Err(Exchange::Failed(error)),
        }
    }
}

fn read_head(response: &httparse::Response<'_, '_>) -> Head {
    let mut framing = Framing::Close;
    let mut keep_alive = response.version == Some(1);
    for header in response.headers.iter() {
        let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
        if header.name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
            framing = Framing::Chunked(Chunk::Size);
        } else if header.name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked(_))
            && let Ok(length) = value.trim().parse()
        {
            framing = Framing::Length(length);
        } else if header.name.eq_ignore_ascii_case("connection") && value.contains("close") {
            keep_alive = false;
        }
    }
    if matches!(framing, Framing::Close) {
        keep_alive = false;
    }
    Head {
        status: response.code.unwrap_or(0),
        framing,
        keep_alive,
    }
}

/// How the response body ends.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// `Transfer-Encoding: chunked`, in this state.
    Chunked(Chunk),
    /// This many bytes are left.
    Length(u64),
    /// The body ends when the server closes.
    Close,
}

/// Where the chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// A response whose body is being read.
#[derive(Debug)]
pub struct Response<'a> {
    connection: Option<Connection>,
    framing: Framing,
    keep_alive: bool,
    /// Where the connection goes back when the body ended cleanly.
    home: &'a mut Option<Connection>,
}

impl Response<'_> {
    /// Hands the body's buffered data to `on_data`, then reads once more and hands
    /// that over too; `false` once the body is complete.
    pub async fn next(&mut self, mut on_data: impl FnMut(&[u8])) -> Result<bool, Error> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(false);
        };
        if decode(connection, &mut self.framing, &mut on_data)? {
            self.finish();
            return Ok(false);
        }
        let read = connection.fill().await?;
        if read == 0 {
            if matches!(self.framing, Framing::Close) {
                self.connection = None;
                return Ok(false);
            }
            return Err("the server closed the connection mid-body".into());
        }
        if decode(connection, &mut self.framing, &mut on_data)? {
            self.finish();
            return Ok(false);
        }
        Ok(true)
    }

    fn finish(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        // Bytes past the body's end would be a response nobody asked for.
        if self.keep_alive && connection.unread().is_empty() {
            *self.home = Some(connection);
        }
    }
}

/// Decodes the buffered bytes of the body, handing each piece of data to
/// `on_data`; `true` when the body is complete.
fn decode(
    connection: &mut Connection,
    framing: &mut Framing,
    on_data: &mut impl FnMut(&[u8]),
) -> Result<bool, Error> {
    let chunked = matches!(framing, Framing::Chunked(_));
    loop {
        let unread = connection.unread();
        match framing {
            Framing::Close => {
                if !unread.is_empty() {
                    on_data(unread);
                    connection.pos = connection.buf.len();
                }
                return Ok(false);
            }
            Framing::Length(0) | Framing::Chunked(Chunk::Done) => return Ok(true),
            Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                if unread.is_empty() {
                    return Ok(false);
                }
                let take = unread
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                on_data(&unread[..take]);
                connection.pos += take;
                *left -= take as u64;
                if *left == 0 && chunked {
                    *framing = Framing::Chunked(Chunk::DataEnd);
                }
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if unread.len() < 2 {
                    return Ok(false);
                }
                if &unread[..2] != b"\r\n" {
                    return Err("a chunk's data is not followed by CRLF".into());
                }
                connection.pos += 2;
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(state @ (Chunk::Size | Chunk::Trailers)) => {
                let Some(end) = unread.windows(2).position(|pair| pair == b"\r\n") else {
                    if unread.len() > MAX_LINE {
                        return Err("a chunk line is too long".into());
                    }
                    return Ok(false);
                };
                let line = &unread[..end];
                *state = match *state {
                    Chunk::Size => match chunk_size(line)? {
                        0 => Chunk::Trailers,
                        size => Chunk::Data(size),
                    },
                    _ if line.is_empty() => Chunk::Done,
                    _ => Chunk::Trailers,
                };
                connection.pos += end + 2;
            }
        }
    }
}

/// The size of a chunk-size line, its extensions ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = std::str::from_utf8(digits).unwrap_or_default().trim();
    u64::from_str_radix(digits, 16).map_err(|_| format!("bad chunk size {digits:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves each accepted connection the given responses, one per request read.
    async fn server(responses: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for response in responses {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await.unwrap();
                // Written in small pieces, so chunk lines and data split across reads.
                for piece in response.chunks(3) {
                    socket.write_all(piece).await.unwrap();
                    socket.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        addr
    }

    async fn body(client: &mut Client, target: &Target) -> Result<Vec<u8>, Error> {
        let request = target.request("GET", &[], None);
        let mut response = client.send(target, &request).await?;
        let mut body = Vec::new();
        while response.next(|data| body.extend_from_slice(data)).await? {}
        Ok(body)
    }

    fn target(addr: SocketAddr) -> Target {
        Target::parse(&format!("http://{addr}/events?x=1")).unwrap()
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_and_the_connection_is_reused() {
        const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\ntrailer: x\r\n\r\n";
        const LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbye!";
        // One accepted connection serves both: the second request reuses it.
        let addr = server(vec![CHUNKED, LENGTH]).await;
        let target = target(addr);
        let mut client = Client::default();
        assert_eq!(body(&mut client, &target).await.unwrap(), b"hello, world");
        assert!(client.idle.is_some());
        assert_eq!(body(&mut client, &target).await.unwrap(), b"bye!");
    }

    #[tokio::test]
    async fn a_body_ended_by_close_is_read_to_the_end_and_not_reused() {
        const CLOSE: &[u8] =
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nevent: token\ndata: x\n\n";
        let addr = server(vec![CLOSE]).await;
        let target = target(addr);
        let mut client = Client::default();
        assert_eq!(
            body(&mut client, &target).await.unwrap(),
            b"event: token\ndata: x\n\n"
        );
        assert!(client.idle.is_none());
    }

    #[tokio::test]
    async fn errors_say_what_went_wrong() {
        const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        const CUT: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nshort";
        const BAD: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n";
        for (response, expected) in [
            (NOT_FOUND, "HTTP 404"),
            (CUT, "the server closed the connection mid-body"),
            (BAD, "bad chunk size \"zz\""),
        ] {
            let addr = server(vec![response]).await;
            let error = body(&mut Client::default(), &target(addr))
                .await
                .unwrap_err();
            assert_eq!(error, expected);
        }
        assert!(Target::parse("https://example.com/").is_err());
    }

    #[tokio::test]
    async fn a_reused_connection_the_server_closed_is_replaced() {
        const SHORT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // The first connection answers once and closes; the second answers again.
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await.unwrap();
                socket.write_all(SHORT).await.unwrap();
            }
        });
        let target = target(addr);
        let mut client = Client::default();
        assert_eq!(body(&mut client, &target).await.unwrap(), b"ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(body(&mut client, &target).await.unwrap(), b"ok");
    }

    #[test]
    fn requests_carry_the_host_path_headers_and_body() {
        let target = Target::parse("http://127.0.0.1:8080/api/chat").unwrap();
        let request = target.request(
            "POST",
            &[("x-key".into(), "k".into())],
            Some(r#"{"message":"hi"}"#),
        );
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "POST /api/chat HTTP/1.1\r\nhost: 127.0.0.1:8080\r\naccept: text/event-stream\r\nx-key: k\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"message\":\"hi\"}"
        );
    }
}
