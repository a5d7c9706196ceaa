//! `search_documents`: the pipeline's retrieval as a tool, so a model can search
//! the ingested documents itself (with its own query, as often as it needs).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError};
use crate::llm::ToolSpec;
use crate::retrieval::Retriever;

/// The built-in tool's name.
pub const SEARCH_DOCUMENTS: &str = "search_documents";

/// The most passages one search returns.
const MAX_RESULTS: u64 = 20;

/// The longest passage text returned, in characters.
const PASSAGE_CHARS: usize = 1500;

/// Searches the documents in the run's scope.
pub struct SearchDocuments {
    spec: ToolSpec,
    retriever: Arc<dyn Retriever>,
}

impl std::fmt::Debug for SearchDocuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchDocuments").finish_non_exhaustive()
    }
}

impl SearchDocuments {
    /// The tool over `retriever`.
    pub fn new(retriever: Arc<dyn Retriever>) -> Self {
        Self {
            spec: ToolSpec {
                name: SEARCH_DOCUMENTS.to_owned(),
                description: "Search the documents for passages relevant to a query. Returns \
                              the best passages with their document names and scores."
                    .to_owned(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "minLength": 1,
                                  "description": "What to look for, in words."},
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS,
                                  "description": "How many passages to return (default 5)."}
                    },
                    "required": ["query"],
                    "additionalProperties": false
                }),
            },
            retriever,
        }
    }
}

#[async_trait]
impl Tool for SearchDocuments {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, context: &ToolContext) -> Result<Value, ToolError> {
        // The schema was checked: `query` is a string, `limit` a small integer.
        let query = arguments["query"].as_str().unwrap_or_default();
        let limit = arguments["limit"].as_u64().unwrap_or(5).min(MAX_RESULTS);
        let hits = self
            .retriever
            .search(query, &context.scope, usize::try_from(limit).unwrap_or(5))
            .await
            .map_err(|error| {
                tracing::warn!(%error, "search_documents failed");
                ToolError::new("search_failed", "the documents could not be searched")
            })?;
        let results: Vec<Value> = hits
            .iter()
            .map(|hit| {
                let text: String = hit.text.chars().take(PASSAGE_CHARS).collect();
                json!({
                    "document_name": hit.document_name,
                    "chunk_id": hit.chunk_id,
                    "headings": hit.heading_path,
                    "text": text,
                    "score": hit.score,
                })
            })
            .collect();
        Ok(json!({"results": results}))
    }
}
