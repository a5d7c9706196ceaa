//! The `documents` table: the records of the retrieval index's documents. Reads
//! run on the read pool; the writer task calls [`put`] and [`delete`].

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::writer::to_i64;
use crate::store::{DocumentKey, DocumentRecord, Timestamp};

#[derive(FromRow)]
struct DocumentRow {
    id: String,
    collection: String,
    name: String,
    source: String,
    format: String,
    content_hash: String,
    bytes: i64,
    chunks: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<DocumentRow> for DocumentRecord {
    fn from(row: DocumentRow) -> Self {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Self {
            id: row.id,
            collection: row.collection,
            name: row.name,
            source: row.source,
            format: row.format,
            content_hash: row.content_hash,
            bytes: count(row.bytes),
            chunks: count(row.chunks),
            created_at: Timestamp(row.created_at),
            updated_at: Timestamp(row.updated_at),
        }
    }
}

/// The columns of a document record.
const DOCUMENT_COLUMNS: &str = "id, collection, name, source, format, content_hash, bytes, chunks, \
                                created_at, updated_at";

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

#[cfg(test)]
mod tests {
    use crate::store::{DocumentKey, DocumentRecord, SqliteStore, Store, StoreError, Timestamp};

    fn record(id: &str, collection: &str, name: &str, source: &str) -> DocumentRecord {
        DocumentRecord {
            id: id.into(),
            collection: collection.into(),
            name: name.into(),
            source: source.into(),
            format: "markdown".into(),
            content_hash: "00".repeat(32),
            bytes: 10,
            chunks: 2,
            created_at: Timestamp(1_000),
            updated_at: Timestamp(1_000),
        }
    }

    #[tokio::test]
    async fn documents_are_found_by_source_or_by_upload_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store
            .put_document(record("a", "c", "a.md", "/x/a.md"))
            .await
            .unwrap();
        store
            .put_document(record("b", "c", "a.md", "upload"))
            .await
            .unwrap();
        store
            .put_document(record("d", "other", "a.md", "/x/a.md"))
            .await
            .unwrap();

        let by_source = DocumentKey::new("c", Some("/x/a.md"), "renamed.md");
        assert_eq!(
            store.find_document(&by_source).await.unwrap().unwrap().id,
            "a"
        );
        let uploaded = DocumentKey::new("c", None, "a.md");
        assert_eq!(
            store.find_document(&uploaded).await.unwrap().unwrap().id,
            "b"
        );
        assert!(
            store
                .find_document(&DocumentKey::new("c", None, "z.md"))
                .await
                .unwrap()
                .is_none()
        );

        // One file per collection and source; one upload per collection and name.
        let error = store
            .put_document(record("e", "c", "other.md", "/x/a.md"))
            .await;
        assert!(matches!(error, Err(StoreError::Database(_))), "{error:?}");
        let error = store.put_document(record("f", "c", "a.md", "upload")).await;
        assert!(matches!(error, Err(StoreError::Database(_))), "{error:?}");

        // Replacing keeps the creation time.
        let mut changed = record("a", "c", "a.md", "/x/a.md");
        changed.chunks = 7;
        changed.created_at = Timestamp::now();
        store.put_document(changed).await.unwrap();
        let stored = store.get_document("a").await.unwrap().unwrap();
        assert_eq!((stored.chunks, stored.created_at), (7, Timestamp(1_000)));
        assert!(stored.updated_at > Timestamp(1_000));

        let listed: Vec<String> = store
            .list_documents(Some("c"))
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(listed, ["a", "b"]);
        assert_eq!(store.list_documents(None).await.unwrap().len(), 3);

        let ids = vec!["a".to_owned(), "d".to_owned(), "missing".to_owned()];
        assert_eq!(store.delete_documents(ids).await.unwrap(), 2);
        assert_eq!(store.delete_documents(Vec::new()).await.unwrap(), 0);
        assert!(store.get_document("a").await.unwrap().is_none());
        assert_eq!(store.list_documents(None).await.unwrap().len(), 1);
    }
}
