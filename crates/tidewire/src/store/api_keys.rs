//! API keys in the database: made, listed and revoked by `tidewire keys` (while a
//! server may be running on the same database: the server reads a key at every
//! request, so a revoked key stops working at once), looked up by the server by
//! hash through [`Store::find_api_key`](super::Store::find_api_key).
//!
//! [`ApiKeys`] opens either database by itself, without a [`Store`](super::Store):
//! the SQLite store takes the data directory's lock, which a running server holds.

use std::path::Path;

use sqlx::{PgPool, SqlitePool};

use super::{ApiKeyRecord, StoreError, Timestamp, new_id, postgres, sqlite};

/// The API keys of a database, for managing them.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    db: Db,
}

#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl ApiKeys {
    /// Opens the SQLite database of `data_dir` (creating it and its schema if
    /// needed) without taking the data directory's lock: a running server may hold
    /// it.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::Sqlite(sqlite::keys::open(data_dir).await?),
        })
    }

    /// Connects to a PostgreSQL database, in `schema` when given (see
    /// [`PostgresStore::connect`](super::PostgresStore::connect)), bringing its
    /// schema up to date.
    pub async fn connect_postgres(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::Postgres(postgres::keys::connect(url, schema).await?),
        })
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
        match &self.db {
            Db::Sqlite(pool) => sqlite::keys::insert(pool, &record).await?,
            Db::Postgres(pool) => postgres::keys::insert(pool, &record).await?,
        }
        Ok(record)
    }

    /// The keys of `user_id` (of everyone when `None`), newest first.
    pub async fn list(&self, user_id: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Ok(match &self.db {
            Db::Sqlite(pool) => sqlite::keys::list(pool, user_id).await?,
            Db::Postgres(pool) => postgres::keys::list(pool, user_id).await?,
        })
    }

    /// Revokes a key by id; `false` if there is none, or it was revoked already.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        Ok(match &self.db {
            Db::Sqlite(pool) => sqlite::keys::revoke(pool, id, now).await?,
            Db::Postgres(pool) => postgres::keys::revoke(pool, id, now).await?,
        })
    }
}
