//! `tidewire bench`: a load generator for any SSE endpoint, decoding with
//! tidewire-sse, with the server's CPU and memory read from `/proc`.
//!
//! Workloads: `burst` (streams as fast as possible), `paced` (lateness of paced
//! tokens against their schedule), `idle` (open streams held, memory per stream),
//! `fanout` (one run, many subscribers) and `overhead` (time to first token through
//! the server minus the same generation in this process).

mod http1;
mod load;
mod procfs;
mod raw;
mod upstream;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;

use http1::Client;
use load::{RequestSpec, histogram, overhead_report, record, run_stream, summary};

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// C concurrent streams, K requests in total, tokens as fast as possible.
    Burst,
    /// C concurrent streams of M tokens at R tokens/s: lateness against the schedule.
    Paced,
    /// C open streams held S seconds: how many stay open, server memory per stream.
    Idle,
    /// One run followed by N subscribers on its events URL.
    Fanout,
    /// Time to first token through the server minus the same generation in process.
    Overhead,
    /// Time to first token through tidewire minus straight from its model server
    /// (`--direct-url`, such as the mock below).
    Upstream,
    /// Serve a zero-delay OpenAI-compatible model on `--addr` (for `upstream`).
    MockUpstream,
    /// Serve the chat route with the smallest writer on `--addr`: raw sockets,
    /// pre-encoded bytes, one write per token (the machine's limit for `paced`).
    RawPeer,
}

/// Options of `tidewire bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to run.
    #[arg(value_enum)]
    workload: Workload,
    /// The SSE URL (for `fanout`, the URL that starts the run).
    #[arg(long, default_value = "http://127.0.0.1:8080/api/chat")]
    url: String,
    /// HTTP method of each stream.
    #[arg(long, default_value = "POST")]
    method: String,
    /// An extra header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// The request body (JSON); `{i}` becomes the client index. Default: a tidewire
    /// chat request with the workload's tokens and rate.
    #[arg(long)]
    body: Option<String>,
    /// Concurrent streams (C).
    #[arg(short = 'c', long, default_value_t = 100)]
    concurrency: usize,
    /// Requests in total (K), for `burst` and `overhead`.
    #[arg(short = 'n', long, default_value_t = 1000)]
    requests: usize,
    /// Tokens per answer (M).
    #[arg(long, default_value_t = 100)]
    tokens: u32,
    /// Tokens per second (R) for `paced` and `fanout`.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds to hold the streams open, for `idle`.
    #[arg(long, default_value_t = 10)]
    hold: u64,
    /// For `fanout`: subscribe on this server (another node of a cluster, such as
    /// `http://127.0.0.1:8081`) instead of the one that started the run.
    #[arg(long)]
    follow_url: Option<String>,
    /// Subscribers (N), for `fanout`.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// The event name of answer tokens.
    #[arg(long, default_value = "token")]
    token_event: String,
    /// The event name that ends a stream.
    #[arg(long, default_value = "done")]
    done_event: String,
    /// An event whose data is this ends a stream too (OpenAI's `[DONE]`).
    #[arg(long)]
    done_data: Option<String>,
    /// For `upstream`: the model server's own chat completions URL.
    #[arg(long)]
    direct_url: Option<String>,
    /// For `mock-upstream` and `raw-peer`: where to listen.
    #[arg(long, default_value = "127.0.0.1:18090")]
    addr: std::net::SocketAddr,
    /// Sample this process (and its children) from /proc: CPU and peak memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Stop the workload after this many seconds, whatever remains.
    #[arg(long, default_value_t = 300)]
    max_time: u64,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
}

