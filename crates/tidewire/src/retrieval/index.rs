//! The index: every chunk in tantivy (BM25), in `{data_dir}/index/`.
//!
//! One [`IndexWriter`] for the process, behind a mutex; a change (a document's
//! chunks replaced or deleted) is written and committed at once, and the reader is
//! reloaded right after the commit, so a search that follows an ingest sees it.
//! Every field a [`Hit`] needs is stored, so a search reads nothing but the index.
//!
//! tantivy blocks (disk, CPU), so every call here runs on tokio's blocking threads,
//! never on the runtime's workers.
//!
//! Questions are searched as words: everything but letters and digits becomes a
//! space and the text is lowercased before the lenient query parser sees it, so
//! no question is a syntax error (`?`, quotes, colons) and none can use the query
//! language (`AND`, `-word`, `field:`) by accident.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::chunk::Chunk;
use super::{Hit, Scope};

/// Memory the writer may fill before it writes a segment.
const WRITER_MEMORY: usize = 32 * 1024 * 1024;

/// The analyzer of text and headings (its name is stored in the index schema).
const TOKENIZER: &str = "en_words";

/// The most hits one search returns, whatever it asks for.
pub const MAX_LIMIT: usize = 1000;

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// tantivy failed.
    #[error("index error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The index directory could not be created or opened.
    #[error("cannot open the index directory {path}: {message}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The blocking task running the work died.
    #[error("index task failed: {0}")]
    Task(String),
}

/// A change to the index.
#[derive(Debug, Clone)]
pub enum Change {
    /// The chunks of a document, replacing any it had.
    Put {
        /// The document.
        document_id: String,
        /// Its collection.
        collection: String,
        /// Its name.
        name: String,
        /// Its chunks.
        chunks: Vec<Chunk>,
    },
    /// Every chunk of a document goes.
    Delete {
        /// The document.
        document_id: String,
    },
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    chunk_id: Field,
    document_id: Field,
    document_name: Field,
    collection: Field,
    position: Field,
    heading: Field,
    text: Field,
}

/// The chunk index.
#[derive(Clone)]
pub struct ChunkIndex {
    inner: Arc<Inner>,
}

struct Inner {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    parser: QueryParser,
    fields: Fields,
}

impl std::fmt::Debug for ChunkIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkIndex").finish_non_exhaustive()
    }
}

/// Words, lowercased, without English stop words (a question's "how do I" would
/// otherwise rank FAQ headings first), stemmed (a question about "tides" finds
/// a passage on the "tide").
fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop_words) => builder
            .filter(stop_words)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_stored().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        chunk_id: builder.add_text_field("chunk_id", STRING | STORED),
        document_id: builder.add_text_field("document_id", STRING | STORED),
        document_name: builder.add_text_field("document_name", STORED),
        collection: builder.add_text_field("collection", STRING | STORED),
        position: builder.add_u64_field("position", STORED),
        heading: builder.add_text_field("heading", text.clone()),
        text: builder.add_text_field("text", text),
    };
    (builder.build(), fields)
}

impl ChunkIndex {
    /// Opens the index in `dir`, creating it if missing; also says whether it was
    /// created. Blocking.
    pub fn open(dir: &Path) -> Result<(Self, bool), IndexError> {
        let failed = |message: String| IndexError::Directory {
            path: dir.to_owned(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|error| failed(error.to_string()))?;
        let directory = MmapDirectory::open(dir).map_err(|error| failed(error.to_string()))?;
        let mut created = !Index::exists(&directory).map_err(|error| failed(error.to_string()))?;
        let (schema, fields) = schema();
        let index = match Index::open_or_create(directory, schema.clone()) {
            Err(tantivy::TantivyError::SchemaError(_)) => {
                // Written by a tidewire whose index had other fields or analyzers:
                // the index is only a derived copy of the documents, so it is
                // rebuilt empty (the library then forgets their records, so the
                // files go in again) rather than refusing to start.
                tracing::warn!(
                    path = %dir.display(),
                    "the index was written with another schema; starting a new one \
                     (documents must be ingested again)"
                );
                std::fs::remove_dir_all(dir).map_err(|error| failed(error.to_string()))?;
                std::fs::create_dir_all(dir).map_err(|error| failed(error.to_string()))?;
                let directory =
                    MmapDirectory::open(dir).map_err(|error| failed(error.to_string()))?;
                created = true;
                Index::create(directory, schema, tantivy::IndexSettings::default())?
            }
            opened => opened?,
        };
        // Analyzers are not stored with the index: registered at every open.
        index.tokenizers().register(TOKENIZER, analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let mut parser = QueryParser::for_index(&index, vec![fields.text, fields.heading]);
        // A heading names what its section is about.
        parser.set_field_boost(fields.heading, 1.5);
        Ok((
            Self {
                inner: Arc::new(Inner {
                    reader,
                    writer: Mutex::new(writer),
                    parser,
                    fields,
                }),
            },
            created,
        ))
    }

    /// Applies `changes` and commits them together; a search that starts after
    /// this returns sees them.
    pub async fn apply(&self, changes: Vec<Change>) -> Result<(), IndexError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.apply(&changes)).await
    }

