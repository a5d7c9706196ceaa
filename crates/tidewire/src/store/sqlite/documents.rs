//! The `documents` table: the records of the retrieval index's documents. Reads
//! run on the read pool; the writer task calls [`put`] and [`delete`].

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{QueryBuilder, Sqlite};

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
pub(super) async fn put(
    conn: &mut SqliteConnection,
    document: &DocumentRecord,
    now: i64,
) -> Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error> {
    sqlx::query(
        "INSERT INTO documents \
         (id, collection, name, source, format, content_hash, bytes, chunks, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET collection = excluded.collection, name = excluded.name, \
         source = excluded.source, format = excluded.format, content_hash = excluded.content_hash, \
         bytes = excluded.bytes, chunks = excluded.chunks, updated_at = excluded.updated_at",
    )
    .bind(&document.id)
    .bind(&document.collection)
    .bind(&document.name)
    .bind(&document.source)
    .bind(&document.format)
    .bind(&document.content_hash)
    .bind(to_i64(document.bytes))
    .bind(to_i64(document.chunks))
    .bind(document.created_at.0.min(now))
    .bind(now)
    .execute(&mut *conn)
    .await
}

/// Deletes documents by id, a bounded number of ids per statement.
pub(super) async fn delete(
    conn: &mut SqliteConnection,
    ids: &[String],
) -> Result<u64, sqlx::Error> {
    const IDS_PER_STATEMENT: usize = 500;
    let mut deleted = 0;
    for ids in ids.chunks(IDS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new("DELETE FROM documents WHERE id IN (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        query.push(")");
        deleted += query.build().execute(&mut *conn).await?.rows_affected();
    }
    Ok(deleted)
}
