//! Retries and fallback, while it is safe: until a first token exists, nothing has
//! reached a client, so a failed attempt can be retried (connection errors, 5xx,
//! 429 after its `Retry-After`, a first-token timeout) and then handed to the next
//! backend. After the first token, a retry would repeat or corrupt text: errors go
//! to the client as they are.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{Backend, Chunk, Generation, GenerationRequest, LlmError};
use crate::metrics::{BackendLabel, Metrics};

/// The longest `Retry-After` honoured by waiting; a backend that asks for more is
/// not retried (the next one is tried at once), so no run is parked for long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A backend, then the next ones if it fails before its first token.
pub struct Failover {
    chain: Vec<Arc<dyn Backend>>,
    /// Attempts per backend (the first one included).
    attempts: u32,
    /// The delay before the second attempt; it doubles after each failure.
    backoff: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let models: Vec<&str> = self.chain.iter().map(|b| b.model()).collect();
        f.debug_struct("Failover")
            .field("chain", &models)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl Failover {
    /// Tries `chain` in order, each up to `attempts` times.
    pub fn new(chain: Vec<Arc<dyn Backend>>, attempts: u32, backoff: Duration) -> Self {
        Self {
            chain,
            attempts: attempts.max(1),
            backoff,
            metrics: None,
        }
    }

    /// The same, counting retries and fallbacks into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, fallback: bool, backend: &dyn Backend) {
        if let Some(metrics) = &self.metrics {
            let family = if fallback {
                &metrics.upstream_fallbacks
            } else {
                &metrics.upstream_retries
            };
            let label = BackendLabel {
                backend: backend.model().to_owned(),
            };
            metrics.count(family, label);
        }
    }
}

#[async_trait]
impl Backend for Failover {
    fn model(&self) -> &str {
        self.chain.first().map_or("none", |backend| backend.model())
    }

    fn is_language_model(&self) -> bool {
        self.chain
            .first()
            .is_some_and(|backend| backend.is_language_model())
    }

    fn endpoint(&self) -> Option<&str> {
        self.chain.first().and_then(|backend| backend.endpoint())
    }

