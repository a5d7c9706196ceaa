//! The `documents` table: the records of the retrieval index's documents. Reads
//! run on the read pool; the writer thread calls [`put`] and [`delete`].

use sqlx::sqlite::SqlitePool;

use crate::store::rows::{DOCUMENT_COLUMNS, DocumentRow, to_i64};
use crate::store::{DocumentKey, DocumentRecord};

/// The document stored under `key`.
pub(super) async fn find(
    pool: &SqlitePool,
    key: &DocumentKey,
) -> Result<Option<DocumentRecord>, sqlx::Error> {
    let (filter, collection, value) = match key {
        DocumentKey::Source { collection, source } => (
            "collection = ? AND source = ? AND source <> 'upload'",
            collection,
            source,
        ),
        DocumentKey::Upload { collection, name } => (
            "collection = ? AND name = ? AND source = 'upload'",
            collection,
            name,
        ),
    };
    let sql = format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE {filter}");
    let row: Option<DocumentRow> = sqlx::query_as(&sql)
        .bind(collection)
        .bind(value)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(DocumentRecord::from))
}

/// The document with this id.
pub(super) async fn get(
    pool: &SqlitePool,
    id: &str,
) -> Result<Option<DocumentRecord>, sqlx::Error> {
    let row: Option<DocumentRow> = sqlx::query_as(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(DocumentRecord::from))
}

/// The documents of a collection, or of all.
pub(super) async fn list(
    pool: &SqlitePool,
    collection: Option<&str>,
) -> Result<Vec<DocumentRecord>, sqlx::Error> {
    let rows: Vec<DocumentRow> = sqlx::query_as(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents \
         WHERE ?1 IS NULL OR collection = ?1 ORDER BY collection, name, id"
    ))
    .bind(collection)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(DocumentRecord::from).collect())
}

/// Inserts a document record or replaces the one with its id, keeping when it was
/// created.
pub(super) fn put(
    conn: &rusqlite::Connection,
    document: &DocumentRecord,
    now: i64,
) -> Result<usize, rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO documents \
         (id, collection, name, source, format, content_hash, bytes, chunks, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (id) DO UPDATE SET collection = excluded.collection, name = excluded.name, \
         source = excluded.source, format = excluded.format, content_hash = excluded.content_hash, \
         bytes = excluded.bytes, chunks = excluded.chunks, updated_at = excluded.updated_at",
    )?
    .execute(rusqlite::params![
        document.id,
        document.collection,
        document.name,
        document.source,
        document.format,
        document.content_hash,
        to_i64(document.bytes),
        to_i64(document.chunks),
        document.created_at.0.min(now),
        now,
    ])
}

/// Deletes documents by id.
pub(super) fn delete(
    conn: &rusqlite::Connection,
    ids: &[String],
) -> Result<usize, rusqlite::Error> {
    let mut statement = conn.prepare_cached("DELETE FROM documents WHERE id = ?1")?;
    let mut deleted = 0;
    for id in ids {
        deleted += statement.execute([id])?;
    }
    Ok(deleted)
}
