-- What the pipeline said about an answer besides its text: the sources it drew on
-- (a JSON array of {chunk_id, document_name, text, score}), its quality score, and
-- the follow-up questions it suggested (a JSON array of strings).
ALTER TABLE messages ADD COLUMN sources TEXT;
ALTER TABLE messages ADD COLUMN quality_score REAL;
ALTER TABLE messages ADD COLUMN follow_up_questions TEXT;
