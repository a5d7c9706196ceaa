//! Retrieval: the documents an answer is grounded in, and the search over their
//! chunks.
//!
//! The pipeline sees only [`Retriever`]: a search over a scope (a collection, and
//! optionally some of its documents) that returns the best chunks with a score.
//!
//! [`Library`] is the documents service behind it: [`parse`] reads a document into
//! blocks, [`chunk`] cuts them along their headings, [`index`] keeps the chunks in
//! tantivy, the store keeps a record per document, and [`seed`] holds tidewire's
//! own documentation for a new data directory.

pub mod chunk;
pub mod index;
mod ingest;
mod library;
pub mod parse;
pub mod seed;

use async_trait::async_trait;

/// The collection of requests that name none.
pub const DEFAULT_COLLECTION: &str = "default";
pub use chunk::{Chunk, ChunkSettings};
pub use library::{IngestOutcome, IngestStatus, Library, LibraryError, LibrarySettings, Upload};
pub use parse::{Block, Format, ParseError};

/// Where to search.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Scope {
    /// The collection (`default` when a request names none).
    pub collection: String,
    /// Only these documents (by id), when given.
    pub documents: Option<Vec<String>>,
}

impl Scope {
    /// The whole of `collection`.
    pub fn collection(collection: impl Into<String>) -> Self {
        Self {
            collection: collection.into(),
            documents: None,
        }
    }
}

/// One chunk found by a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The chunk's id, stable across restarts.
    pub chunk_id: String,
    /// The document it belongs to.
    pub document_id: String,
    /// The document's name (its file name, or the name it was uploaded with).
    pub document_name: String,
    /// The headings above the chunk, outermost first.
    pub heading_path: Vec<String>,
    /// The chunk's text.
    pub text: String,
    /// Relevance as the engine scores it (BM25): higher is better, not bounded.
    pub score: f32,
}

/// A retrieval failure (the index could not be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("search failed: {0}")]
pub struct SearchError(pub String);

/// A search over the chunks of the stored documents.
#[async_trait]
pub trait Retriever: Send + Sync + 'static {
    /// The best `limit` chunks for `query` within `scope`, best first.
    async fn search(
        &self,
        query: &str,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<Hit>, SearchError>;
}

/// A retriever with no documents: every search finds nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDocuments;

#[async_trait]
impl Retriever for NoDocuments {
    async fn search(&self, _: &str, _: &Scope, _: usize) -> Result<Vec<Hit>, SearchError> {
        Ok(Vec::new())
    }
}
