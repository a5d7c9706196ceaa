//! API keys in the database: made, listed and revoked by `tidewire keys` (while a
//! server may be running on the same data directory: SQLite serializes the
//! writes, and the server reads a key at every request, so a revoked key stops
//! working at once), looked up by the server by hash.

use std::path::Path;
use std::time::Duration;

use sqlx::FromRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::store::{ApiKeyRecord, StoreError, Timestamp, new_id};

/// The API keys of a data directory, for managing them.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    pool: SqlitePool,
}

#[derive(FromRow)]
struct KeyRow {
    id: String,
    user_id: String,
    name: String,
    key_hash: String,
    prefix: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<KeyRow> for ApiKeyRecord {
    fn from(row: KeyRow) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            key_hash: row.key_hash,
            prefix: row.prefix,
            created_at: Timestamp(row.created_at),
            expires_at: row.expires_at.map(Timestamp),
            revoked_at: row.revoked_at.map(Timestamp),
        }
    }
}

const COLUMNS: &str = "id, user_id, name, key_hash, prefix, created_at, expires_at, revoked_at";

impl ApiKeys {
    /// Opens the database of `data_dir` (creating it and its schema if needed)
    /// without taking the data directory's lock: a running server may hold it.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
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
        Ok(Self { pool })
    }

    /// Stores a new key (its hash).
    pub async fn create(
        &self,
        user_id: &str,
        name: &str,
        key_hash: &str,
        prefix: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord {
            id: new_id(),
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            key_hash: key_hash.to_owned(),
            prefix: prefix.to_owned(),
            created_at: Timestamp::now(),
            expires_at,
            revoked_at: None,
        };
        sqlx::query(&format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)"
        ))
        .bind(&record.id)
        .bind(&record.user_id)
        .bind(&record.name)
        .bind(&record.key_hash)
        .bind(&record.prefix)
        .bind(record.created_at.0)
        .bind(record.expires_at.map(|t| t.0))
        .execute(&self.pool)
        .await?;
        Ok(record)
    }

    /// The keys of `user_id` (of everyone when `None`), newest first.
    pub async fn list(&self, user_id: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = match user_id {
            Some(user) => sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY created_at DESC, id DESC"
            ))
            .bind(user)
            .fetch_all(&self.pool)
            .await?,
            None => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(ApiKeyRecord::from).collect())
    }

    /// Revokes a key by id; `false` if there is none, or it was revoked already.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(Timestamp::now().0)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// The key with this hash, on `pool`.
pub(super) async fn find(
    pool: &SqlitePool,
    key_hash: &str,
) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
    let row: Option<KeyRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE key_hash = ?"
    ))
    .bind(key_hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(ApiKeyRecord::from))
}
