//! The documents service: ingest, list, delete and prune documents, and search
//! their chunks ([`Retriever`]).
//!
//! A document is a record in the store (name, source, hash, sizes) and its chunks
//! in the index, under the same id. Writes are serialized (one at a time, like the
//! index's single writer), and go index first, store second: a stop between the
//! two leaves chunks without a record, which the next open deletes, never a record
//! without its chunks. Re-ingesting a source whose bytes have the same SHA-256 does
//! nothing; changed bytes replace the document's chunks and keep its id.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::chunk::ChunkSettings;
use super::index::{Change, ChunkIndex, IndexError};
use super::ingest::{Prepared, check_collection, check_name, prepare};
use super::parse::{Format, ParseError};
use super::{Hit, Retriever, Scope, SearchError, seed};
use crate::config::DocumentsConfig;
use crate::store::{DocumentKey, DocumentRecord, Store, StoreError, Timestamp, UPLOAD_SOURCE};

/// How the library cuts documents, and whether it seeds a new data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibrarySettings {
    /// Chunk size and overlap.
    pub chunks: ChunkSettings,
    /// Index tidewire's own documentation on the first open of a data directory.
    pub seed_docs: bool,
}

impl From<&DocumentsConfig> for LibrarySettings {
    fn from(config: &DocumentsConfig) -> Self {
        Self {
            chunks: ChunkSettings {
                chars: config.chunk_chars,
                overlap: config.chunk_overlap,
            },
            seed_docs: config.seed_docs,
        }
    }
}

/// A document to ingest.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Its name (a file name).
    pub name: String,
    /// The absolute path it was read from; `None` for an upload, which is then the
    /// same document as an earlier upload of that name in the collection.
    pub source: Option<String>,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// How to read them.
    pub format: Format,
    /// Its collection.
    pub collection: String,
}

/// What an ingest did to a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestStatus {
    /// A new document.
    Added,
    /// Its bytes changed: its chunks were replaced.
    Replaced,
    /// Same bytes as before: nothing was done.
    Unchanged,
}

/// The result of ingesting one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
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

/// Why the library failed.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// A document could not be read.
    #[error("{name}: {error}")]
    Parse {
        /// The document's name.
        name: String,
        /// Why.
        error: ParseError,
    },
    /// A name or collection is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The documents and their index.
