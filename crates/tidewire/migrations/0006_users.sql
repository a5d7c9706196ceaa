-- Every conversation belongs to a user ('local' when authentication is off, the
-- one user of a laptop), and API keys name theirs. Only a key's SHA-256 is kept.
ALTER TABLE conversations ADD COLUMN user_id TEXT NOT NULL DEFAULT 'local';
CREATE INDEX conversations_by_user ON conversations (user_id, updated_at DESC);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);
