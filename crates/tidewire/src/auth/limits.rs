//! Per-user limits: requests per minute on the routes that start answers (a
//! token bucket per user, from `governor`), and answers running at once (counted
//! by the hub). Past a limit: 429 with `Retry-After`.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::AuthConfig;

/// A request over a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    /// Seconds until it may be tried again.
    pub retry_after: u32,
    /// What was exceeded.
    pub message: String,
}

/// The per-user limits.
pub struct Limits {
    per_minute: Option<(DefaultKeyedRateLimiter<String>, u32)>,
    concurrent: u32,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("per_minute", &self.per_minute.as_ref().map(|(_, n)| n))
            .field("concurrent", &self.concurrent)
            .finish()
    }
}

impl Limits {
    /// The limits of `config` (0: none).
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            per_minute: NonZeroU32::new(config.requests_per_minute)
                .map(|n| (RateLimiter::keyed(Quota::per_minute(n)), n.get())),
            concurrent: config.concurrent_runs,
        }
    }

    /// Counts one request of `user_id` that starts an answer.
    pub fn request(&self, user_id: &str) -> Result<(), RateLimited> {
        let Some((limiter, per_minute)) = &self.per_minute else {
            return Ok(());
        };
        limiter.check_key(&user_id.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RateLimited {
                retry_after: u32::try_from(wait.as_secs() + 1).unwrap_or(u32::MAX),
                message: format!(
                    "rate limit exceeded: {per_minute} requests a minute; try again in {}s",
                    wait.as_secs() + 1
                ),
            }
        })
    }

    /// Whether a user with `running()` answers running may start another
    /// (counted only when there is a limit: counting scans the runs in memory).
    pub fn start(&self, running: impl FnOnce() -> usize) -> Result<(), RateLimited> {
        if self.concurrent == 0 || running() < self.concurrent as usize {
            return Ok(());
        }
        Err(RateLimited {
            retry_after: 1,
            message: format!(
                "rate limit exceeded: {} answers may run at once; wait for one to end",
                self.concurrent
            ),
        })
    }
}
