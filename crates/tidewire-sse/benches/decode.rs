//! Decoding speed of tidewire-sse beside sseer and eventsource-stream, on the same
//! inputs in the same run.
//!
//! (a) an LLM-like stream: 100,000 `id`/`event: token`/`data: {"token":"word"}` events,
//!     fed in 1 KiB and in 16 KiB chunks;
//! (b) large events: 64 KiB of data over many lines each, fed in 64 KiB chunks.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use futures::executor::block_on;
use futures::stream;

const TOKEN_EVENTS: usize = 100_000;
const LARGE_EVENTS: usize = 64;

fn token_stream() -> Vec<u8> {
    let mut out = Vec::new();
    for n in 1..=TOKEN_EVENTS {
        out.extend_from_slice(
            format!("id: {n}\nevent: token\ndata: {{\"token\":\"word\"}}\n\n").as_bytes(),
        );
    }
    out
}

fn large_events() -> Vec<u8> {
    let line = format!("data: {}\n", "x".repeat(79));
    let per_event = 64 * 1024 / line.len();
    let mut out = Vec::new();
    for n in 0..LARGE_EVENTS {
        out.extend_from_slice(format!("id: {n}\n").as_bytes());
        for _ in 0..per_event {
            out.extend_from_slice(line.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

fn chunks(input: &[u8], size: usize) -> Vec<Bytes> {
    input.chunks(size).map(Bytes::copy_from_slice).collect()
}

fn byte_stream(chunks: &[Bytes]) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + '_ {
    stream::iter(chunks.iter().cloned().map(Ok))
}

/// tidewire-sse's sans-I/O decoder, borrowed events (no allocation per event).
fn tidewire_borrowed(chunks: &[Bytes]) -> usize {
    let mut decoder = tidewire_sse::Decoder::new();
    let mut total = 0;
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(event) = decoder.next_event() {
            let event = event.unwrap();
            total += event.data.len() + event.id.len() + event.event.len();
        }
    }
    total
}

/// tidewire-sse's sans-I/O decoder, owned events: the same output the peers produce.
fn tidewire_owned(chunks: &[Bytes]) -> usize {
    let mut decoder = tidewire_sse::Decoder::new();
    let mut total = 0;
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(event) = decoder.next_owned() {
            let e = event.unwrap();
            total += e.data().len() + e.id().len() + e.event().len();
        }
    }
    total
}

/// tidewire-sse's `Stream` adapter, owned events: the peers' API shape.
fn tidewire_stream(chunks: &[Bytes]) -> usize {
    block_on(
        tidewire_sse::EventStream::new(byte_stream(chunks)).fold(0, |n, e| async move {
            let e = e.unwrap();
            n + e.data().len() + e.id().len() + e.event().len()
        }),
    )
}

fn sseer(chunks: &[Bytes]) -> usize {
    block_on(
        sseer::EventStream::new(byte_stream(chunks)).fold(0, |n, e| async move {
            let e = e.unwrap();
            n + e.data.len() + e.id.len() + e.event.len()
        }),
    )
}

fn eventsource_stream(chunks: &[Bytes]) -> usize {
    block_on(
        byte_stream(chunks)
            .eventsource()
            .fold(0, |n, e| async move {
                let e = e.unwrap();
                n + e.data.len() + e.id.len() + e.event.len()
            }),
    )
}

type Decode = fn(&[Bytes]) -> usize;

const DECODERS: [(&str, Decode); 5] = [
    ("tidewire-sse", tidewire_owned),
    ("tidewire-sse-borrowed", tidewire_borrowed),
    ("tidewire-sse-stream", tidewire_stream),
    ("sseer", sseer),
    ("eventsource-stream", eventsource_stream),
];

fn bench_inputs(c: &mut Criterion) {
    let tokens = token_stream();
    let large = large_events();
    let cases = [
        (
            "llm-tokens/1KiB-chunks",
            chunks(&tokens, 1024),
            TOKEN_EVENTS,
        ),
        (
            "llm-tokens/16KiB-chunks",
            chunks(&tokens, 16 * 1024),
            TOKEN_EVENTS,
        ),
        (
            "large-events/64KiB-chunks",
            chunks(&large, 64 * 1024),
            LARGE_EVENTS,
        ),
    ];
    for (name, input, events) in &cases {
        // Every decoder must agree before its speed means anything.
        let expected = tidewire_borrowed(input);
        for (decoder, decode) in DECODERS {
            assert_eq!(
                decode(input),
                expected,
                "{decoder} decodes {name} differently"
            );
        }
        let mut group = c.benchmark_group(*name);
        group.throughput(Throughput::Elements(*events as u64));
        for (decoder, decode) in DECODERS {
            group.bench_with_input(BenchmarkId::from_parameter(decoder), input, |b, input| {
                b.iter(|| black_box(decode(black_box(input))));
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench_inputs
}
criterion_main!(benches);