/// Runs `tidewire bench`.
pub fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.workload {
        Workload::MockUpstream => {
            upstream::serve_mock(args.addr).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Workload::RawPeer => {
            raw::serve(args.addr).await?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let spec = spec(&args)?;
    let server_before = args.server_pid.and_then(procfs::sample);
    let sampler = args
        .server_pid
        .map(|pid| procfs::Sampler::start(pid, Duration::from_millis(100)));
    let self_before = procfs::sample_self();
    let started = Instant::now();

    let workload = async {
        match args.workload {
            Workload::Burst => burst(&spec, &args).await,
            Workload::Paced => paced(&spec, &args).await,
            Workload::Idle => idle(&spec, &args).await,
            Workload::Fanout => fanout(&spec, &args).await,
            Workload::Overhead => overhead(&spec, &args).await,
            Workload::Upstream => {
                let direct = args
                    .direct_url
                    .as_deref()
                    .context("the upstream workload needs --direct-url")?;
                let client = reqwest::Client::builder()
                    .http1_only()
                    .pool_max_idle_per_host(usize::MAX)
                    .connect_timeout(Duration::from_secs(10))
                    .build()?;
                upstream::overhead(&client, &args.url, direct, args.requests).await
            }
            Workload::MockUpstream | Workload::RawPeer => Ok(Value::Null),
        }
    };
    let mut result = match tokio::time::timeout(Duration::from_secs(args.max_time), workload).await
    {
        Ok(result) => result?,
        Err(_) => bail!(
            "the workload did not finish within --max-time {}s",
            args.max_time
        ),
    };
    let elapsed = started.elapsed();

    let events = result["events"].as_u64().unwrap_or(0);
    if let (Some(before), Some(pid)) = (server_before, args.server_pid) {
        let after = procfs::sample(pid).unwrap_or(before);
        let peak = match sampler {
            Some(sampler) => sampler.stop().await,
            None => 0,
        };
        let cpu = after.cpu_seconds - before.cpu_seconds;
        result["server"] = json!({
            "cpu_seconds": cpu,
            "cpu_us_per_event": if events > 0 { json!(cpu * 1e6 / events as f64) } else { Value::Null },
            "peak_rss_kib": peak.max(after.rss_kib),
            "rss_kib_after": after.rss_kib,
        });
    }
    if let (Some(before), Some(after)) = (self_before, procfs::sample_self()) {
        let cpu = after.cpu_seconds - before.cpu_seconds;
        result["loadgen"] = json!({
            "cpu_seconds": cpu,
            "cpu_share_of_one_core": cpu / elapsed.as_secs_f64().max(1e-9),
        });
    }
    result["workload"] = json!(format!("{:?}", args.workload).to_lowercase());
    result["elapsed_s"] = json!(elapsed.as_secs_f64());
    print_human(&result);
    if args.json {
        println!("{result}");
    }
    let errors = result["errors"].as_u64().unwrap_or(0);
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn spec(args: &BenchArgs) -> anyhow::Result<RequestSpec> {
    let method = args.method.to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        bail!("--method {:?} is not an HTTP method", args.method);
    }
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header {header:?} is not `Name: value`"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let body = match (&args.body, args.workload, method.as_str()) {
        (Some(body), _, _) => Some(body.clone()),
        (None, _, "GET") => None,
        (
            None,
            Workload::Burst
            | Workload::Overhead
            | Workload::Upstream
            | Workload::MockUpstream
            | Workload::RawPeer,
            _,
        ) => Some(chat_body(args.tokens, 0.0)),
        (None, Workload::Paced | Workload::Fanout, _) => Some(chat_body(args.tokens, args.rate)),
        // One token now, the next long after the hold: the stream stays open, quiet.
        (None, Workload::Idle, _) => Some(chat_body(2, 1.0 / (args.hold as f64 + 60.0))),
    };
    Ok(RequestSpec {
        url: args.url.clone(),
        target: http1::Target::parse(&args.url).map_err(anyhow::Error::msg)?,
        method,
        headers,
        body,
        token_event: args.token_event.clone(),
        done_event: args.done_event.clone(),
        done_data: args.done_data.clone(),
    })
}

fn chat_body(tokens: u32, rate: f64) -> String {
    json!({
        "message": "benchmark question number {i}",
        "options": {"max_tokens": tokens, "tokens_per_second": rate},
    })
    .to_string()
}

/// `burst`: C workers issue K requests in total, each read to its end.
async fn burst(spec: &RequestSpec, args: &BenchArgs) -> anyhow::Result<Value> {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (spec, next, errors) = (spec.clone(), Arc::clone(&next), Arc::clone(&errors));
        let total = args.requests;
        workers.push(tokio::spawn(async move {
            // One connection per worker, kept alive from one stream to the next.
            let mut client = Client::default();
            let (mut first, mut last) = (histogram(), histogram());
            let (mut events, mut done) = (0u64, 0u64);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                match run_stream(&mut client, &spec, index, |_| {}).await {
                    Ok(times) => {
                        done += 1;
                        events += times.events;
                        if let Some(t) = times.first_event {
                            record(&mut first, t);
                        }
                        if let Some(t) = times.last_event {
                            record(&mut last, t);
                        }
                    }
                    Err(error) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("stream {index}: {error}");
                        }
                    }
                }
            }
            (first, last, events, done)
        }));
    }
    let (mut first, mut last) = (histogram(), histogram());
    let (mut events, mut done) = (0, 0);
    for worker in workers {
        let (f, l, e, d) = worker.await?;
        first.add(&f)?;
        last.add(&l)?;
        events += e;
        done += d;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(json!({
        "concurrency": args.concurrency,
        "requests": args.requests,
        "completed": done,
        "errors": errors.load(Ordering::Relaxed),
        "events": events,
        "events_per_s": events as f64 / elapsed,
        "requests_per_s": done as f64 / elapsed,
        "time_to_first_event": summary(&first),
        "time_to_last_event": summary(&last),
    }))
}

