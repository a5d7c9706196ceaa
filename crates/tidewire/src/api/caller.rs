//! The [`Caller`] of a request, as an extractor: every route, every dialect's
//! included, gets its user the same way. A request that cannot say who it is gets
//! 401 with `WWW-Authenticate: Bearer error="invalid_token"` and a body that every
//! client of these routes reads: `error.message` and `error.code` (the native API,
//! OpenAI's SDKs), `message` (the RAG chat), `detail` (the portfolio assistant).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Caller, RateLimited};
use crate::metrics::{LimitLabel, ReasonLabel};

/// A request refused before its route ran: not authenticated, or over a limit.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// 401.
    Unauthenticated(AuthError),
    /// 429.
    Limited(RateLimited),
}

impl From<RateLimited> for Refusal {
    fn from(limited: RateLimited) -> Self {
        Self::Limited(limited)
    }
}

impl Refusal {
    /// The refusal as an [`ApiError`], for a dialect that answers errors its way;
    /// [`Refusal::challenge`] adds the `WWW-Authenticate` header.
    pub fn api_error(&self) -> ApiError {
        let (status, code, _, message, retry_after) = self.parts();
        ApiError {
            status,
            code,
            message,
            retry_after,
        }
    }

    /// Adds `WWW-Authenticate` to `response` when this is a 401.
    pub fn challenge(&self, mut response: Response) -> Response {
        if let Self::Unauthenticated(error) = self
            && !matches!(error, AuthError::Unavailable)
        {
            let challenge = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                error.to_string().replace('"', "'")
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, String, Option<u32>) {
        match self {
            Self::Unauthenticated(AuthError::Unavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "server_error",
                AuthError::Unavailable.to_string(),
                Some(1),
            ),
            Self::Unauthenticated(error) => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "authentication_error",
                error.to_string(),
                None,
            ),
            Self::Limited(limited) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate_limit_error",
                limited.message.clone(),
                Some(limited.retry_after),
            ),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code, kind, message, retry_after) = self.parts();
        let body = json!({
            "error": {"code": code, "message": message, "type": kind, "param": null},
            "message": message,
            "detail": message,
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        self.challenge(response)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        state.auth.caller(authorization).await.map_err(|error| {
            let metrics = state.hub.pipeline().metrics();
            let reason = match &error {
                AuthError::Missing => "missing",
                AuthError::Invalid(_) => "invalid",
                AuthError::Unavailable => "unavailable",
            };
            metrics.count(
                &metrics.auth_failures,
                ReasonLabel {
                    reason: reason.to_owned(),
                },
            );
            Refusal::Unauthenticated(error)
        })
    }
}

/// The caller of a route that starts an answer: authenticated, and within the
/// per-user request and concurrency limits.
#[derive(Debug, Clone)]
pub struct Asker(pub Caller);

impl FromRequestParts<AppState> for Asker {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let limited = |limit: &str| {
            let metrics = state.hub.pipeline().metrics();
            metrics.count(
                &metrics.rate_limited,
                LimitLabel {
                    limit: limit.to_owned(),
                },
            );
        };
        if let Err(refused) = state.limits.request(&caller.user_id) {
            limited("requests_per_minute");
            return Err(refused.into());
        }
        if let Err(refused) = state.limits.start(|| state.hub.running_of(&caller.user_id)) {
            limited("concurrent_runs");
            return Err(refused.into());
        }
        Ok(Self(caller))
    }
}
