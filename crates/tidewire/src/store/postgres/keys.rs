//! The `api_keys` table of the PostgreSQL store, for
//! [`ApiKeys`](crate::store::ApiKeys) and the store's lookups by hash.

use sqlx::PgPool;

use super::{connect_pool, text};
use crate::store::rows::{KEY_COLUMNS, KeyRow};
use crate::store::{ApiKeyRecord, StoreError, Timestamp};

/// A pool for `tidewire keys`: one command at a time needs one connection.
pub(in crate::store) async fn connect(
    url: &str,
    schema: Option<&str>,
) -> Result<PgPool, StoreError> {
    connect_pool(url, schema, 1).await
}

/// Stores a new key.
pub(in crate::store) async fn insert(
    pool: &PgPool,
    record: &ApiKeyRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)"
    ))
    .bind(text(&record.id))
    .bind(text(&record.user_id))
    .bind(text(&record.name))
    .bind(text(&record.key_hash))
    .bind(text(&record.prefix))
    .bind(record.created_at.0)
    .bind(record.expires_at.map(|t| t.0))
    .execute(pool)
    .await?;
    Ok(())
}

/// The keys of a user, or of everyone, newest first.
pub(in crate::store) async fn list(
    pool: &PgPool,
    user_id: Option<&str>,
) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
    let rows: Vec<KeyRow> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR user_id = $1 \
         ORDER BY created_at DESC, id DESC"
    ))
    .bind(user_id.map(text))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(ApiKeyRecord::from).collect())
}

/// Revokes a key by id; `false` if there is none, or it was revoked already.
pub(in crate::store) async fn revoke(
    pool: &PgPool,
    id: &str,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now.0)
            .bind(text(id))
            .execute(pool)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// The key with this hash.
pub(super) async fn find(
    pool: &PgPool,
    key_hash: &str,
) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
    let row: Option<KeyRow> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
    ))
    .bind(text(key_hash))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(ApiKeyRecord::from))
}