/// The lateness of each token after the first, against `first + k / rate`.
fn record_lateness(histogram: &mut Histogram<u64>, tokens: &[Duration], rate: f64) {
    let Some(&first) = tokens.first() else { return };
    for (k, &arrival) in tokens.iter().enumerate().skip(1) {
        let ideal = first + Duration::from_secs_f64(k as f64 / rate);
        record(histogram, arrival.saturating_sub(ideal));
    }
}

/// `paced`: C streams at once, each of M tokens at R tokens/s.
async fn paced(spec: &RequestSpec, args: &BenchArgs) -> anyhow::Result<Value> {
    let errors = Arc::new(AtomicU64::new(0));
    let rate = args.rate;
    let mut streams = Vec::new();
    for index in 0..args.concurrency {
        let (spec, errors) = (spec.clone(), Arc::clone(&errors));
        streams.push(tokio::spawn(async move {
            let mut lateness = histogram();
            let mut events = 0;
            match run_stream(&mut Client::default(), &spec, index, |_| {}).await {
                Ok(times) => {
                    record_lateness(&mut lateness, &times.tokens, rate);
                    events = times.events;
                }
                Err(error) => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("stream {index}: {error}");
                    }
                }
            }
            (lateness, events)
        }));
    }
    let mut lateness = histogram();
    let mut events = 0;
    for stream in streams {
        let (h, e) = stream.await?;
        lateness.add(&h)?;
        events += e;
    }
    Ok(json!({
        "concurrency": args.concurrency,
        "tokens": args.tokens,
        "rate": rate,
        "errors": errors.load(Ordering::Relaxed),
        "events": events,
        "lateness": summary(&lateness),
    }))
}

/// At most this many `idle` streams are being opened at once.
const IDLE_OPENING: usize = 256;

