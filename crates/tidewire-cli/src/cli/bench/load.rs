//! One benchmark stream: send the request, decode the SSE body with tidewire-sse,
//! and time every event as it is dispatched.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::http1::{Client, Target};

/// What each stream sends.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// The SSE URL.
    pub url: String,
    /// Where the URL's requests go.
    pub target: Target,
    /// `GET` or `POST`.
    pub method: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body; `{i}` is replaced by the client index.
    pub body: Option<String>,
    /// The event name of answer tokens.
    pub token_event: String,
    /// The event name that ends a stream successfully.
    pub done_event: String,
    /// An event whose data is this ends a stream successfully too (OpenAI's
    /// unnamed `data: [DONE]`).
    pub done_data: Option<String>,
}

impl RequestSpec {
    /// The same streams on another URL, with another method and body.
    pub fn elsewhere(&self, url: &str, method: &str, body: Option<String>) -> Result<Self, String> {
        Ok(Self {
            url: url.to_owned(),
            target: Target::parse(url)?,
            method: method.to_owned(),
            body,
            ..self.clone()
        })
    }

    /// The request bytes of stream `index`.
    pub fn build(&self, index: usize) -> Vec<u8> {
        let body = self
            .body
            .as_ref()
            .map(|body| body.replace("{i}", &index.to_string()));
        self.target
            .request(&self.method, &self.headers, body.as_deref())
    }
}

/// When each event of one stream arrived, relative to the request.
#[derive(Debug, Default)]
pub struct StreamTimes {
    /// Time to the first event.
    pub first_event: Option<Duration>,
    /// Time to the last event.
    pub last_event: Option<Duration>,
    /// Arrival time of each token event.
    pub tokens: Vec<Duration>,
    /// All events received.
    pub events: u64,
    /// The `run` event's `run_id` and `events_url`, when present.
    pub run: Option<(String, String)>,
}

/// Why a stream failed.
pub type StreamError = String;

/// Runs stream `index` to its end on `client` (which keeps the connection for its
/// next stream when the server allows); `on_event` sees the times after each event.
pub async fn run_stream(
    client: &mut Client,
    spec: &RequestSpec,
    index: usize,
    mut on_event: impl FnMut(&StreamTimes),
) -> Result<StreamTimes, StreamError> {
    let request = spec.build(index);
    let start = Instant::now();
    let mut response = client
        .send(&spec.target, &request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let mut decoder = tidewire_sse::Decoder::new();
    let mut times = StreamTimes::default();
    let mut done = false;
    let mut failure = None;
    let mut more = true;
    while more && failure.is_none() {
        more = response
            .next(|data| {
                let now = start.elapsed();
                decoder.push(data);
                while let Some(event) = decoder.next_event() {
                    let event = match event {
                        Ok(event) => event,
                        Err(error) => {
                            failure = Some(format!("bad stream: {error}"));
                            return;
                        }
                    };
                    times.events += 1;
                    times.first_event.get_or_insert(now);
                    times.last_event = Some(now);
                    if spec.done_data.as_deref() == Some(event.data)
                        || event.event == spec.done_event
                    {
                        done = true;
                    } else if event.event == spec.token_event {
                        times.tokens.push(now);
                    } else if event.event == "run" && times.run.is_none() {
                        times.run = run_ids(event.data);
                    }
                    on_event(&times);
                }
            })
            .await
            .map_err(|e| format!("stream broke: {e}"))?;
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    if done {
        Ok(times)
    } else {
        Err("the stream ended without its done event".into())
    }
}

fn run_ids(data: &str) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    Some((
        value["run_id"].as_str()?.to_owned(),
        value["events_url"].as_str()?.to_owned(),
    ))
}

/// A latency histogram in microseconds, three significant digits, up to one hour.
#[allow(clippy::expect_used)] // constant bounds that hdrhistogram accepts
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records a duration in microseconds.
pub fn record(histogram: &mut Histogram<u64>, value: Duration) {
    let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX).max(1);
    histogram.saturating_record(micros);
}

/// p50, p99 and max in milliseconds.
pub fn summary(histogram: &Histogram<u64>) -> serde_json::Value {
    let ms = |micros: u64| micros as f64 / 1000.0;
    if histogram.is_empty() {
        return serde_json::json!({"p50_ms": null, "p99_ms": null, "max_ms": null, "count": 0});
    }
    serde_json::json!({
        "p50_ms": ms(histogram.value_at_quantile(0.50)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "max_ms": ms(histogram.max()),
        "count": histogram.len(),
    })
}

/// First-token times through the server beside a baseline, and the difference of
/// their p50 and p99.
pub fn overhead_report(
    requests: usize,
    errors: u64,
    through: &Histogram<u64>,
    baseline_name: &str,
    baseline: &Histogram<u64>,
) -> serde_json::Value {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut report = serde_json::json!({
        "requests": requests,
        "errors": errors,
        "events": 0,
        "through_server": summary(through),
        "overhead_p50_ms": ms(through, 0.5) - ms(baseline, 0.5),
        "overhead_p99_ms": ms(through, 0.99) - ms(baseline, 0.99),
    });
    report[baseline_name] = summary(baseline);
    report
}
