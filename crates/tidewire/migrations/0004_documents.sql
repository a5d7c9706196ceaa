-- The documents of the retrieval index: one row per document, its chunks in the
-- tantivy index under the same id. Times are Unix milliseconds.
CREATE TABLE documents (
    id           TEXT PRIMARY KEY NOT NULL,
    collection   TEXT NOT NULL,
    name         TEXT NOT NULL,
    -- The absolute path of an ingested file, `upload` for a document sent without
    -- one, or `tidewire:<file>` for the documentation shipped in the binary.
    source       TEXT NOT NULL,
    format       TEXT NOT NULL CHECK (format IN ('markdown', 'text', 'html', 'pdf')),
    content_hash TEXT NOT NULL, -- SHA-256 of the bytes, hex
    bytes        INTEGER NOT NULL,
    chunks       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
-- A file is one document per collection; so is an upload's name.
CREATE UNIQUE INDEX documents_by_source ON documents (collection, source)
    WHERE source <> 'upload';
CREATE UNIQUE INDEX documents_uploaded ON documents (collection, name)
    WHERE source = 'upload';