/// `idle`: C streams opened and held; memory per stream from the server's RSS.
///
/// A tenth of the streams open first, and are held as long as all of them are later;
/// then the server's memory is sampled, the rest open, at most [`IDLE_OPENING`] at a
/// time, and after the hold it is sampled again. The figure is the growth between
/// the samples divided by the streams opened between them: what one more held
/// stream costs. Growth from before the first stream would also count what a server
/// allocates once, at its start and on its first requests (an index built in the
/// background, caches, a JIT's code): the same server measured 49 to 77 MB before
/// its first stream, depending on when the sample fell. And ten thousand requests
/// at once leave freed memory the allocator hands back late, up to 18 MB apart from
/// one run to the next.
async fn idle(spec: &RequestSpec, args: &BenchArgs) -> anyhow::Result<Value> {
    let start = args.server_pid.and_then(procfs::sample);
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let opening = Arc::new(tokio::sync::Semaphore::new(IDLE_OPENING));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut streams = Vec::new();
    let warm = (args.concurrency / 10).max(1).min(args.concurrency);
    let mut samples = Vec::new();
    for (first, last) in [(0, warm), (warm, args.concurrency)] {
        for index in first..last {
            let permit = Arc::clone(&opening).acquire_owned().await?;
            streams.push(tokio::spawn(idle_stream(
                spec.clone(),
                index,
                permit,
                [Arc::clone(&opened), Arc::clone(&closed)],
                Arc::clone(&errors),
                stop.clone(),
            )));
        }
        // Wait until every stream got its first event (or a minute passed).
        let deadline = Instant::now() + Duration::from_secs(60);
        while opened.load(Ordering::Relaxed) + closed.load(Ordering::Relaxed) < last
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Both samples after the same hold, so both see the server settled alike.
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
        samples.push((
            args.server_pid.and_then(procfs::sample),
            opened.load(Ordering::Relaxed),
        ));
    }
    let (before, open_before) = samples.first().copied().unwrap_or_default();
    let (loaded, open_at_start) = samples.last().copied().unwrap_or_default();
    let still_open = open_at_start.saturating_sub(closed.load(Ordering::Relaxed));
    stop.cancel();
    for stream in streams {
        let _ = stream.await;
    }
    let per_stream = |before: Option<procfs::Sample>, streams: usize| match (before, loaded) {
        (Some(before), Some(after)) if streams > 0 => {
            json!((after.rss_kib.saturating_sub(before.rss_kib)) as f64 * 1024.0 / streams as f64)
        }
        _ => Value::Null,
    };
    Ok(json!({
        "concurrency": args.concurrency,
        "hold_s": args.hold,
        "opened": open_at_start,
        "still_open": still_open,
        "errors": errors.load(Ordering::Relaxed),
        "events": 0,
        "server_bytes_per_stream": per_stream(before, open_at_start.saturating_sub(open_before)),
        "server_bytes_per_stream_from_start": per_stream(start, open_at_start),
        "streams_measured": open_at_start.saturating_sub(open_before),
        "server_rss_kib_start": start.map(|s| s.rss_kib),
        "server_rss_kib_before": before.map(|s| s.rss_kib),
        "server_rss_kib_loaded": loaded.map(|s| s.rss_kib),
    }))
}

/// One stream of `idle`: holds its opening permit until its first event, counts
/// itself as opened (then as closed, if it ends), and is held until `stop`.
async fn idle_stream(
    spec: RequestSpec,
    index: usize,
    permit: tokio::sync::OwnedSemaphorePermit,
    [opened, closed]: [Arc<AtomicUsize>; 2],
    errors: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut permit = Some(permit);
    let mut client = Client::default();
    let stream = run_stream(&mut client, &spec, index, |times| {
        if times.events > 0 && permit.take().is_some() {
            opened.fetch_add(1, Ordering::Relaxed);
        }
    });
    tokio::select! {
        () = stop.cancelled() => {}
        result = stream => {
            closed.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = result
                && errors.fetch_add(1, Ordering::Relaxed) < 3
            {
                eprintln!("stream {index}: {error}");
            }
        }
    }
}

