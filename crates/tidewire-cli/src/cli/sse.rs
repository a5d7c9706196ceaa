//! `tidewire sse decode` and `tidewire sse encode`: the codec on stdin and stdout, so
//! `curl -N URL | tidewire sse decode` shows a live stream as JSON lines.

use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use tidewire_sse::{Decoder, Frame, Limits};

/// The `sse` subcommands.
#[derive(Debug, Subcommand)]
pub enum SseCommand {
    /// Reads an event stream on stdin; prints each event as a JSON line as soon as it
    /// is dispatched, then the reconnection state.
    Decode {
        /// Longest line accepted, in bytes.
        #[arg(long, default_value_t = Limits::default().max_line)]
        max_line: usize,
        /// Largest event accepted, in bytes.
        #[arg(long, default_value_t = Limits::default().max_event)]
        max_event: usize,
    },
    /// Reads JSON lines (`{"data", "event"?, "id"?, "retry"?}` or `{"comment"}`) on
    /// stdin and writes the event stream to stdout.
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
    loop {
        let read = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error).context("reading stdin"),
        };
        decoder.push(&buf[..read]);
        while let Some(next) = decoder.next_event() {
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
        let has_event = item.data.is_some() || item.event.is_some() || item.id.is_some();
        if has_event {
            let frame = Frame {
                id: item.id.as_deref(),
                event: item.event.as_deref(),
                data: item.data.as_deref().unwrap_or(""),
                retry: item.retry.map(Duration::from_millis),
            };
            frame
                .encode(&mut wire)
                .with_context(|| format!("line {number}"))?;
        } else if let Some(retry) = item.retry {
            tidewire_sse::encode_retry(&mut wire, Duration::from_millis(retry));
        }
        output.write_all(&wire).context("writing stdout")?;
        output.flush().context("writing stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}
