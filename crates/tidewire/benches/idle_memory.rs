//! Where the memory of an idle open stream goes, counted by a global allocator
//! (dhat's) that tracks the live heap and the call stack of each allocation.
//!
//! The real server runs in this process on 127.0.0.1 (port 0, a fresh data
//! directory, the synthetic backend). Plain blocking sockets on another thread play
//! the clients, so they allocate next to nothing. Two steps, each measured as the
//! growth of the live heap divided by the number of connections:
//!
//! 1. connections accepted, no request sent yet;
//! 2. on each, a chat request whose second token is due long after the
//!    measurement: an idle open stream, read up to its `run` event.
//!
//! Then the heap as the streams hold it is split by what each allocation is for,
//! from its call stack ([`PARTS`]).
//!
//! `cargo bench -p tidewire --bench idle_memory` prints Markdown tables;
//! `TIDEWIRE_BENCH_STREAMS` sets the number of streams (default 2,000);
//! `TIDEWIRE_BENCH_PROFILE=path` keeps dhat's profile there, to read every call
//! site in `dh_view.html`.

// A benchmark, not the server: a failed step ends it with its reason.
#![allow(clippy::expect_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tidewire::Config;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// The live heap: bytes and blocks.
#[derive(Clone, Copy)]
struct Snapshot {
    bytes: usize,
    blocks: usize,
}

fn snapshot() -> Snapshot {
    let stats = dhat::HeapStats::get();
    Snapshot {
        bytes: stats.curr_bytes,
        blocks: stats.curr_blocks,
    }
}

/// Growth per item between two snapshots: bytes and allocations.
#[derive(Clone, Copy)]
struct Growth {
    bytes: f64,
    blocks: f64,
}

fn growth(before: Snapshot, after: Snapshot, items: usize) -> Growth {
    let per = |after: usize, before: usize| (after as f64 - before as f64) / items as f64;
    Growth {
        bytes: per(after.bytes, before.bytes),
        blocks: per(after.blocks, before.blocks),
    }
}

/// Lets the server's tasks reach their resting state before a snapshot.
fn settle() {
    std::thread::sleep(Duration::from_millis(700));
}

fn idle_request(addr: SocketAddr, index: usize) -> Vec<u8> {
    // Two tokens, the second due 100 s after the first: an open, quiet stream.
    let body = format!(
        r#"{{"message":"idle stream number {index}","options":{{"max_tokens":2,"tokens_per_second":0.01}}}}"#
    );
    format!(
        "POST /api/chat HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads from `socket` until its stream has sent its `run` event; returns what was
/// read.
fn read_run_event(socket: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    // A refused request is answered and the connection kept: do not wait forever.
    socket.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let complete = |seen: &[u8]| {
        seen.windows(10)
            .position(|w| w == b"event: run")
            .is_some_and(|at| seen[at..].windows(2).any(|w| w == b"\n\n"))
    };
    while !complete(&seen) {
        let n = socket.read(&mut buffer)?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "the stream closed before its run event: {}",
                String::from_utf8_lossy(&seen)
            )));
        }
        seen.extend_from_slice(&buffer[..n]);
    }
    Ok(seen)
}

/// What an allocation is for, told by the first frame of its call stack that
/// matches, in this order.
const PARTS: &[(&str, &[&str])] = &[
    (
        "the run's task: the pipeline's future (tokio task)",
        &["bind_new_task<tracing::instrument::Instrumented<tidewire::hub::produce"],
    ),
    (
        "the connection's task (tidewire-http)",
        &["task_tracker.rs"],
    ),
    (
        "the connection's read buffer (tidewire-http)",
        &["tidewire-http/src/"],
    ),
    (
        "the socket's registration (tokio)",
        &["scheduled_io", "registration_set"],
    ),
    ("the run: state, log, encoded events", &["src/hub/"]),
    (
        "request and response headers",
        &["http::header", "header/map.rs"],
    ),
    ("the response stream and its subscriber", &["src/api/"]),
    // Only if the server were on hyper's HTTP/1 again.
    ("HTTP/1 buffers (hyper)", &["proto/h1/"]),
];

