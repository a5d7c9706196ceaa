//! Who is asking: API keys and JWTs become a [`Caller`], the user every
//! conversation and run belongs to; per-user limits; and the short-lived tokens
//! that let a browser's `EventSource` (which sends no headers) read one run.
//!
//! With authentication off (no API keys, no JWT key), every request is the one
//! local user and any token is accepted, as on a laptop.

mod keys;
mod limits;
mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

pub use keys::{KEY_PREFIX, NewKey, hash_key, new_key};
pub use limits::{Limits, RateLimited};
pub use token::StreamTokens;

use crate::config::{AuthConfig, ExposeSecret};
use crate::store::{LOCAL_USER, Store};

/// The user a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Their id: an API key's user, a JWT's `sub`, or `local`.
    pub user_id: String,
}

impl Caller {
    /// The one user when authentication is off.
    pub fn local() -> Self {
        Self {
            user_id: LOCAL_USER.to_owned(),
        }
    }
}

/// Why a request is not authenticated (a 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("this server needs an `Authorization: Bearer` header with an API key or a token")]
    Missing,
    /// The credential is not accepted; says why.
    #[error("{0}")]
    Invalid(String),
    /// The key store could not be read.
    #[error("the API keys could not be read")]
    Unavailable,
}

/// Why the authentication settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("auth: {0}")]
pub struct AuthSetupError(String);

/// The claims tidewire reads from a JWT (the library checks `exp`, `nbf`, `iss`
/// and `aud`).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// A key that verifies JWTs, with the checks of its algorithm, and the `kid` it
/// answers to in a JWKS.
struct JwtKey {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

/// The authenticator.
pub struct Auth {
    api_keys: bool,
    jwt: Vec<JwtKey>,
    store: Arc<dyn Store>,
    /// The tokens of `events_url`s.
    pub streams: StreamTokens,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("api_keys", &self.api_keys)
            .field("jwt_keys", &self.jwt.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The authenticator of `config`, reading API keys from `store`.
    pub fn new(config: &AuthConfig, store: Arc<dyn Store>) -> Result<Self, AuthSetupError> {
        let jwt = jwt_settings(config)?;
        Ok(Self {
            api_keys: config.api_keys,
            jwt,
            store,
            streams: StreamTokens::new(config.enabled(), config.stream_token_ttl),
        })
    }

    /// Whether requests must authenticate.
    pub fn enabled(&self) -> bool {
        self.api_keys || !self.jwt.is_empty()
    }

    /// The caller of a request with this `Authorization` header value.
    pub async fn caller(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        if !self.enabled() {
            return Ok(Caller::local());
        }
        let token = authorization
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Missing)?;
        if token.starts_with(KEY_PREFIX) {
            return self.api_key(token).await;
        }
        self.jwt(token)
    }

    async fn api_key(&self, key: &str) -> Result<Caller, AuthError> {
        if !self.api_keys {
            return Err(AuthError::Invalid(
                "API keys are not accepted by this server".into(),
            ));
        }
        let record = self
            .store
            .find_api_key(&hash_key(key))
            .await
            .map_err(|error| {
                tracing::error!(%error, "reading an API key failed");
                AuthError::Unavailable
            })?;
        let Some(record) = record else {
            return Err(AuthError::Invalid("unknown API key".into()));
        };
        if record.revoked_at.is_some() {
            return Err(AuthError::Invalid("this API key was revoked".into()));
        }
        if record
            .expires_at
            .is_some_and(|at| at.0 <= crate::store::Timestamp::now().0)
        {
            return Err(AuthError::Invalid("this API key has expired".into()));
        }
        Ok(Caller {
            user_id: record.user_id,
        })
    }

