//! The documents API: upload (`multipart/form-data` files or a JSON text), list,
//! delete, and prune the files that are gone.
//!
//! `POST /api/documents` and `POST /api/documents/prune` take bodies up to
//! `documents.max_upload_bytes` (their own limit, not `max_body_bytes`). A batch
//! is all or nothing: a file that cannot be read fails the request (422, naming
//! it) and nothing of it is ingested.

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
#[allow(unused_imports)]
use tidewire_protocol::api::ErrorBody;
use tidewire_protocol::documents::{
    Document, DocumentList, IngestResponse, IngestStatus, Ingested, PruneRequest, PruneResponse,
    TextDocument,
};

use super::AppState;
use super::chat::parse;
use super::error::ApiError;
use crate::auth::Caller;
use crate::retrieval::{self, Format, LibraryError, Upload};
use crate::store::DocumentRecord;

/// The collection of a request that names none.
const DEFAULT_COLLECTION: &str = "default";

#[utoipa::path(
    post, path = "/api/documents", tag = "documents",
    request_body(content((TextDocument = "application/json"), (String = "multipart/form-data")), description = "A text document as JSON, or files as `file` parts (with optional `collection` and `source` fields)"),
    responses(
        (status = 200, description = "Nothing new: every document was unchanged", body = IngestResponse),
        (status = 201, description = "Ingested", body = IngestResponse),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart", body = ErrorBody),
        (status = 422, description = "A document that cannot be read", body = ErrorBody),
    )
)]
/// `POST /api/documents`: `multipart/form-data` with `file` parts (and optional
/// `collection` and `source` fields, a `source` going with the `file` after it),
/// or a JSON [`TextDocument`].
pub async fn upload(
    State(state): State<AppState>,
    _caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let media_type = media_type(request.headers());
    let uploads = match media_type.as_str() {
        "multipart/form-data" => {
            let multipart =
                Multipart::from_request(request, &state)
                    .await
                    .map_err(|rejection| {
                        ApiError::bad_request("invalid_multipart", rejection.body_text())
                    })?;
            read_multipart(&state, multipart).await?
        }
        "application/json" => {
            let body = Bytes::from_request(request, &state)
                .await
                .map_err(|rejection| {
                    body_error(&state, rejection.status(), rejection.body_text())
                })?;
            vec![text_upload(parse(&body)?)?]
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "expected multipart/form-data or application/json, got {:?}",
                    media_type
                ),
            ));
        }
    };
    let outcomes = state
        .documents
        .ingest_many(uploads)
        .await
        .map_err(library_error)?;
    let status = if outcomes
        .iter()
        .all(|outcome| outcome.status == retrieval::IngestStatus::Unchanged)
    {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let documents = outcomes
        .into_iter()
        .map(|outcome| Ingested {
            document_id: outcome.document_id,
            name: outcome.name,
            collection: outcome.collection,
            status: match outcome.status {
                retrieval::IngestStatus::Added => IngestStatus::Added,
                retrieval::IngestStatus::Replaced => IngestStatus::Replaced,
                retrieval::IngestStatus::Unchanged => IngestStatus::Unchanged,
            },
            chunks: outcome.chunks,
            bytes: outcome.bytes,
        })
        .collect();
    Ok((status, Json(IngestResponse { documents })).into_response())
}

/// `?collection=` of `GET /api/documents`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    collection: Option<String>,
}

#[utoipa::path(
    get, path = "/api/documents", tag = "documents",
    params(("collection" = Option<String>, Query, description = "Only this collection")),
    responses(
        (status = 200, description = "The documents", body = DocumentList),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
/// `GET /api/documents`: every document, or those of `?collection=`.
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<DocumentList>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
    // `?collection=` (empty) is every collection, as without it.
    let collection = query.collection.as_deref().filter(|c| !c.is_empty());
    let documents = state
        .documents
        .list(collection)
        .await
        .map_err(library_error)?;
    Ok(Json(DocumentList {
        documents: documents.into_iter().map(Document::from).collect(),
    }))
}

#[utoipa::path(
    get, path = "/api/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "The document's id")),
    responses(
        (status = 200, description = "The document", body = Document),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
    )
)]
/// `GET /api/documents/{id}`: one document.
pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Document>, ApiError> {
    let Path(id) =
        path.map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))?;
    match state.documents.get(&id).await.map_err(library_error)? {
        Some(document) => Ok(Json(document.into())),
        None => Err(not_found(&id)),
    }
}

#[utoipa::path(
    delete, path = "/api/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "The document's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
    )
)]
/// `DELETE /api/documents/{id}`: the document and its chunks.
pub async fn delete(
    State(state): State<AppState>,
    _caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) =
        path.map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))?;
    if state.documents.delete(&id).await.map_err(library_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "document_not_found",
        format!("document {id} does not exist"),
    )
}