/// Bytes per stream by part, from dhat's heap profile at its end: only call sites
/// with at least one live block per eight streams count, so what the server made
/// once (at start) stays out.
fn parts(profile: &std::path::Path, streams: usize) -> Vec<(&'static str, f64, f64)> {
    let text = std::fs::read_to_string(profile).expect("dhat's profile");
    let profile: serde_json::Value = serde_json::from_str(&text).expect("dhat's JSON");
    let frames: Vec<&str> = profile["ftbl"]
        .as_array()
        .map(|table| table.iter().filter_map(|f| f.as_str()).collect())
        .unwrap_or_default();
    let mut totals: Vec<(&'static str, f64, f64)> =
        PARTS.iter().map(|(name, _)| (*name, 0.0, 0.0)).collect();
    totals.push(("everything else", 0.0, 0.0));
    for site in profile["pps"].as_array().into_iter().flatten() {
        let bytes = site["eb"].as_f64().unwrap_or(0.0);
        let blocks = site["ebk"].as_f64().unwrap_or(0.0);
        if blocks * 8.0 < streams as f64 {
            continue;
        }
        let stack: Vec<&str> = site["fs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| frames.get(i.as_u64()? as usize).copied())
            .collect();
        let part = stack
            .iter()
            .find_map(|frame| {
                PARTS
                    .iter()
                    .position(|(_, marks)| marks.iter().any(|mark| frame.contains(mark)))
            })
            .unwrap_or(PARTS.len());
        totals[part].1 += bytes / streams as f64;
        totals[part].2 += blocks / streams as f64;
    }
    totals
}

fn main() {
    let streams: usize = std::env::var("TIDEWIRE_BENCH_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let profile_file =
        std::env::temp_dir().join(format!("tidewire-idle-heap-{}.json", std::process::id()));
    let profiler = dhat::Profiler::builder()
        .file_name(&profile_file)
        .trim_backtraces(Some(40))
        .build();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let data_dir = tempfile::tempdir().expect("a data directory");
    let mut config = Config {
        data_dir: data_dir.path().to_owned(),
        pipeline: tidewire::config::PipelineConfig::generation_only(),
        max_concurrent_runs: streams * 2,
        ..Config::default()
    };
    config.llm.default = "synthetic".into();
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("an address");
        let state = tidewire::open(config).await.expect("the server's state");
        tokio::spawn(tidewire::serve(listener, state, std::future::pending()));
        addr
    });

    // One stream first, so what is made once (statements, caches) is made.
    let mut warm = TcpStream::connect(addr).expect("a connection");
    warm.write_all(&idle_request(addr, usize::MAX))
        .expect("a request");
    read_run_event(&mut warm).expect("a first stream");
    settle();

    let before = snapshot();
    let mut sockets: Vec<TcpStream> = Vec::with_capacity(streams);
    for _ in 0..streams {
        sockets.push(TcpStream::connect(addr).expect("a connection"));
    }
    settle();
    let connected = snapshot();
    for (index, socket) in sockets.iter_mut().enumerate() {
        socket
            .write_all(&idle_request(addr, index))
            .expect("a request");
        read_run_event(socket).expect("an idle stream");
    }
    settle();
    let streaming = snapshot();
    // The profile is written as the streams are now: open and quiet.
    drop(profiler);
    let parts = parts(&profile_file, streams);
    match std::env::var_os("TIDEWIRE_BENCH_PROFILE") {
        Some(keep) => {
            std::fs::rename(&profile_file, &keep).expect("dhat's profile kept");
        }
        None => {
            let _ = std::fs::remove_file(&profile_file);
        }
    }

    let connection = growth(before, connected, streams);
    let stream = growth(connected, streaming, streams);
    let total = growth(before, streaming, streams);
    println!("## Memory of an idle stream, by part\n");
    println!(
        "`cargo bench -p tidewire --bench idle_memory`: {streams} idle streams (the chat route, \
         a run waiting for its next token) served in one process, heap bytes and allocations \
         live per stream as a counting allocator (dhat) sees them.\n"
    );
    println!("| | bytes per stream | allocations per stream |");
    println!("|---|---:|---:|");
    let row = |part: &str, bytes: f64, blocks: f64| {
        println!("| {part} | {bytes:.0} | {blocks:.1} |");
    };
    row(
        "a connection accepted, before its request",
        connection.bytes,
        connection.blocks,
    );
    row("then its request, streaming", stream.bytes, stream.blocks);
    row("**total per idle stream**", total.bytes, total.blocks);
    println!("\nThe same heap by what each allocation is for (its call stack):\n");
    println!("| part | bytes per stream | allocations per stream |");
    println!("|---|---:|---:|");
    for (part, bytes, blocks) in parts {
        row(part, bytes, blocks);
    }
    drop(sockets);
    drop(warm);
    runtime.shutdown_timeout(Duration::from_secs(1));
}
