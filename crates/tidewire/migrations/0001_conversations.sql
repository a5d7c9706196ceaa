-- Conversations and their messages. Times are Unix milliseconds.
CREATE TABLE conversations (
    id         TEXT PRIMARY KEY NOT NULL,
    title      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX conversations_by_update ON conversations (updated_at DESC);

-- Messages are ordered by rowid: a turn inserts the user message, then the answer.
CREATE TABLE messages (
    id                TEXT PRIMARY KEY NOT NULL,
    conversation_id   TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content           TEXT NOT NULL,
    status            TEXT NOT NULL
        CHECK (status IN ('streaming', 'complete', 'cancelled', 'failed', 'interrupted')),
    run_id            TEXT UNIQUE,
    model             TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    error_code        TEXT,
    error_message     TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id);
CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';
