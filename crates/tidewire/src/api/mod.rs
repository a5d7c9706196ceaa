//! The HTTP API: axum routes, thin handlers over the hub and the store, errors as
//! JSON, runs as SSE streams.
//!
//! Streaming routes carry no compression or timeout layer: either would turn a
//! stream into one buffered response.

mod caller;
mod chat;
mod conversations;
mod cors;
pub mod dialect;
mod documents;
mod error;
mod health;
pub mod native;
mod observe;
pub mod openai;
pub mod openapi;
mod runs;
pub mod sse;
mod tools;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

pub use caller::{Asker, Refusal};
pub use cors::DEFAULT_ORIGINS;
pub use error::ApiError;

use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::config::{Config, DialectConfig, DialectsConfig};
use crate::hub::Hub;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The runs.
    pub hub: Arc<Hub>,
    /// The conversations.
    pub store: Arc<dyn Store>,
    /// The documents and their search.
    pub documents: Arc<crate::retrieval::Library>,
    /// The configuration.
    pub config: Arc<Config>,
    /// Who is asking.
    pub auth: Arc<crate::auth::Auth>,
    /// Per-user limits.
    pub limits: Arc<crate::auth::Limits>,
}

impl AppState {
    /// The native format, whose `events_url`s carry a token when authentication
    /// is on.
    pub fn native(&self) -> Arc<dyn crate::hub::WireFormat> {
        Arc::new(native::Native::new(Some(Arc::clone(&self.auth))))
    }

    /// Keepalive and retry settings of native streams.
    pub fn stream_settings(&self) -> sse::StreamSettings {
        sse::StreamSettings {
            keepalive: self.config.keepalive,
            retry: Some(self.config.retry),
            cancel_on_disconnect: None,
        }
    }
}

/// The router of the whole API.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    // Documents are larger than chat requests: their routes have their own limit
    // (the innermost `DefaultBodyLimit` is the one that applies).
    let upload_limit = state.config.documents.max_upload_bytes;
    let cors = cors::layer(&state.config.auth.cors_origins);
    let mut front_ends = dialect_routes(Router::new(), &state.config.dialects);
    if state.config.openai.enabled {
        // The OpenAI SDKs run in browsers too.
        let preflight = || async { StatusCode::NO_CONTENT };
        front_ends = front_ends
            .route(
                "/v1/chat/completions",
                post(openai::chat::completions).options(preflight),
            )
            .route("/v1/models", get(openai::models).options(preflight))
            .route(
                "/v1/responses",
                post(openai::responses::create).options(preflight),
            )
            .route(
                "/v1/responses/{id}",
                get(openai::responses::retrieve).options(preflight),
            )
            .route(
                "/v1/responses/{id}/cancel",
                post(openai::responses::cancel).options(preflight),
            );
    }
    front_ends
        .route("/api/chat", post(chat::chat))
        .route("/api/runs/{run_id}", get(runs::get_run))
        .route("/api/runs/{run_id}/events", get(runs::run_events))
        .route("/api/runs/{run_id}/cancel", post(runs::cancel_run))
        .route("/api/conversations", get(conversations::list))
        .route(
            "/api/conversations/{id}",
            axum::routing::delete(conversations::delete),
        )
        .route(
            "/api/conversations/{id}/messages",
            get(conversations::messages),
        )
        .route(
            "/api/documents",
            get(documents::list)
                .post(documents::upload)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/api/documents/prune",
            post(documents::prune).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/api/documents/{id}",
            get(documents::get).delete(documents::delete),
        )
        .route("/api/tools", get(tools::list))
        .route("/", get(web::index))
        .route("/app.js", get(web::app_js))
        .route("/app.css", get(web::app_css))
        .route("/tidewire.js", get(web::client_js))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(observe::metrics))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        // Browsers on another origin: every route (not a buffering layer; the
        // streams stay streams).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::track,
        ))
        .layer(cors)
        .layer(axum::middleware::map_response(cors::expose))
        // Every request has an id (the client's `X-Request-Id`, or a new one), in
        // the response and in every log line of the request and of its run.
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(axum::middleware::from_fn(observe::trace))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// The arguments of every dialect handler but its route.
type DialectArgs = (
    State<AppState>,
    crate::auth::Caller,
    axum::http::Version,
    axum::http::HeaderMap,
    Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
);

