//! The `api_keys` table of the SQLite store, for [`ApiKeys`](crate::store::ApiKeys)
//! and the store's lookups by hash.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::store::rows::{KEY_COLUMNS, KeyRow};
use crate::store::{ApiKeyRecord, StoreError, Timestamp};

/// A pool of one connection on the database of `data_dir` (created with its schema
/// if needed), without the data directory's lock. SQLite serializes its writes
/// with the server's.
pub(in crate::store) async fn open(data_dir: &Path) -> Result<SqlitePool, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let options = SqliteConnectOptions::new()
        .filename(data_dir.join("tidewire.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Stores a new key.
pub(in crate::store) async fn insert(
    pool: &SqlitePool,
    record: &ApiKeyRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)"
    ))
    .bind(&record.id)
    .bind(&record.user_id)
    .bind(&record.name)
    .bind(&record.key_hash)
    .bind(&record.prefix)
    .bind(record.created_at.0)
    .bind(record.expires_at.map(|t| t.0))
    .execute(pool)
    .await?;
    Ok(())
}

/// The keys of a user, or of everyone, newest first.
pub(in crate::store) async fn list(
    pool: &SqlitePool,
    user_id: Option<&str>,
) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
    let rows: Vec<KeyRow> = match user_id {
        Some(user) => {
            sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = ? \
                 ORDER BY created_at DESC, id DESC"
            ))
            .bind(user)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
            ))
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows.into_iter().map(ApiKeyRecord::from).collect())
}

/// Revokes a key by id; `false` if there is none, or it was revoked already.
pub(in crate::store) async fn revoke(
    pool: &SqlitePool,
    id: &str,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now.0)
            .bind(id)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// The key with this hash.
pub(super) async fn find(
    pool: &SqlitePool,
    key_hash: &str,
) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
    let row: Option<KeyRow> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?"
    ))
    .bind(key_hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(ApiKeyRecord::from))
}
