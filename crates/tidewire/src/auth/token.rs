//! The token of a run's `events_url`: `{expiry}.{HMAC-SHA256 of run and user}`,
//! keyed by a secret made at start-up. It lets whoever holds the URL read that
//! one run's events until it expires, and nothing else; a restart ends them all
//! (as it ends the runs held in memory).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::unix_now;

/// Mints and checks `events_url` tokens.
pub struct StreamTokens {
    secret: Option<[u8; 32]>,
    ttl: Duration,
}

impl StreamTokens {
    /// Tokens that are needed only when authentication is on.
    pub fn new(enabled: bool, ttl: Duration) -> Self {
        let secret = enabled.then(|| {
            let mut secret = [0u8; 32];
            if let Err(error) = getrandom::fill(&mut secret) {
                // No randomness: tokens would be guessable; none are given out.
                tracing::error!(%error, "no randomness for events_url tokens");
                return None;
            }
            Some(secret)
        });
        Self {
            secret: secret.flatten(),
            ttl,
        }
    }

    /// Uses `secret`, shared by every node of a cluster, so a token minted by one
    /// node opens the run on any other (when tokens are needed at all).
    pub fn share_secret(&mut self, secret: [u8; 32]) {
        if self.secret.is_some() {
            self.secret = Some(secret);
        }
    }

    /// Whether tokens are minted (authentication is on).
    pub fn is_enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// A token for `run_id` of `user_id`, or `None` when none is needed.
    pub fn mint(&self, run_id: &str, user_id: &str) -> Option<String> {
        let secret = self.secret.as_ref()?;
        let expires = unix_now() + self.ttl.as_secs();
        Some(format!(
            "{expires}.{}",
            signature(secret, run_id, user_id, expires)
        ))
    }

    /// Whether `token` lets its holder read `run_id` of `user_id` now.
    pub fn check(&self, token: &str, run_id: &str, user_id: &str) -> bool {
        let Some(secret) = &self.secret else {
            return false;
        };
        let Some((expires, given)) = token.split_once('.') else {
            return false;
        };
        let Ok(expires) = expires.parse::<u64>() else {
            return false;
        };
        if expires < unix_now() {
            return false;
        }
        let Ok(given) = hex_bytes(given) else {
            return false;
        };
        let mut mac = keyed(secret);
        mac.update(&message(run_id, user_id, expires));
        // Constant time.
        mac.verify_slice(&given).is_ok()
    }
}

fn keyed(secret: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: 32 bytes cannot fail.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn message(run_id: &str, user_id: &str, expires: u64) -> Vec<u8> {
    format!("{run_id}\n{user_id}\n{expires}").into_bytes()
}

fn signature(secret: &[u8; 32], run_id: &str, user_id: &str, expires: u64) -> String {
    let mut mac = keyed(secret);
    mac.update(&message(run_id, user_id, expires));
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn hex_bytes(text: &str) -> Result<Vec<u8>, ()> {
    if !text.len().is_multiple_of(2) {
        return Err(());
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2).ok_or(())?, 16).map_err(|_| ()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_its_run_only_and_not_after_it_expires() {
        let tokens = StreamTokens::new(true, Duration::from_secs(60));
        let token = tokens.mint("r1", "alice").unwrap();
        assert!(tokens.check(&token, "r1", "alice"));
        assert!(!tokens.check(&token, "r2", "alice"));
        assert!(!tokens.check(&token, "r1", "bob"));
        assert!(!tokens.check("1.00", "r1", "alice"));
        assert!(!tokens.check("garbage", "r1", "alice"));
        let (_, mac) = token.split_once('.').unwrap();
        let forged = format!("{}.{mac}", unix_now() + 10_000);
        assert!(
            !tokens.check(&forged, "r1", "alice"),
            "the expiry is signed"
        );
        let expired = StreamTokens {
            secret: tokens.secret,
            ttl: Duration::ZERO,
        };
        let old = format!(
            "{}.{}",
            unix_now() - 5,
            signature(
                tokens.secret.as_ref().unwrap(),
                "r1",
                "alice",
                unix_now() - 5
            )
        );
        assert!(!expired.check(&old, "r1", "alice"));
        assert!(
            StreamTokens::new(false, Duration::from_secs(60))
                .mint("r1", "a")
                .is_none()
        );
    }
}
