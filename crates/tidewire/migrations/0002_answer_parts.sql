-- The text of a running answer arrives in pieces, one per flush, so a flush writes
-- only what is new instead of rewriting the whole answer. When the answer ends, its
-- text goes to messages.content and its pieces are deleted; readers append the
-- pieces of an answer still running to its content.
CREATE TABLE answer_parts (
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL, -- byte offset of the piece in the answer
    text       TEXT NOT NULL,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;