    /// The best `limit` chunks for `query` within `scope`.
    pub async fn search(
        &self,
        query: &str,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        let inner = Arc::clone(&self.inner);
        let query = query.to_owned();
        let scope = scope.clone();
        blocking(move || inner.search(&query, &scope, limit)).await
    }

    /// The ids of the documents that may have chunks in the index (deleted ones
    /// can linger until their segment is merged).
    pub async fn document_ids(&self) -> Result<HashSet<String>, IndexError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.document_ids()).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, IndexError> + Send + 'static,
) -> Result<T, IndexError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| IndexError::Task(error.to_string()))?
}

impl Inner {
    fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        // A panic while the lock was held leaves nothing half-written that a
        // rollback below would not undo.
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let written = self.write(&writer, changes).and_then(|()| {
            writer.commit()?;
            Ok(())
        });
        if let Err(error) = written {
            if let Err(rollback) = writer.rollback() {
                tracing::error!(%rollback, "index rollback failed");
            }
            return Err(error);
        }
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    fn write(&self, writer: &IndexWriter, changes: &[Change]) -> Result<(), IndexError> {
        let fields = self.fields;
        for change in changes {
            match change {
                Change::Delete { document_id } => {
                    writer.delete_term(Term::from_field_text(fields.document_id, document_id));
                }
                Change::Put {
                    document_id,
                    collection,
                    name,
                    chunks,
                } => {
                    writer.delete_term(Term::from_field_text(fields.document_id, document_id));
                    for chunk in chunks {
                        let mut doc = TantivyDocument::default();
                        doc.add_text(fields.chunk_id, &chunk.id);
                        doc.add_text(fields.document_id, document_id);
                        doc.add_text(fields.document_name, name);
                        doc.add_text(fields.collection, collection);
                        doc.add_u64(fields.position, u64::from(chunk.position));
                        for heading in &chunk.heading_path {
                            doc.add_text(fields.heading, heading);
                        }
                        doc.add_text(fields.text, &chunk.text);
                        writer.add_document(doc)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn search(&self, query: &str, scope: &Scope, limit: usize) -> Result<Vec<Hit>, IndexError> {
        let fields = self.fields;
        let words = plain_words(query);
        let limit = limit.min(MAX_LIMIT);
        if words.is_empty() || limit == 0 || scope.documents.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let (matches, errors) = self.parser.parse_query_lenient(&words);
        if !errors.is_empty() {
            tracing::debug!(?errors, "parts of a question were left out of its search");
        }
        // Filters score nothing: the order is the text's relevance alone.
        let filter = |query: Box<dyn Query>| -> Box<dyn Query> {
            Box::new(ConstScoreQuery::new(query, 0.0))
        };
        let term = |field: Field, text: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, text),
                IndexRecordOption::Basic,
            ))
        };
        let mut clauses = vec![
            (Occur::Must, matches),
            (
                Occur::Must,
                filter(term(fields.collection, &scope.collection)),
            ),
        ];
        if let Some(documents) = &scope.documents {
            let any_of = documents
                .iter()
                .map(|id| (Occur::Should, term(fields.document_id, id)))
                .collect();
            clauses.push((Occur::Must, filter(Box::new(BooleanQuery::new(any_of)))));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field: Field| {
                doc.get_first(field)
                    .and_then(|value| value.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            hits.push(Hit {
                chunk_id: text(fields.chunk_id),
                document_id: text(fields.document_id),
                document_name: text(fields.document_name),
                heading_path: doc
                    .get_all(fields.heading)
                    .filter_map(|value| value.as_str())
                    .map(str::to_owned)
                    .collect(),
                text: text(fields.text),
                score,
            });
        }
        Ok(hits)
    }

    fn document_ids(&self) -> Result<HashSet<String>, IndexError> {
        let searcher = self.reader.searcher();
        let mut ids = HashSet::new();
        for segment in searcher.segment_readers() {
            let terms = segment.inverted_index(self.fields.document_id)?;
            let mut stream = terms
                .terms()
                .stream()
                .map_err(tantivy::TantivyError::from)?;
            while stream.advance() {
                ids.insert(String::from_utf8_lossy(stream.key()).into_owned());
            }
        }
        Ok(ids)
    }
}

/// The words of a question, lowercased, everything else a space.
fn plain_words(query: &str) -> String {
    let mut words = String::with_capacity(query.len());
    for c in query.chars() {
        if c.is_alphanumeric() {
            words.extend(c.to_lowercase());
        } else if !words.ends_with(' ') && !words.is_empty() {
            words.push(' ');
        }
    }
    words.truncate(words.trim_end().len());
    words
}

#[cfg(test)]
mod tests {
    use super::plain_words;

    #[test]
    fn questions_become_plain_words() {
        assert_eq!(
            plain_words("What's a \"tide\": AND -moon?"),
            "what s a tide and moon"
        );
        assert_eq!(plain_words("  ?!: "), "");
        assert_eq!(plain_words("Élan VITAL"), "élan vital");
    }
}