    fn jwt(&self, token: &str) -> Result<Caller, AuthError> {
        if self.jwt.is_empty() {
            return Err(AuthError::Invalid(
                "not an API key, and this server accepts no JWTs".into(),
            ));
        }
        // One key, or the JWKS key the token names.
        let chosen = if self.jwt.len() == 1 {
            self.jwt.first()
        } else {
            let kid = jsonwebtoken::decode_header(token)
                .map_err(|_| AuthError::Invalid("the token is not a valid JWT".into()))?
                .kid;
            self.jwt
                .iter()
                .find(|key| key.kid.is_some() && key.kid == kid)
        };
        let Some(JwtKey {
            key, validation, ..
        }) = chosen
        else {
            return Err(AuthError::Invalid(
                "the token's kid names no key of this server".into(),
            ));
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match error.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                ErrorKind::InvalidAudience => "the token is for another audience (aud)",
                ErrorKind::InvalidIssuer => "the token is from another issuer (iss)",
                ErrorKind::InvalidSignature => "the token's signature does not verify",
                ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                _ => "the token is not a valid JWT",
            };
            AuthError::Invalid(why.into())
        })?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::Invalid("the token's sub is empty".into()));
        }
        Ok(Caller {
            user_id: data.claims.sub,
        })
    }
}

/// The JWT keys and checks of the configuration (none if it accepts no JWTs).
fn jwt_settings(config: &AuthConfig) -> Result<Vec<JwtKey>, AuthSetupError> {
    let given = [
        config.jwt_secret.is_some(),
        config.jwt_public_key.is_some(),
        config.jwt_jwks.is_some(),
    ];
    if given.iter().filter(|given| **given).count() > 1 {
        return Err(AuthSetupError(
            "set one of jwt_secret (HS256), jwt_public_key or jwt_jwks (RS256/ES256)".into(),
        ));
    }
    if let Some(path) = &config.jwt_jwks {
        return jwks(config, path);
    }
    let (key, algorithm) = match (&config.jwt_secret, &config.jwt_public_key) {
        (Some(secret), _) => (
            DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            Algorithm::HS256,
        ),
        (None, Some(path)) => {
            let pem = std::fs::read(path).map_err(|error| {
                AuthSetupError(format!(
                    "cannot read jwt_public_key {}: {error}",
                    path.display()
                ))
            })?;
            match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => (key, Algorithm::RS256),
                Err(_) => (
                    DecodingKey::from_ec_pem(&pem).map_err(|error| {
                        AuthSetupError(format!(
                            "jwt_public_key {} is neither an RSA nor an EC public key in PEM: {error}",
                            path.display()
                        ))
                    })?,
                    Algorithm::ES256,
                ),
            }
        }
        (None, None) => return Ok(Vec::new()),
    };
    Ok(vec![JwtKey {
        kid: None,
        key,
        validation: validation(config, algorithm),
    }])
}

/// The keys of a JWKS file, each with the algorithm of its kind.
fn jwks(config: &AuthConfig, path: &std::path::Path) -> Result<Vec<JwtKey>, AuthSetupError> {
    let failed = |why: String| AuthSetupError(format!("jwt_jwks {}: {why}", path.display()));
    let text = std::fs::read(path).map_err(|error| failed(error.to_string()))?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&text).map_err(|error| failed(error.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        use jsonwebtoken::jwk::AlgorithmParameters;
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|error| failed(error.to_string()))?;
        keys.push(JwtKey {
            kid: jwk.common.key_id.clone(),
            key,
            validation: validation(config, algorithm),
        });
    }
    if keys.is_empty() {
        return Err(failed("no RSA or EC key in it".into()));
    }
    if keys.len() > 1 && keys.iter().any(|key| key.kid.is_none()) {
        return Err(failed("with several keys, each needs a kid".into()));
    }
    Ok(keys)
}

/// The checks of a JWT signed with `algorithm`.
fn validation(config: &AuthConfig, algorithm: Algorithm) -> Validation {
    // One algorithm: a token that names another (`none` included) is refused.
    let mut validation = Validation::new(algorithm);
    validation.leeway = config.jwt_leeway.as_secs();
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    if let Some(issuer) = &config.jwt_issuer {
        validation.set_issuer(&[issuer]);
    }
    match &config.jwt_audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    validation
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
