//! Preparing an upload: its SHA-256, whether it differs from its stored record,
//! and if so its blocks and chunks. CPU-bound: the library runs it on blocking
//! threads.

use sha2::{Digest, Sha256};

use super::chunk::{Chunk, ChunkSettings, chunk};
use super::library::{IngestStatus, LibraryError, Upload};
use super::parse::parse;
use crate::store::{DocumentRecord, Timestamp, UPLOAD_SOURCE, new_id};

/// Longest collection name, in characters.
const MAX_COLLECTION_CHARS: usize = 128;
/// Longest document name, in characters.
const MAX_NAME_CHARS: usize = 512;

/// An upload ready to write: its record, and its chunks unless it is unchanged.
pub(super) struct Prepared {
    pub(super) record: DocumentRecord,
    pub(super) status: IngestStatus,
    pub(super) chunks: Option<Vec<Chunk>>,
}

/// Compares `upload` with the record it would replace and, if its bytes differ
/// (or this node's index lacks its chunks: a store shared with other nodes may
/// record a document only they indexed), reads and cuts it (keeping the record's
/// id, so chunk ids stay stable).
pub(super) fn prepare(
    upload: &Upload,
    existing: Option<&DocumentRecord>,
    indexed_here: &dyn Fn(&str) -> bool,
    settings: &ChunkSettings,
) -> Result<Prepared, LibraryError> {
    let hash = hex_sha256(&upload.bytes);
    if let Some(record) =
        existing.filter(|record| record.content_hash == hash && indexed_here(&record.id))
    {
        return Ok(Prepared {
            record: record.clone(),
            status: IngestStatus::Unchanged,
            chunks: None,
        });
    }
    let blocks = parse(&upload.bytes, upload.format).map_err(|error| LibraryError::Parse {
        name: upload.name.clone(),
        error,
    })?;
    let now = Timestamp::now();
    let (id, created_at, status) = match existing {
        Some(record) => (record.id.clone(), record.created_at, IngestStatus::Replaced),
        None => (new_id(), now, IngestStatus::Added),
    };
    let chunks = chunk(&id, &blocks, settings);
    Ok(Prepared {
        record: DocumentRecord {
            id,
            collection: upload.collection.clone(),
            name: upload.name.clone(),
            source: upload
                .source
                .clone()
                .unwrap_or_else(|| UPLOAD_SOURCE.to_owned()),
            format: upload.format.as_str().to_owned(),
            content_hash: hash,
            bytes: upload.bytes.len() as u64,
            chunks: chunks.len() as u64,
            created_at,
            updated_at: now,
        },
        status,
        chunks: Some(chunks),
    })
}

fn hex_sha256(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// A collection is a short name on one line.
pub(super) fn check_collection(collection: &str) -> Result<(), LibraryError> {
    if collection.trim().is_empty()
        || collection.chars().count() > MAX_COLLECTION_CHARS
        || collection.chars().any(char::is_control)
    {
        return Err(LibraryError::Invalid(format!(
            "a collection is 1 to {MAX_COLLECTION_CHARS} characters on one line"
        )));
    }
    Ok(())
}

/// A document name is a file name on one line.
pub(super) fn check_name(name: &str) -> Result<(), LibraryError> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(LibraryError::Invalid(format!(
            "a document name is 1 to {MAX_NAME_CHARS} characters on one line"
        )));
    }
    Ok(())
}