/// Mounts `handler` on `POST path`, handing it `route` with each request.
fn mount<R, F, Fut>(router: Router<AppState>, path: &str, route: R, handler: F) -> Router<AppState>
where
    R: Clone + Send + Sync + 'static,
    F: Fn(
            State<AppState>,
            R,
            crate::auth::Caller,
            axum::http::Version,
            axum::http::HeaderMap,
            Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
        ) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = axum::response::Response> + Send + 'static,
{
    mount_with(router, path, route, handler, IntoResponse::into_response)
}

/// [`mount`], with the dialect's own answer to a request refused before its
/// handler runs (unauthenticated, over a limit).
fn mount_with<R, F, Fut>(
    router: Router<AppState>,
    path: &str,
    route: R,
    handler: F,
    refused: fn(Refusal) -> axum::response::Response,
) -> Router<AppState>
where
    R: Clone + Send + Sync + 'static,
    F: Fn(
            State<AppState>,
            R,
            crate::auth::Caller,
            axum::http::Version,
            axum::http::HeaderMap,
            Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
        ) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = axum::response::Response> + Send + 'static,
{
    let call = move |(state, caller, version, headers, body): DialectArgs| {
        handler(state, route.clone(), caller, version, headers, body)
    };
    router.route(
        path,
        post(
            move |state: State<AppState>,
                  asker: Result<Asker, Refusal>,
                  version: axum::http::Version,
                  headers: axum::http::HeaderMap,
                  body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>| {
                let call = call.clone();
                async move {
                    match asker {
                        Ok(Asker(caller)) => call((state, caller, version, headers, body)).await,
                        Err(refusal) => refused(refusal),
                    }
                }
            },
        )
        // Browsers ask first (CORS preflight); the CORS layer answers.
        .options(|| async { StatusCode::NO_CONTENT }),
    )
}

/// The routes of the front ends' dialects, as configured.
fn dialect_routes(mut router: Router<AppState>, config: &DialectsConfig) -> Router<AppState> {
    let route = |config: &DialectConfig| {
        Arc::new(dialect::DialectRoute {
            path: config.path.clone(),
            keepalive: Some(config.keepalive),
            cancel_on_disconnect: config.cancel_on_disconnect,
        })
    };
    let on = |config: &DialectConfig| !config.path.is_empty();
    if on(&config.rag) && on(&config.canvas) && config.rag.path == config.canvas.path {
        let shared = Arc::new((
            route(&config.rag).as_ref().clone(),
            route(&config.canvas).as_ref().clone(),
        ));
        router = mount(
            router,
            &config.rag.path,
            shared,
            dialect::shared_chat_stream,
        );
    } else {
        if on(&config.rag) {
            router = mount(
                router,
                &config.rag.path,
                route(&config.rag),
                dialect::rag::handle,
            );
        }
        if on(&config.canvas) {
            router = mount(
                router,
                &config.canvas.path,
                route(&config.canvas),
                dialect::canvas::handle,
            );
        }
    }
    if on(&config.ask) {
        router = mount(
            router,
            &config.ask.path,
            route(&config.ask),
            dialect::ask::handle,
        );
    }
    if on(&config.portfolio) {
        router = mount(
            router,
            &config.portfolio.path,
            route(&config.portfolio),
            dialect::portfolio::handle,
        );
    }
    if on(&config.ui) {
        let ui = route(&config.ui);
        let path = config.ui.path.trim_end_matches('/');
        router = mount(router, path, Arc::clone(&ui), dialect::ui::handle);
        // Where `useChat({ resume: true })` reconnects.
        router = router.route(
            &format!("{path}/{{chat_id}}/stream"),
            get(
                move |state: State<AppState>,
                      caller: crate::auth::Caller,
                      version: axum::http::Version,
                      chat_id: axum::extract::Path<String>| {
                    dialect::ui::reconnect(state, Arc::clone(&ui), caller, version, chat_id)
                },
            )
            .options(|| async { StatusCode::NO_CONTENT }),
        );
    }
    if on(&config.chatbot) {
        let chatbot = route(&config.chatbot);
        let path = &config.chatbot.path;
        router = mount_with(
            router,
            path,
            Arc::clone(&chatbot),
            dialect::chatbot::handle,
            dialect::chatbot::refused,
        );
        // Its clients post to `/api/v1/chat/`; the same without the slash too.
        let other = match path.strip_suffix('/') {
            Some(bare) if !bare.is_empty() => bare.to_owned(),
            Some(_) => String::new(),
            None => format!("{path}/"),
        };
        if !other.is_empty() {
            router = mount_with(
                router,
                &other,
                chatbot,
                dialect::chatbot::handle,
                dialect::chatbot::refused,
            );
        }
    }
    router
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
