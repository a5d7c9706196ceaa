//! Reconnection policy: exponential backoff with full jitter.

use std::time::Duration;

/// When and how often to reconnect.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The delay bound of the first retry.
    pub initial_delay: Duration,
    /// How much the bound grows after each failed attempt.
    pub factor: f64,
    /// The largest bound.
    pub max_delay: Duration,
    /// Attempts in a row without progress before giving up (the first one counts).
    pub max_attempts: u32,
    /// The longest wait a server's `retry:` or `Retry-After` can impose: a server
    /// asking for a day must not park the client for a day.
    pub max_server_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(200),
            factor: 2.0,
            max_delay: Duration::from_secs(10),
            max_attempts: 8,
            max_server_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first): a uniformly random
    /// duration up to the exponential bound ("full jitter", so clients that lost
    /// the same server do not come back in step), but never less than what the
    /// server asked for with `retry:` or `Retry-After` (up to `max_server_delay`).
    pub fn delay(&self, retry: u32, server_hint: Option<Duration>) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let bound = self.initial_delay.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        let bound = bound.min(self.max_delay.as_secs_f64());
        let jittered = Duration::from_secs_f64(bound * fastrand::f64());
        let hint = server_hint.unwrap_or_default().min(self.max_server_delay);
        jittered.max(hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_growing_bound_and_over_the_hint() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_millis(500),
            max_attempts: 5,
            max_server_delay: Duration::from_secs(3),
        };
        for _ in 0..1000 {
            assert!(policy.delay(1, None) <= Duration::from_millis(100));
            assert!(policy.delay(3, None) <= Duration::from_millis(400));
            assert!(policy.delay(30, None) <= Duration::from_millis(500));
            assert!(policy.delay(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
            assert!(policy.delay(1, Some(Duration::from_secs(86_400))) <= Duration::from_secs(3));
        }
    }
}
