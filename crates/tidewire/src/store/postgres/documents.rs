//! The `documents` table of the PostgreSQL store.

use std::borrow::Cow;

use sqlx::PgPool;

use super::text;
use crate::store::rows::{DOCUMENT_COLUMNS, DocumentRow, to_i64};
use crate::store::{DocumentKey, DocumentRecord};

/// The document stored under `key`.
pub(super) async fn find(
    pool: &PgPool,
    key: &DocumentKey,
) -> Result<Option<DocumentRecord>, sqlx::Error> {
    let (filter, collection, value) = match key {
        DocumentKey::Source { collection, source } => (
            "collection = $1 AND source = $2 AND source <> 'upload'",
            collection,
            source,
        ),
        DocumentKey::Upload { collection, name } => (
            "collection = $1 AND name = $2 AND source = 'upload'",
            collection,
            name,
        ),
    };
    let sql = format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE {filter}");
    let row: Option<DocumentRow> = sqlx::query_as(&sql)
        .bind(text(collection))
        .bind(text(value))
        .fetch_optional(pool)
        .await?;
    Ok(row.map(DocumentRecord::from))
}

/// The document with this id.
pub(super) async fn get(pool: &PgPool, id: &str) -> Result<Option<DocumentRecord>, sqlx::Error> {
    let row: Option<DocumentRow> = sqlx::query_as(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE id = $1"
    ))
    .bind(text(id))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(DocumentRecord::from))
}

/// The documents of a collection, or of all.
pub(super) async fn list(
    pool: &PgPool,
    collection: Option<&str>,
) -> Result<Vec<DocumentRecord>, sqlx::Error> {
    let rows: Vec<DocumentRow> = sqlx::query_as(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents \
         WHERE $1::text IS NULL OR collection = $1 ORDER BY collection, name, id"
    ))
    .bind(collection.map(text))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(DocumentRecord::from).collect())
}

/// Inserts a document record or replaces the one with its id, keeping when it was
/// created.
pub(super) async fn put(
    pool: &PgPool,
    document: &DocumentRecord,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO documents \
         (id, collection, name, source, format, content_hash, bytes, chunks, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET collection = excluded.collection, name = excluded.name, \
         source = excluded.source, format = excluded.format, content_hash = excluded.content_hash, \
         bytes = excluded.bytes, chunks = excluded.chunks, updated_at = excluded.updated_at",
    )
    .bind(text(&document.id))
    .bind(text(&document.collection))
    .bind(text(&document.name))
    .bind(text(&document.source))
    .bind(text(&document.format))
    .bind(text(&document.content_hash))
    .bind(to_i64(document.bytes))
    .bind(to_i64(document.chunks))
    .bind(document.created_at.0.min(now))
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes documents by id; how many existed.
pub(super) async fn delete(pool: &PgPool, ids: &[String]) -> Result<u64, sqlx::Error> {
    let ids: Vec<Cow<'_, str>> = ids.iter().map(|id| text(id)).collect();
    let done = sqlx::query("DELETE FROM documents WHERE id = ANY($1)")
        .bind(&ids)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
