//! The JSON bodies of the documents API (`/api/documents`).

use serde::{Deserialize, Serialize};

/// `POST /api/documents` body as JSON: one document given as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TextDocument {
    /// Its name; an upload of the same name in the same collection replaces it.
    pub name: String,
    /// Its text.
    pub text: String,
    /// Its collection (`default` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// `markdown`, `text` or `html`; from the name's extension when absent, else
    /// `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// What an ingest did to a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum IngestStatus {
    /// A new document.
    Added,
    /// Its content changed: its chunks were replaced.
    Replaced,
    /// Same content as before: nothing was done.
    Unchanged,
}

/// One document of an ingest's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ingested {
    /// The document.
    pub document_id: String,
    /// Its name.
    pub name: String,
    /// Its collection.
    pub collection: String,
    /// What was done.
    pub status: IngestStatus,
    /// How many chunks it has.
    pub chunks: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// `POST /api/documents` answer (201, or 200 when every document was unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngestResponse {
    /// The documents, in the order they were sent.
    pub documents: Vec<Ingested>,
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Document {
    /// Its id.
    pub id: String,
    /// Its collection.
    pub collection: String,
    /// Its name.
    pub name: String,
    /// The absolute path it was read from, `upload`, or `tidewire:...` for the
    /// documentation shipped with tidewire.
    pub source: String,
    /// `markdown`, `text`, `html` or `pdf`.
    pub format: String,
    /// SHA-256 of its bytes, in hex.
    pub content_hash: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// How many chunks it has.
    pub chunks: u64,
    /// When it was first ingested (RFC 3339).
    pub created_at: String,
    /// When its content last changed (RFC 3339).
    pub updated_at: String,
}

/// `GET /api/documents` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentList {
    /// The documents, by collection and name.
    pub documents: Vec<Document>,
}

/// `POST /api/documents/prune` body: forget the files that are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// The collection (`default` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Absolute paths of the folders that were walked.
    pub roots: Vec<String>,
    /// Absolute paths of the files found under them.
    pub present: Vec<String>,
}

/// `POST /api/documents/prune` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PruneResponse {
    /// The documents deleted.
    pub removed: Vec<Document>,
}
