-- Messages get their place in the conversation as a number, so their order does
-- not depend on SQLite's rowid (nor on a database that has one). Existing messages
-- are numbered in the order they were inserted.
ALTER TABLE messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET seq = (
    SELECT count(*) FROM messages m
    WHERE m.conversation_id = messages.conversation_id AND m.rowid <= messages.rowid
);
DROP INDEX messages_by_conversation;
CREATE UNIQUE INDEX messages_in_order ON messages (conversation_id, seq);