pub struct Library {
    index: ChunkIndex,
    store: Arc<dyn Store>,
    settings: LibrarySettings,
    /// One write at a time: the index has one writer, and a document's record and
    /// chunks change together.
    writes: tokio::sync::Mutex<()>,
    /// The seeding task, if one runs, and how to stop it.
    seeding: Mutex<Option<JoinHandle<()>>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Library {
    /// Opens the index in `{data_dir}/index/` (creating it if missing), deletes the
    /// chunks whose document has no record (left by a stop in the middle of a
    /// write), and, when `settings.seed_docs` and this data directory was never
    /// seeded, starts indexing tidewire's documentation in the background.
    pub async fn open(
        data_dir: &Path,
        store: Arc<dyn Store>,
        settings: LibrarySettings,
    ) -> Result<Arc<Self>, LibraryError> {
        let dir = data_dir.join("index");
        let (index, created) = blocking(move || ChunkIndex::open(&dir)).await??;
        let library = Arc::new(Self {
            index,
            store,
            settings,
            writes: tokio::sync::Mutex::new(()),
            seeding: Mutex::new(None),
            stop: CancellationToken::new(),
        });
        library.reconcile(created).await?;
        let marker = seed::marker(data_dir);
        if created {
            // A new index holds nothing: the documentation goes in again.
            let _ = tokio::fs::remove_file(&marker).await;
        }
        if settings.seed_docs && !marker.exists() {
            let seeding = tokio::spawn(Arc::clone(&library).seed(marker));
            *library
                .seeding
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(seeding);
        }
        Ok(library)
    }

    /// Stops seeding, if it still runs, and waits for it: after this the library
    /// is held by no task of its own.
    pub async fn close(&self) {
        self.stop.cancel();
        let seeding = self
            .seeding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(seeding) = seeding {
            let _ = seeding.await;
        }
    }

    /// Ingests one document.
    pub async fn ingest(
        &self,
        name: &str,
        source: Option<&str>,
        bytes: Vec<u8>,
        format: Format,
        collection: &str,
    ) -> Result<IngestOutcome, LibraryError> {
        let mut outcomes = self
            .ingest_many(vec![Upload {
                name: name.to_owned(),
                source: source.map(str::to_owned),
                bytes,
                format,
                collection: collection.to_owned(),
            }])
            .await?;
        outcomes
            .pop()
            .ok_or(LibraryError::Store(StoreError::Internal(
                "an ingest of one document had no outcome",
            )))
    }

    /// Ingests documents together: if any cannot be read, none is ingested (the
    /// error names it); otherwise their chunks are committed at once.
    pub async fn ingest_many(
        &self,
        uploads: Vec<Upload>,
    ) -> Result<Vec<IngestOutcome>, LibraryError> {
        for upload in &uploads {
            check_collection(&upload.collection)?;
            check_name(&upload.name)?;
        }
        let mut keys = HashSet::new();
        for upload in &uploads {
            let key = DocumentKey::new(&upload.collection, upload.source.as_deref(), &upload.name);
            if !keys.insert(key) {
                return Err(LibraryError::Invalid(format!(
                    "{} is sent twice",
                    upload.source.as_deref().unwrap_or(&upload.name)
                )));
            }
        }
        let mut plans = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let key = DocumentKey::new(&upload.collection, upload.source.as_deref(), &upload.name);
            let existing = self.store.find_document(&key).await?;
            plans.push(Plan {
                key,
                upload,
                existing,
            });
        }
        // Among nodes sharing a store, a recorded document may be missing from this
        // node's index; alone, the index and the records agree (reconciled at start).
        let indexed: Option<Arc<HashSet<String>>> = if self.store.is_shared() {
            Some(Arc::new(self.index.document_ids().await?))
        } else {
            None
        };
        let here = {
            let indexed = indexed.clone();
            move |id: &str| indexed.as_ref().is_none_or(|ids| ids.contains(id))
        };
        // Reading and cutting is the slow part: it runs before the write lock, so
        // one large file does not hold up the other writes.
        let settings = self.settings.chunks;
        let (plans, prepared) = blocking(move || {
            let prepared: Result<Vec<Prepared>, LibraryError> = plans
                .iter()
                .map(|plan| prepare(&plan.upload, plan.existing.as_ref(), &here, &settings))
                .collect();
            (plans, prepared)
        })
        .await?;
        let _writing = self.writes.lock().await;
        // A write that came in between changed what a plan was made against:
        // prepare that one again, now that nothing else can write.
        let mut ready = Vec::with_capacity(plans.len());
        for (plan, prepared) in plans.into_iter().zip(prepared?) {
            let now = self.store.find_document(&plan.key).await?;
            let basis = |record: &Option<DocumentRecord>| {
                record
                    .as_ref()
                    .map(|record| (record.id.clone(), record.content_hash.clone()))
            };
            if basis(&now) == basis(&plan.existing) {
                ready.push(prepared);
            } else {
                let indexed = indexed.clone();
                let here = move |id: &str| indexed.as_ref().is_none_or(|ids| ids.contains(id));
                ready.push(
                    blocking(move || prepare(&plan.upload, now.as_ref(), &here, &settings))
                        .await??,
                );
            }
        }
        let changes: Vec<Change> = ready
            .iter_mut()
            .filter_map(|prepared| {
                prepared.chunks.take().map(|chunks| Change::Put {
                    document_id: prepared.record.id.clone(),
                    collection: prepared.record.collection.clone(),
                    name: prepared.record.name.clone(),
                    chunks,
                })
            })
            .collect();
        if !changes.is_empty() {
            self.index.apply(changes).await?;
        }
        let mut outcomes = Vec::with_capacity(ready.len());
        for plan in ready {
            if plan.status != IngestStatus::Unchanged
                && let Err(error) = self.store.put_document(plan.record.clone()).await
            {
                if plan.status == IngestStatus::Added {
                    // Its chunks would be found with no record behind them.
                    let _ = self.forget_chunks(&plan.record.id).await;
                }
                return Err(error.into());
            }
            outcomes.push(IngestOutcome {
                document_id: plan.record.id,
                name: plan.record.name,
                collection: plan.record.collection,
                status: plan.status,
                chunks: plan.record.chunks,
                bytes: plan.record.bytes,
            });
        }
        Ok(outcomes)
    }

    /// The documents of `collection` (of every collection when `None`).
    pub async fn list(
        &self,
        collection: Option<&str>,
    ) -> Result<Vec<DocumentRecord>, LibraryError> {
        Ok(self.store.list_documents(collection).await?)
    }

    /// The document with this id, if any.
    pub async fn get(&self, id: &str) -> Result<Option<DocumentRecord>, LibraryError> {
        Ok(self.store.get_document(id).await?)
    }

    /// Deletes a document and its chunks; `false` if there is no such document.
    pub async fn delete(&self, id: &str) -> Result<bool, LibraryError> {
        let _writing = self.writes.lock().await;
        if self.store.delete_documents(vec![id.to_owned()]).await? == 0 {
            return Ok(false);
        }
        self.forget_chunks(id).await?;
        Ok(true)
    }