    fn supports_tools(&self) -> bool {
        self.chain
            .first()
            .is_some_and(|backend| backend.supports_tools())
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, LlmError> {
        let mut last = LlmError::new("no_backend", "no model backend is configured", false);
        let mut waits = Vec::new();
        let mut attempts = 0;
        for (index, backend) in self.chain.iter().enumerate() {
            if index > 0 {
                self.count(true, backend.as_ref());
            }
            for attempt in 0..self.attempts {
                if attempt > 0 {
                    self.count(false, backend.as_ref());
                    let backoff = self.backoff * 2u32.saturating_pow(attempt - 1);
                    tokio::time::sleep(last.retry_after.unwrap_or_default().max(backoff)).await;
                }
                attempts += 1;
                match until_first_token(backend.as_ref(), request.clone()).await {
                    Ok(generation) => return Ok(generation),
                    Err(error) => {
                        tracing::warn!(model = backend.model(), code = %error.code, attempt = attempt + 1, "model request failed before its first token");
                        let retry = error.retryable
                            && error.retry_after.is_none_or(|wait| wait <= MAX_RETRY_AFTER);
                        if error.code == FIRST_TOKEN_TIMEOUT
                            && let Some(waited) = error.timeout
                        {
                            waits.push((backend.model().to_owned(), waited));
                        }
                        last = error;
                        if !retry {
                            break;
                        }
                    }
                }
            }
        }
        Err(in_all(last, attempts, &waits))
    }
}

const FIRST_TOKEN_TIMEOUT: &str = "upstream_first_token_timeout";

/// The final error, when several attempts ran out of time before a first token,
/// says what the client waited in all: each attempt's own message ("within 1m")
/// hides that there were several.
fn in_all(mut last: LlmError, attempts: usize, waits: &[(String, Duration)]) -> LlmError {
    let [(first_model, first_wait), ..] = waits else {
        return last;
    };
    if last.code != FIRST_TOKEN_TIMEOUT || waits.len() < 2 {
        return last;
    }
    let format = |wait: Duration| humantime::format_duration(wait).to_string();
    let total: Duration = waits.iter().map(|(_, wait)| *wait).sum();
    let each = if waits.iter().all(|(_, wait)| wait == first_wait) {
        format!("{} each", format(*first_wait))
    } else {
        let mut list: Vec<String> = waits.iter().map(|(_, wait)| format(*wait)).collect();
        let final_wait = list.pop().unwrap_or_default();
        format!("{} and {final_wait}", list.join(", "))
    };
    let attempts = if attempts == waits.len() {
        format!("{attempts} attempts of {each}")
    } else {
        format!(
            "{attempts} attempts, {} of them waiting {each}",
            waits.len()
        )
    };
    let servers = if waits.iter().all(|(model, _)| model == first_model) {
        "the model server"
    } else {
        "the model servers"
    };
    last.message = format!(
        "{servers} sent no first token after {attempts} ({} in all)",
        format(total)
    );
    last.timeout = Some(total);
    last
}

/// Starts a generation and waits for its first token (or its end), so a failure
/// before it can still be retried. What came before the token is replayed.
async fn until_first_token(
    backend: &dyn Backend,
    request: GenerationRequest,
) -> Result<Generation, LlmError> {
    let mut generation = backend.generate(request).await?;
    let mut seen = Vec::new();
    let ended = loop {
        match generation.stream.next().await {
            Some(Ok(Chunk::Text(text))) if !text.is_empty() => {
                seen.push(Ok(Chunk::Text(text)));
                break false;
            }
            Some(Ok(other)) => seen.push(Ok(other)),
            Some(Err(error)) => return Err(error),
            None => break true,
        }
    };
    let replay = futures_util::stream::iter(seen);
    Ok(Generation {
        model: generation.model,
        // A stream that ended (an answer of tool calls only) is not polled again.
        stream: if ended {
            Box::pin(replay)
        } else {
            Box::pin(replay.chain(generation.stream))
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::llm::{PromptMessage, PromptRole, TokenStream};

    /// A backend that plays a script: one list of items per call.
    struct Scripted {
        name: &'static str,
        calls: Mutex<Vec<Vec<Result<Chunk, LlmError>>>>,
    }

    #[async_trait]
    impl Backend for Scripted {
        fn model(&self) -> &str {
            self.name
        }

        async fn generate(&self, _: GenerationRequest) -> Result<Generation, LlmError> {
            let items = self.calls.lock().unwrap().remove(0);
            let stream: TokenStream = Box::pin(futures_util::stream::iter(items));
            Ok(Generation {
                model: self.name.into(),
                stream,
            })
        }
    }

    fn request() -> GenerationRequest {
        GenerationRequest {
            context: Vec::new(),
            messages: vec![PromptMessage::new(PromptRole::User, "q")],
            max_tokens: Some(5),
            tokens_per_second: 0.0,
            sampling: Default::default(),
            tools: Vec::new(),
            tool_choice: None,
        }
    }

    async fn texts(generation: Generation) -> (String, Vec<String>) {
        let items: Vec<_> = generation.stream.collect().await;
        let texts = items
            .into_iter()
            .map(|item| match item {
                Ok(Chunk::Text(t)) => t,
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("error {}", e.code),
            })
            .collect();
        (generation.model, texts)
    }

    fn unavailable() -> LlmError {
        LlmError::new("upstream_unavailable", "503", true)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_then_falls_back_before_the_first_token_only() {
        let primary = Arc::new(Scripted {
            name: "primary",
            calls: Mutex::new(vec![vec![Err(unavailable())], vec![Err(unavailable())]]),
        });
        let secondary = Arc::new(Scripted {
            name: "secondary",
            calls: Mutex::new(vec![vec![
                Ok(Chunk::Usage(tidewire_protocol::Usage::new(1, 0))),
                Ok(Chunk::Text("a".into())),
                Err(unavailable()),
            ]]),
        });
        let failover = Failover::new(
            vec![primary.clone(), secondary],
            2,
            Duration::from_millis(10),
        );
        let (model, items) = texts(failover.generate(request()).await.unwrap()).await;
        assert_eq!(model, "secondary");
        // The error after the first token is not retried: it reaches the client.
        assert_eq!(
            items,
            [
                "Usage(Usage { prompt_tokens: 1, completion_tokens: 0, total_tokens: 1 })",
                "a",
                "error upstream_unavailable"
            ]
        );
        assert!(
            primary.calls.lock().unwrap().is_empty(),
            "both attempts used"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_retryable_error_moves_to_the_next_backend_at_once() {
        let primary = Arc::new(Scripted {
            name: "primary",
            calls: Mutex::new(vec![
                vec![Err(LlmError::new("upstream_auth_failed", "401", false))],
                vec![],
            ]),
        });
        let secondary = Arc::new(Scripted {
            name: "secondary",
            calls: Mutex::new(vec![vec![Ok(Chunk::Text("ok".into()))]]),
        });
        let failover = Failover::new(
            vec![primary.clone(), secondary],
            3,
            Duration::from_millis(10),
        );
        let (model, items) = texts(failover.generate(request()).await.unwrap()).await;
        assert_eq!(
            (model.as_str(), items),
            ("secondary", vec!["ok".to_owned()])
        );
        assert_eq!(primary.calls.lock().unwrap().len(), 1, "no retry of a 401");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_error_is_reported_when_everything_fails() {
        let only = Arc::new(Scripted {
            name: "only",
            calls: Mutex::new(vec![
                vec![Err(unavailable())],
                vec![Err(LlmError::new("upstream_incomplete", "cut", true))],
            ]),
        });
        let failover = Failover::new(vec![only], 2, Duration::from_millis(10));
        let error = failover.generate(request()).await.unwrap_err();
        assert_eq!(error.code, "upstream_incomplete");
    }

    fn no_first_token(after: Duration) -> LlmError {
        crate::llm::http::timeout_error("first_token", after, true)
    }

    #[tokio::test(start_paused = true)]
    async fn first_token_timeouts_in_a_row_say_what_was_waited_in_all() {
        let only = Arc::new(Scripted {
            name: "only",
            calls: Mutex::new(vec![
                vec![Err(no_first_token(Duration::from_secs(60)))],
                vec![Err(no_first_token(Duration::from_secs(60)))],
            ]),
        });
        let failover = Failover::new(vec![only], 2, Duration::from_millis(10));
        let error = failover.generate(request()).await.unwrap_err();
        assert_eq!(error.code, "upstream_first_token_timeout");
        assert_eq!(
            error.message,
            "the model server sent no first token after 2 attempts of 1m each (2m in all)"
        );

        let primary = Arc::new(Scripted {
            name: "primary",
            calls: Mutex::new(vec![
                vec![Err(no_first_token(Duration::from_secs(60)))],
                vec![Err(no_first_token(Duration::from_secs(60)))],
            ]),
        });
        let secondary = Arc::new(Scripted {
            name: "secondary",
            calls: Mutex::new(vec![
                vec![Err(unavailable())],
                vec![Err(no_first_token(Duration::from_secs(20)))],
            ]),
        });
        let failover = Failover::new(vec![primary, secondary], 2, Duration::from_millis(10));
        let error = failover.generate(request()).await.unwrap_err();
        assert_eq!(
            error.message,
            "the model servers sent no first token after 4 attempts, 3 of them waiting \
             1m, 1m and 20s (2m 20s in all)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_first_token_timeout_keeps_its_own_message() {
        let only = Arc::new(Scripted {
            name: "only",
            calls: Mutex::new(vec![
                vec![Err(unavailable())],
                vec![Err(no_first_token(Duration::from_secs(60)))],
            ]),
        });
        let failover = Failover::new(vec![only], 2, Duration::from_millis(10));
        let error = failover.generate(request()).await.unwrap_err();
        assert_eq!(
            error.message,
            "the model server did not send a first token within 1m"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_of_a_day_moves_to_the_next_backend_instead_of_waiting() {
        let mut rate_limited = LlmError::new("upstream_rate_limited", "429", true);
        rate_limited.retry_after = Some(Duration::from_secs(86_400));
        let primary = Arc::new(Scripted {
            name: "primary",
            calls: Mutex::new(vec![vec![Err(rate_limited)], vec![]]),
        });
        let secondary = Arc::new(Scripted {
            name: "secondary",
            calls: Mutex::new(vec![vec![Ok(Chunk::Text("ok".into()))]]),
        });
        let failover = Failover::new(
            vec![primary.clone(), secondary],
            3,
            Duration::from_millis(10),
        );
        let started = tokio::time::Instant::now();
        let (model, _) = texts(failover.generate(request()).await.unwrap()).await;
        assert_eq!(model, "secondary");
        assert!(started.elapsed() < MAX_RETRY_AFTER, "no day-long wait");
        assert_eq!(primary.calls.lock().unwrap().len(), 1, "not retried");
    }
}
