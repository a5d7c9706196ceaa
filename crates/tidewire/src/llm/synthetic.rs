//! The synthetic backend: deterministic text for demos, tests and benchmarks.
//!
//! The same message gives the same tokens (a longer `max_tokens` continues the same
//! text), exactly `max_tokens` of them (so it always stops for `length`), paced at `tokens_per_second` against a fixed
//! schedule so delays do not accumulate.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;
use tidewire_protocol::Usage;
use tokio::time::{Instant, Sleep};

use super::{Backend, Chunk, Generation, GenerationRequest, LlmError, TokenStream};

const WORDS: &[&str] = &[
    "stream", "token", "answer", "river", "signal", "quiet", "bright", "model", "event", "ocean",
    "current", "steady", "reply", "thread", "gentle", "swift", "wire", "harbor", "light", "value",
    "story", "source", "tide", "moment", "clear", "simple", "detail", "context", "question",
    "useful", "pattern", "careful", "window", "result", "open", "measure", "balance", "record",
    "echo", "path", "shore", "breeze", "compass", "anchor", "lantern", "meadow", "summit",
    "voyage", "beacon", "harvest", "granite", "silver", "orbit", "canvas", "fabric", "rhythm",
    "horizon", "ember", "crystal", "atlas", "journey", "garden", "thunder", "willow",
];

/// Tokens produced between two voluntary yields when unpaced, so one fast run cannot
/// hold a worker thread.
const YIELD_EVERY: u32 = 32;

/// The synthetic backend.
#[derive(Debug, Clone, Default)]
pub struct Synthetic;

#[async_trait]
impl Backend for Synthetic {
    fn model(&self) -> &str {
        "synthetic"
    }

    fn is_language_model(&self) -> bool {
        false
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, LlmError> {
        let prompt = request.question();
        let prompt_tokens = request.prompt_words();
        let stream: TokenStream = Box::pin(SyntheticStream::new(
            prompt,
            prompt_tokens,
            request.max_tokens.unwrap_or(super::BUILT_IN_MAX_TOKENS),
            request.tokens_per_second,
        ));
        Ok(Generation {
            model: self.model().to_owned(),
            stream,
        })
    }
}

/// The token stream of one synthetic answer.
pub struct SyntheticStream {
    rng: u64,
    produced: u32,
    total: u32,
    prompt_tokens: u64,
    interval: Option<Duration>,
    start: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    capitalize: bool,
    yielded: bool,
    /// What followed the last token: 0 nothing, 1 the finish reason, 2 the usage.
    tail: u8,
}

impl SyntheticStream {
    fn new(prompt: &str, prompt_tokens: u64, max_tokens: u32, tokens_per_second: f64) -> Self {
        // Requests are validated to a sane pace; a pace too slow for a `Duration`
        // (1e-300 tokens a second) still must not panic here.
        let interval = (tokens_per_second > 0.0)
            .then(|| Duration::try_from_secs_f64(1.0 / tokens_per_second).ok())
            .flatten();
        Self {
            rng: fnv1a(prompt.as_bytes()),
            produced: 0,
            total: max_tokens,
            prompt_tokens,
            interval,
            start: Instant::now(),
            sleep: None,
            capitalize: true,
            yielded: false,
            tail: 0,
        }
    }

    fn next_word(&mut self) -> String {
        self.rng = splitmix64(self.rng);
        let word = WORDS[(self.rng % WORDS.len() as u64) as usize];
        let mut text = String::with_capacity(word.len() + 2);
        if self.produced > 0 {
            text.push(' ');
        }
        if self.capitalize {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.extend(first.to_uppercase());
                text.push_str(chars.as_str());
            }
        } else {
            text.push_str(word);
        }
        // About one sentence in nine words.
        self.capitalize = (self.rng >> 32).is_multiple_of(9);
        if self.capitalize || self.produced + 1 == self.total {
            text.push('.');
        }
        text
    }
}

impl Stream for SyntheticStream {
    type Item = Result<Chunk, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.produced >= self.total {
            self.tail = self.tail.saturating_add(1);
            return Poll::Ready(match self.tail {
                1 => Some(Ok(Chunk::Finish("length".into()))),
                2 => {
                    let usage = Usage::new(self.prompt_tokens, u64::from(self.total));
                    Some(Ok(Chunk::Usage(usage)))
                }
                _ => None,
            });
        }
        match self.interval {
            Some(interval) => {
                // Token n is due at start + n * interval: a late wake-up does not
                // push every later token back.
                let offset = interval.saturating_mul(self.produced);
                let due = self.start.checked_add(offset).unwrap_or_else(far_future);
                if due > Instant::now() {
                    let sleep = self
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                    sleep.as_mut().reset(due);
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
            None => {
                if self.produced > 0 && self.produced.is_multiple_of(YIELD_EVERY) && !self.yielded {
                    // Yield once, then produce this token on the next poll.
                    self.yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.yielded = false;
            }
        }
        let word = self.next_word();
        self.produced += 1;
        Poll::Ready(Some(Ok(Chunk::Text(word))))
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A time that never comes in practice (a year away), for a due time past what an
/// `Instant` can hold.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::llm::{PromptMessage, PromptRole};

    fn request(message: &str, max_tokens: u32, tokens_per_second: f64) -> GenerationRequest {
        GenerationRequest {
            context: Vec::new(),
            messages: vec![PromptMessage::new(PromptRole::User, message)],
            max_tokens: Some(max_tokens),
            tokens_per_second,
            sampling: Default::default(),
            tools: Vec::new(),
            tool_choice: None,
        }
    }

    async fn collect(request: GenerationRequest) -> (Vec<String>, Option<Usage>) {
        let mut stream = Synthetic.generate(request).await.unwrap().stream;
        let mut tokens = Vec::new();
        let mut usage = None;
        while let Some(chunk) = stream.next().await {
            match chunk.unwrap() {
                Chunk::Text(text) => tokens.push(text),
                Chunk::Usage(u) => usage = Some(u),
                Chunk::Finish(_) | Chunk::Sources(_) | Chunk::Score(_) | Chunk::ToolCall(_) => {}
            }
        }
        (tokens, usage)
    }

    #[tokio::test]
    async fn same_message_same_tokens_exact_count_and_usage() {
        let (a, usage) = collect(request("what is a tide?", 64, 0.0)).await;
        let (b, _) = collect(request("what is a tide?", 64, 0.0)).await;
        let (longer, _) = collect(request("what is a tide?", 80, 0.0)).await;
        let (other, _) = collect(request("something else", 64, 0.0)).await;
        assert_eq!(a.len(), 64);
        assert_eq!(a, b);
        assert_eq!(a[..63], longer[..63]);
        assert_ne!(a, other);
        assert_eq!(usage, Some(Usage::new(4, 64)));
        assert!(a[0].starts_with(char::is_uppercase));
        assert!(a[63].ends_with('.'));
    }

    #[tokio::test(start_paused = true)]
    async fn paced_tokens_follow_a_fixed_schedule() {
        let start = Instant::now();
        let mut stream = Synthetic
            .generate(request("pace", 5, 10.0))
            .await
            .unwrap()
            .stream;
        let mut arrivals = Vec::new();
        while let Some(Ok(Chunk::Text(_))) = stream.next().await {
            arrivals.push(start.elapsed());
        }
        let expected: Vec<Duration> = (0..5).map(|n| Duration::from_millis(100 * n)).collect();
        assert_eq!(arrivals, expected);
    }
}