    /// Deletes the file documents of `collection` whose source is under one of
    /// `roots` (absolute paths) but not in `present`: the files that are gone.
    /// Returns the deleted documents.
    pub async fn prune(
        &self,
        collection: &str,
        roots: &[String],
        present: &HashSet<String>,
    ) -> Result<Vec<DocumentRecord>, LibraryError> {
        check_collection(collection)?;
        let _writing = self.writes.lock().await;
        let gone: Vec<DocumentRecord> = self
            .store
            .list_documents(Some(collection))
            .await?
            .into_iter()
            .filter(|document| {
                document.source != UPLOAD_SOURCE
                    && !present.contains(&document.source)
                    && roots
                        .iter()
                        .any(|root| Path::new(&document.source).starts_with(root))
            })
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let ids: Vec<String> = gone.iter().map(|document| document.id.clone()).collect();
        self.store.delete_documents(ids.clone()).await?;
        self.index
            .apply(
                ids.into_iter()
                    .map(|document_id| Change::Delete { document_id })
                    .collect(),
            )
            .await?;
        Ok(gone)
    }

    async fn forget_chunks(&self, id: &str) -> Result<(), LibraryError> {
        let change = Change::Delete {
            document_id: id.to_owned(),
        };
        Ok(self.index.apply(vec![change]).await?)
    }

    /// Makes the index and the records agree after an unclean stop: chunks without
    /// a record go; on a new index, records (whose chunks are lost) go too, so
    /// their files are ingested again rather than found unchanged.
    async fn reconcile(&self, created: bool) -> Result<(), LibraryError> {
        let records = self.store.list_documents(None).await?;
        if created && !records.is_empty() && !self.store.is_shared() {
            tracing::warn!(
                documents = records.len(),
                "the index is new but documents are recorded; forgetting them so they are ingested again"
            );
            let ids = records.into_iter().map(|record| record.id).collect();
            self.store.delete_documents(ids).await?;
            return Ok(());
        }
        let known: HashSet<String> = records.into_iter().map(|record| record.id).collect();
        let orphans: Vec<Change> = self
            .index
            .document_ids()
            .await?
            .into_iter()
            .filter(|id| !known.contains(id))
            .map(|document_id| Change::Delete { document_id })
            .collect();
        if !orphans.is_empty() {
            tracing::info!(
                documents = orphans.len(),
                "deleting chunks left without a document"
            );
            self.index.apply(orphans).await?;
        }
        Ok(())
    }

    /// Ingests the documentation shipped in the binary (one batch, one commit),
    /// then writes the marker.
    async fn seed(self: Arc<Self>, marker: std::path::PathBuf) {
        if self.stop.is_cancelled() {
            return;
        }
        let started = std::time::Instant::now();
        let uploads: Vec<Upload> = seed::DOCS
            .iter()
            .map(|doc| Upload {
                name: doc.name.to_owned(),
                source: Some(doc.source.to_owned()),
                bytes: doc.text.as_bytes().to_vec(),
                format: seed::FORMAT,
                collection: seed::COLLECTION.to_owned(),
            })
            .collect();
        // Nodes sharing a store and started together seed at once: one of two that
        // record the same document first wins, and the other tries again (finding
        // the record, it indexes the document under its id).
        let mut attempts = 1;
        let seeded = loop {
            match self.ingest_many(uploads.clone()).await {
                Err(error) if attempts < 3 && self.store.is_shared() => {
                    tracing::debug!(%error, "seeding met another node's; trying again");
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                seeded => break seeded,
            }
        };
        match seeded {
            Ok(outcomes) => tracing::info!(
                documents = outcomes.len(),
                chunks = outcomes.iter().map(|outcome| outcome.chunks).sum::<u64>(),
                elapsed_ms = started.elapsed().as_millis(),
                "tidewire's documentation indexed into the default collection"
            ),
            Err(error) => {
                tracing::warn!(%error, "cannot index tidewire's documentation");
                return;
            }
        }
        let written = Timestamp::now().rfc3339();
        if let Err(error) = tokio::fs::write(&marker, written).await {
            tracing::warn!(%error, path = %marker.display(), "cannot write the seeding marker");
        }
    }
}

#[async_trait]
impl Retriever for Library {
    async fn search(
        &self,
        query: &str,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<Hit>, SearchError> {
        self.index
            .search(query, scope, limit)
            .await
            .map_err(|error| SearchError(error.to_string()))
    }
}

/// An upload, the key it is stored under, and the record it had when it came.
struct Plan {
    key: DocumentKey,
    upload: Upload,
    existing: Option<DocumentRecord>,
}

/// Runs CPU- or disk-bound work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LibraryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| LibraryError::Index(IndexError::Task(error.to_string())))
}

#[cfg(test)]
mod tests;
