//! API keys: `tw_` and 43 characters of a random 256-bit value (base64url), so
//! they are recognisable in a config file or a leak report. Only their SHA-256 is
//! stored: enough for a value that cannot be guessed.

use base64::Engine;
use sha2::{Digest, Sha256};

/// What every key starts with.
pub const KEY_PREFIX: &str = "tw_";

/// A key just made: shown once, then only its hash is kept.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The key.
    pub key: String,
    /// Its SHA-256, in hex.
    pub hash: String,
    /// Its first characters, to recognise it in lists.
    pub prefix: String,
}

/// A new random key.
pub fn new_key() -> Result<NewKey, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    Ok(NewKey {
        hash: hash_key(&key),
        prefix: key.chars().take(KEY_PREFIX.len() + 6).collect(),
        key,
    })
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_prefixed_and_hashed() {
        let one = new_key().unwrap();
        let two = new_key().unwrap();
        assert!(one.key.starts_with(KEY_PREFIX) && one.key.len() == 3 + 43);
        assert_ne!(one.key, two.key);
        assert_eq!(one.hash, hash_key(&one.key));
        assert_eq!(one.hash.len(), 64);
        assert!(one.key.starts_with(&one.prefix));
    }
}