#[utoipa::path(
    post, path = "/api/documents/prune", tag = "documents",
    request_body = PruneRequest,
    responses(
        (status = 200, description = "The documents removed", body = PruneResponse),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid request", body = ErrorBody),
    )
)]
/// `POST /api/documents/prune`: deletes the file documents of a collection whose
/// source is under one of `roots` but not in `present`.
pub async fn prune(
    State(state): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<PruneResponse>, ApiError> {
    super::chat::require_json(&headers)?;
    let body =
        body.map_err(|rejection| body_error(&state, rejection.status(), rejection.body_text()))?;
    let request: PruneRequest = parse(&body)?;
    if let Some(root) = request
        .roots
        .iter()
        .find(|root| !std::path::Path::new(root).is_absolute())
    {
        return Err(ApiError::unprocessable(
            "invalid_root",
            format!("roots must be absolute paths; {root:?} is not"),
        ));
    }
    let collection = request.collection.as_deref().unwrap_or(DEFAULT_COLLECTION);
    let present: HashSet<String> = request.present.into_iter().collect();
    let removed = state
        .documents
        .prune(collection, &request.roots, &present)
        .await
        .map_err(library_error)?;
    Ok(Json(PruneResponse {
        removed: removed.into_iter().map(Document::from).collect(),
    }))
}

/// The files of a multipart body.
async fn read_multipart(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<Vec<Upload>, ApiError> {
    let mut collection = None;
    let mut source = None;
    let mut files = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|error| multipart_error(state, &error))?
    {
        match field.name().unwrap_or_default() {
            "file" => {
                let (name, format) = file_name_and_format(&field)?;
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|error| multipart_error(state, &error))?;
                files.push((name, source.take(), format, bytes.to_vec()));
            }
            "collection" => collection = Some(text_field(state, field).await?),
            "source" => source = Some(text_field(state, field).await?),
            other => {
                return Err(ApiError::unprocessable(
                    "unknown_field",
                    format!("unknown form field {other:?}: expected file, collection or source"),
                ));
            }
        }
    }
    if files.is_empty() {
        return Err(ApiError::unprocessable(
            "no_files",
            "the form has no `file` part",
        ));
    }
    let collection = collection.unwrap_or_else(|| DEFAULT_COLLECTION.to_owned());
    Ok(files
        .into_iter()
        .map(|(name, source, format, bytes)| Upload {
            name,
            source,
            bytes,
            format,
            collection: collection.clone(),
        })
        .collect())
}

/// A file part's name (the last component of its file name) and its format (by
/// extension, else by the part's media type).
fn file_name_and_format(field: &Field<'_>) -> Result<(String, Format), ApiError> {
    let Some(file_name) = field.file_name().filter(|name| !name.trim().is_empty()) else {
        return Err(ApiError::unprocessable(
            "missing_file_name",
            "a `file` part needs a file name (Content-Disposition: form-data; name=\"file\"; filename=\"...\")",
        ));
    };
    // Browsers send a bare name; others may send a path, whose folders are not
    // part of the name.
    let name = file_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(file_name)
        .to_owned();
    let format = Format::from_file_name(&name)
        .or_else(|| field.content_type().and_then(Format::from_media_type))
        .ok_or_else(|| unsupported(&name))?;
    Ok((name, format))
}

async fn text_field(state: &AppState, field: Field<'_>) -> Result<String, ApiError> {
    let name = field.name().unwrap_or_default().to_owned();
    let text = field
        .text()
        .await
        .map_err(|error| multipart_error(state, &error))?;
    if text.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("the {name} field is empty"),
        ));
    }
    Ok(text.trim().to_owned())
}

/// A JSON text document as an upload.
fn text_upload(document: TextDocument) -> Result<Upload, ApiError> {
    let format = match &document.format {
        Some(name) => match Format::from_name(name) {
            Some(Format::Pdf) | None => {
                return Err(ApiError::unprocessable(
                    "invalid_format",
                    format!("format {name:?} is not one of markdown, text, html"),
                ));
            }
            Some(format) => format,
        },
        None => match Format::from_file_name(&document.name) {
            Some(Format::Pdf) | None => Format::Text,
            Some(format) => format,
        },
    };
    Ok(Upload {
        name: document.name.trim().to_owned(),
        source: None,
        bytes: document.text.into_bytes(),
        format,
        collection: document
            .collection
            .unwrap_or_else(|| DEFAULT_COLLECTION.to_owned()),
    })
}

fn unsupported(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_format",
        format!(
            "{name}: unsupported format; supported are Markdown (.md, .markdown), text (.txt), \
             HTML (.html, .htm) and PDF (.pdf)"
        ),
    )
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn body_error(state: &AppState, status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(state)
    } else {
        ApiError::bad_request("unreadable_body", text)
    }
}

fn multipart_error(state: &AppState, error: &MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(state)
    } else {
        ApiError::bad_request("invalid_multipart", error.body_text())
    }
}

fn too_large(state: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        format!(
            "the upload is over the limit of {} bytes (documents.max_upload_bytes)",
            state.config.documents.max_upload_bytes
        ),
    )
}

/// A client's mistake is a 4xx; only the server's own failures are a 500.
fn library_error(error: LibraryError) -> ApiError {
    match error {
        LibraryError::Parse { .. } => {
            ApiError::unprocessable("unreadable_document", error.to_string())
        }
        LibraryError::Invalid(message) => ApiError::unprocessable("invalid_document", message),
        LibraryError::Store(error) => error.into(),
        LibraryError::Index(error) => ApiError::internal(&error),
    }
}

impl From<DocumentRecord> for Document {
    fn from(record: DocumentRecord) -> Self {
        Self {
            id: record.id,
            collection: record.collection,
            name: record.name,
            source: record.source,
            format: record.format,
            content_hash: record.content_hash,
            bytes: record.bytes,
            chunks: record.chunks,
            created_at: record.created_at.rfc3339(),
            updated_at: record.updated_at.rfc3339(),
        }
    }
}
