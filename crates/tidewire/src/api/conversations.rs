//! The stored conversations: list, messages, delete.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
#[allow(unused_imports)]
use tidewire_protocol::api::ErrorBody;
use tidewire_protocol::api::{Conversation, ConversationList, Message, MessageList};

use super::AppState;
use super::error::ApiError;
use crate::auth::Caller;
use crate::store::{ConversationRecord, MessageRecord};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// `?limit=` of `GET /api/conversations`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/conversations", tag = "conversations",
    params(("limit" = Option<u32>, Query, description = "At most this many (1 to 200)")),
    responses(
        (status = 200, description = "The caller's conversations, most recent first", body = ConversationList),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
/// `GET /api/conversations`: the most recently updated first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ConversationList>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be from 1 to {MAX_LIMIT}"),
        ));
    }
    let conversations = state
        .store
        .list_conversations(&caller.user_id, limit)
        .await?;
    Ok(Json(ConversationList {
        conversations: conversations.into_iter().map(Conversation::from).collect(),
    }))
}

#[utoipa::path(
    get, path = "/api/conversations/{id}/messages", tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "Its messages, oldest first", body = MessageList),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
/// `GET /api/conversations/{id}/messages`: oldest first.
pub async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<MessageList>, ApiError> {
    let id = conversation_id(path)?;
    match state.store.list_messages(&id, &caller.user_id).await? {
        Some(messages) => Ok(Json(MessageList {
            conversation_id: id,
            messages: messages.into_iter().map(Message::from).collect(),
        })),
        None => Err(not_found(&id)),
    }
}

#[utoipa::path(
    delete, path = "/api/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 204, description = "Deleted (its running answers cancelled)"),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
/// `DELETE /api/conversations/{id}`: stops and forgets its runs and deletes it with
/// its messages: from then on, every route answers 404 for them.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = conversation_id(path)?;
    // Another user's conversation is not found: its runs are left alone.
    if !state
        .store
        .conversation_exists(&id, &caller.user_id)
        .await?
    {
        return Err(not_found(&id));
    }
    state.hub.forget_conversation(&id);
    if state.hub.cluster().is_some() {
        // Other nodes may hold its runs too: they go from the shared log and from
        // every node before the conversation goes.
        let run_ids: Vec<String> = state
            .store
            .list_messages(&id, &caller.user_id)
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| message.run_id)
            .collect();
        state
            .hub
            .forget_everywhere(&run_ids)
            .await
            .map_err(super::runs::log_unavailable)?;
    }
    if state
        .store
        .delete_conversation(&id, &caller.user_id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

fn conversation_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "conversation_not_found",
        format!("conversation {id} does not exist"),
    )
}

impl From<ConversationRecord> for Conversation {
    fn from(record: ConversationRecord) -> Self {
        Self {
            id: record.id,
            title: record.title,
            created_at: record.created_at.rfc3339(),
            updated_at: record.updated_at.rfc3339(),
        }
    }
}

impl From<MessageRecord> for Message {
    fn from(record: MessageRecord) -> Self {
        Self {
            id: record.id,
            conversation_id: record.conversation_id,
            role: record.role,
            content: record.content,
            status: record.status,
            run_id: record.run_id,
            usage: record.usage,
            model: record.model,
            sources: record.sources,
            quality_score: record.quality_score,
            follow_up_questions: record.follow_up_questions,
            tool_calls: record.tool_calls,
            created_at: record.created_at.rfc3339(),
            updated_at: record.updated_at.rfc3339(),
        }
    }
}