/// `fanout`: one run started with the URL, then N subscribers on its events URL.
async fn fanout(spec: &RequestSpec, args: &BenchArgs) -> anyhow::Result<Value> {
    let base = reqwest::Url::parse(&spec.url)?;
    // The creating stream reports the run's address and its token times.
    let (run_tx, run_rx) = tokio::sync::oneshot::channel();
    let first_token = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let creator = {
        let (spec, first_token) = (spec.clone(), Arc::clone(&first_token));
        tokio::spawn(async move {
            let start = Instant::now();
            let mut run_tx = Some(run_tx);
            run_stream(&mut Client::default(), &spec, 0, |times| {
                if let Some(run) = &times.run
                    && let Some(tx) = run_tx.take()
                {
                    let _ = tx.send(run.clone());
                }
                if let Some(&first) = times.tokens.first() {
                    let mut anchor = first_token.lock().unwrap_or_else(|p| p.into_inner());
                    anchor.get_or_insert(start + first);
                }
            })
            .await
        })
    };
    let (_, events_url) = run_rx
        .await
        .context("the run did not start (no run event)")?;
    let events_url = match &args.follow_url {
        Some(node) => reqwest::Url::parse(node)?.join(&events_url)?,
        None => base.join(&events_url)?,
    };
    let subscriber_spec = spec
        .elsewhere(events_url.as_str(), "GET", None)
        .map_err(anyhow::Error::msg)?;
    let errors = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    for index in 0..args.subscribers {
        let (spec, errors) = (subscriber_spec.clone(), Arc::clone(&errors));
        subscribers.push(tokio::spawn(async move {
            let start = Instant::now();
            match run_stream(&mut Client::default(), &spec, index, |_| {}).await {
                Ok(times) => Some((start, times)),
                Err(error) => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("subscriber {index}: {error}");
                    }
                    None
                }
            }
        }));
    }
    let creator = creator
        .await?
        .map_err(|e| anyhow::anyhow!("the run's own stream failed: {e}"))?;
    let anchor = first_token
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .context("the run produced no token")?;
    let mut lateness = histogram();
    let mut delivered = 0u64;
    let mut window: Option<(Instant, Instant)> = None;
    for subscriber in subscribers {
        let Some((start, times)) = subscriber.await? else {
            continue;
        };
        delivered += times.events;
        let opened = start + times.first_event.unwrap_or_default();
        for (k, &arrival) in times.tokens.iter().enumerate() {
            let ideal = anchor + Duration::from_secs_f64(k as f64 / args.rate);
            // Events produced before this subscriber was attached are replay, not live.
            if ideal < opened {
                continue;
            }
            let at = start + arrival;
            record(&mut lateness, at.saturating_duration_since(ideal));
        }
        if let Some(last) = times.last_event {
            let (first, end) = window.unwrap_or((opened, start + last));
            window = Some((first.min(opened), end.max(start + last)));
        }
    }
    let seconds = window.map_or(0.0, |(a, b)| (b - a).as_secs_f64());
    Ok(json!({
        "subscribers": args.subscribers,
        "tokens": args.tokens,
        "rate": args.rate,
        "errors": errors.load(Ordering::Relaxed),
        "events": delivered + creator.events,
        "events_delivered": delivered,
        "events_per_s": if seconds > 0.0 { json!(delivered as f64 / seconds) } else { Value::Null },
        "lateness": summary(&lateness),
    }))
}

/// `overhead`: K sequential requests through the server, time to first token, beside
/// the same synthetic generation started in this process.
async fn overhead(spec: &RequestSpec, args: &BenchArgs) -> anyhow::Result<Value> {
    use futures_util::StreamExt;
    use tidewire::llm::{Backend, GenerationRequest, PromptMessage, PromptRole, Synthetic};

    let warmup = (args.requests / 10).max(10);
    let mut through = histogram();
    let mut errors = 0u64;
    let mut client = Client::default();
    for index in 0..warmup + args.requests {
        match run_stream(&mut client, spec, index, |_| {}).await {
            Ok(times) => {
                if index >= warmup
                    && let Some(&first) = times.tokens.first()
                {
                    record(&mut through, first);
                }
            }
            Err(error) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("request {index}: {error}");
                }
            }
        }
    }
    let mut direct = histogram();
    for index in 0..warmup + args.requests {
        let request = GenerationRequest {
            context: Vec::new(),
            messages: vec![PromptMessage::new(
                PromptRole::User,
                format!("benchmark question number {index}"),
            )],
            max_tokens: Some(args.tokens),
            tokens_per_second: 0.0,
            sampling: Default::default(),
            tools: Vec::new(),
            tool_choice: None,
        };
        let start = Instant::now();
        let mut stream = Synthetic
            .generate(request)
            .await
            .map_err(|e| anyhow::anyhow!(e))?
            .stream;
        let _ = stream.next().await;
        if index >= warmup {
            record(&mut direct, start.elapsed());
        }
    }
    Ok(overhead_report(
        args.requests,
        errors,
        &through,
        "in_process",
        &direct,
    ))
}

fn print_human(result: &Value) {
    let pretty = serde_json::to_string_pretty(result).unwrap_or_default();
    eprintln!("{pretty}");
}
