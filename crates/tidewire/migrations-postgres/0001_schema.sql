-- The PostgreSQL schema: the schema of the SQLite migrations (0001 to 0007) as it
-- stands after the last of them, in one step. It keeps SQLite's types where they
-- matter to the code: times are Unix milliseconds (BIGINT), and the JSON columns
-- are TEXT written and read with the same serde as SQLite's. Ids, names and
-- sources use the "C" collation, so they sort byte by byte as SQLite's BINARY
-- does, whatever the database's locale.

-- Every conversation belongs to a user ('local' when authentication is off).
CREATE TABLE conversations (
    id         TEXT COLLATE "C" PRIMARY KEY,
    title      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL DEFAULT 'local'
);
CREATE INDEX conversations_by_user ON conversations (user_id, updated_at DESC);

-- A message's place in its conversation is `seq` (1, 2, 3, ...): a turn takes the
-- next two, the user message and then the answer.
CREATE TABLE messages (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    conversation_id     TEXT COLLATE "C" NOT NULL
        REFERENCES conversations (id) ON DELETE CASCADE,
    seq                 BIGINT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content             TEXT NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('streaming', 'complete', 'cancelled', 'failed', 'interrupted')),
    run_id              TEXT COLLATE "C" UNIQUE,
    model               TEXT,
    prompt_tokens       BIGINT,
    completion_tokens   BIGINT,
    error_code          TEXT,
    error_message       TEXT,
    -- A JSON array of {chunk_id, document_name, text, score}.
    sources             TEXT,
    quality_score       DOUBLE PRECISION,
    -- A JSON array of strings.
    follow_up_questions TEXT,
    -- A JSON array of {tool_call_id, tool_name, arguments, result, duration_ms,
    -- is_error}, in the order the calls started.
    tool_calls          TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE UNIQUE INDEX messages_in_order ON messages (conversation_id, seq);
CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';

-- The text of a running answer arrives in pieces, one per flush, so a flush writes
-- only what is new. When the answer ends, its text goes to messages.content and its
-- pieces are deleted; readers append the pieces of an answer still running.
CREATE TABLE answer_parts (
    message_id TEXT COLLATE "C" NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position   BIGINT NOT NULL, -- byte offset of the piece in the answer
    text       TEXT NOT NULL,
    PRIMARY KEY (message_id, position)
);

-- The documents of the retrieval index: one row per document, its chunks in the
-- tantivy index under the same id.
CREATE TABLE documents (
    id           TEXT COLLATE "C" PRIMARY KEY,
    collection   TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    -- The absolute path of an ingested file, `upload` for a document sent without
    -- one, or `tidewire:<file>` for the documentation shipped in the binary.
    source       TEXT COLLATE "C" NOT NULL,
    format       TEXT NOT NULL CHECK (format IN ('markdown', 'text', 'html', 'pdf')),
    content_hash TEXT NOT NULL, -- SHA-256 of the bytes, hex
    bytes        BIGINT NOT NULL,
    chunks       BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
-- A file is one document per collection; so is an upload's name.
CREATE UNIQUE INDEX documents_by_source ON documents (collection, source)
    WHERE source <> 'upload';
CREATE UNIQUE INDEX documents_uploaded ON documents (collection, name)
    WHERE source = 'upload';

-- Only a key's SHA-256 is kept.
CREATE TABLE api_keys (
    id         TEXT COLLATE "C" PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);
