//! `GET /openapi.json`: the native API as an OpenAPI 3.1 document, generated from
//! the handlers' annotations and the types of their bodies (utoipa), so it
//! follows the code. The streams are described by their media type and the
//! `ChatEvent` schema: each event's `event:` name and its `data` JSON.

use axum::Json;
use tidewire_protocol::api::{
    ChatOptions, ChatRequest, ChatResponse, Conversation, ConversationList, ErrorBody, ErrorDetail,
    Message, MessageList, Role, RunView,
};
use tidewire_protocol::documents::{
    Document, DocumentList, IngestResponse, IngestStatus, Ingested, PruneRequest, PruneResponse,
    TextDocument,
};
use tidewire_protocol::{
    ChatEvent, ClientToolCall, Done, ErrorEvent, FollowUpQuestions, MessageStatus, Metadata,
    QualityScore, RunStarted, Source, Sources, Stage, Timing, Token, ToolCallRecord, ToolFinished,
    ToolStarted, Usage,
};
use utoipa::OpenApi;

use super::tools::{ToolList, ToolView};
use crate::tools::{ServerState, ServerStatus};

/// One event of a stream as it is on the wire (`text/event-stream`), for the
/// document only: `data` is the JSON of the event's payload, whose shape the
/// `ChatEvent` schema gives for each `event` name.
#[derive(utoipa::ToSchema)]
pub struct WireEvent {
    /// The event's sequence number in its run: 1, 2, 3, ...
    pub id: String,
    /// Its name: `run`, `stage`, `sources`, `token`, `tool_started`,
    /// `tool_finished`, `tool_call`, `quality_score`, `follow_up_questions`,
    /// `metadata`, `error` or `done`.
    pub event: String,
    /// Its payload, JSON.
    pub data: String,
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tidewire",
        description = "A streaming gateway for AI chat: the native API. Errors outside a stream are `ErrorBody`; inside one, an `error` event followed by `done`."
    ),
    paths(
        super::chat::chat,
        super::runs::get_run,
        super::runs::run_events,
        super::runs::cancel_run,
        super::conversations::list,
        super::conversations::messages,
        super::conversations::delete,
        super::documents::upload,
        super::documents::list,
        super::documents::get,
        super::documents::delete,
        super::documents::prune,
        super::tools::list,
        super::health::healthz,
        super::health::readyz,
        super::observe::metrics,
    ),
    components(schemas(
        ChatRequest,
        ChatOptions,
        ChatResponse,
        RunView,
        Conversation,
        ConversationList,
        Message,
        MessageList,
        Role,
        ErrorBody,
        ErrorDetail,
        MessageStatus,
        Usage,
        Source,
        ToolCallRecord,
        ErrorEvent,
        ChatEvent,
        RunStarted,
        Stage,
        Sources,
        Token,
        ToolStarted,
        ToolFinished,
        ClientToolCall,
        QualityScore,
        FollowUpQuestions,
        Metadata,
        Timing,
        Done,
        TextDocument,
        Ingested,
        IngestStatus,
        IngestResponse,
        Document,
        DocumentList,
        PruneRequest,
        PruneResponse,
        ToolList,
        ToolView,
        ServerStatus,
        ServerState,
        WireEvent,
    ))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
