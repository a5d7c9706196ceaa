//! `tidewire sse decode` and `tidewire sse encode`: the codec on stdin and stdout, so
//! `curl -N URL | tidewire sse decode` shows a live stream as JSON lines.

use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use tidewire_sse::{Decoder, Frame, Limits};

/// The `sse` subcommands.
#[derive(Debug, Subcommand)]
pub enum SseCommand {
    /// Reads an event stream on stdin; prints each event as a JSON line as soon as it
    /// is dispatched, then the reconnection state. Input that is no event stream
    /// (a JSON error body, say) is an error.
    Decode {
        /// Longest line accepted, in bytes.
        #[arg(long, default_value_t = Limits::default().max_line)]
        max_line: usize,
        /// Largest event accepted, in bytes.
        #[arg(long, default_value_t = Limits::default().max_event)]
        max_event: usize,
    },
    /// Reads JSON lines (`{"data", "event"?, "id"?, "retry"?}`, `{"retry"}` or
    /// `{"comment"}`) on stdin and writes the event stream to stdout.
    Encode,
}

/// Runs an `sse` subcommand.
pub fn run(command: SseCommand) -> anyhow::Result<ExitCode> {
    match command {
        SseCommand::Decode {
            max_line,
            max_event,
        } => decode(
            io::stdin().lock(),
            io::stdout().lock(),
            Limits {
                max_line,
                max_event,
            },
        ),
        SseCommand::Encode => encode(io::stdin().lock(), io::stdout().lock()),
    }
}

#[derive(Serialize)]
struct DecodedEvent<'a> {
    event: &'a str,
    data: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
struct ReconnectState<'a> {
    last_event_id: &'a str,
    retry: Option<u64>,
}

fn decode(
    mut input: impl Read,
    mut output: impl Write,
    limits: Limits,
) -> anyhow::Result<ExitCode> {
    let mut decoder = Decoder::with_limits(limits);
    let mut buf = vec![0u8; 64 * 1024];
    let mut line = Vec::new();
    let mut errors = 0usize;
    let mut sniffer = Sniffer::default();
    loop {
        let read = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error).context("reading stdin"),
        };
        sniffer.push(&buf[..read]);
        decoder.push(&buf[..read]);
        while let Some(next) = decoder.next_event() {
            sniffer.seen_stream = true;
            match next {
                Ok(event) => {
                    line.clear();
                    serde_json::to_writer(
                        &mut line,
                        &DecodedEvent {
                            event: event.event,
                            data: event.data,
                            id: event.id,
                        },
                    )?;
                    line.push(b'\n');
                    output.write_all(&line).context("writing stdout")?;
                }
                Err(error) => {
                    errors += 1;
                    eprintln!("tidewire sse decode: {error}; the event was dropped");
                }
            }
        }
        // Show what arrived now, not when a buffer fills: the input may be a live stream.
        output.flush().context("writing stdout")?;
    }
    decoder.finish();
    sniffer.end();
    if !sniffer.seen_stream && sniffer.bytes > 0 {
        bail!(
            "no event stream on stdin: {} bytes without one event, field or comment; it \
             starts with: {}",
            sniffer.bytes,
            sniffer.first_line()
        );
    }
    serde_json::to_writer(
        &mut output,
        &ReconnectState {
            last_event_id: decoder.last_event_id(),
            retry: decoder.retry_millis(),
        },
    )?;
    output.write_all(b"\n")?;
    output.flush()?;
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Watches the input for anything of an event stream: a comment or a field line
/// (`data`, `event`, `id`, `retry`). The decoder ignores every other line by the
/// standard, so a JSON error body or an HTML page would otherwise decode as an
/// empty stream and look like success.
#[derive(Default)]
struct Sniffer {
    /// An event was dispatched, or a comment or field line was seen.
    seen_stream: bool,
    /// Bytes read in all.
    bytes: usize,
    /// The first bytes of the input, to show when it is not a stream.
    start: Vec<u8>,
    /// The start of the current line, up to the longest field name and its colon.
    head: Vec<u8>,
    /// The current line is longer than any field name: no need to look further.
    head_done: bool,
}

impl Sniffer {
    const SHOWN: usize = 80;
    const FIELDS: [&'static [u8]; 4] = [b"data", b"event", b"id", b"retry"];
    /// The longest line start worth looking at: a byte order mark, `retry` and `:`.
    const LONGEST_HEAD: usize = 3 + 5 + 1;

    fn push(&mut self, bytes: &[u8]) {
        let keep = Self::SHOWN
            .saturating_sub(self.start.len())
            .min(bytes.len());
        self.start.extend_from_slice(&bytes[..keep]);
        self.bytes += bytes.len();
        for &byte in bytes {
            if self.seen_stream {
                return;
            }
            if byte == b'\r' || byte == b'\n' {
                self.end();
            } else if !self.head_done {
                self.head.push(byte);
                if byte == b':' {
                    let name = bare(&self.head[..self.head.len() - 1]);
                    // An empty name is a comment.
                    self.seen_stream = name.is_empty() || Self::FIELDS.contains(&name);
                    self.head_done = true;
                } else if self.head.len() >= Self::LONGEST_HEAD {
                    self.head_done = true;
                }
            }
        }
    }

    /// The end of a line (or of the input): a field written without a colon counts.
    fn end(&mut self) {
        if !self.head_done && Self::FIELDS.contains(&bare(&self.head)) {
            self.seen_stream = true;
        }
        self.head.clear();
        self.head_done = false;
    }

    /// The first line of the input, for the message that it is not a stream.
    fn first_line(&self) -> String {
        let line = self
            .start
            .split(|&byte| byte == b'\r' || byte == b'\n')
            .next()
            .unwrap_or_default();
        let mut line = String::from_utf8_lossy(line).into_owned();
        if line.len() == Self::SHOWN {
            line.push('…');
        }
        line
    }
}

/// A line start without the byte order mark that may open a stream.
fn bare(head: &[u8]) -> &[u8] {
    head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncodeLine {
    data: Option<String>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    comment: Option<String>,
}

fn encode(input: impl BufRead, mut output: impl Write) -> anyhow::Result<ExitCode> {
    let mut wire = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let item: EncodeLine = serde_json::from_str(&line)
            .with_context(|| format!("line {number}: not an event object"))?;
        wire.clear();
        if let Some(comment) = &item.comment {
            tidewire_sse::encode_comment(&mut wire, comment);
        }
        if let Some(data) = &item.data {
            let frame = Frame {
                id: item.id.as_deref(),
                event: item.event.as_deref(),
                data,
                retry: item.retry.map(Duration::from_millis),
            };
            frame
                .encode(&mut wire)
                .with_context(|| format!("line {number}"))?;
        } else if item.event.is_some() || item.id.is_some() {
            // Writing `data: ` for it would invent an event the input did not have.
            bail!(
                "line {number}: an event needs \"data\" (\"data\": \"\" for an empty one); \
                 without it a client dispatches nothing"
            );
        } else if let Some(retry) = item.retry {
            tidewire_sse::encode_retry(&mut wire, Duration::from_millis(retry));
        } else if item.comment.is_none() {
            bail!("line {number}: nothing to write: give \"data\", \"comment\" or \"retry\"");
        }
        output.write_all(&wire).context("writing stdout")?;
        output.flush().context("writing stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}
