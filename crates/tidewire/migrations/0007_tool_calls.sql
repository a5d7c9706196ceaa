-- The tools an answer called: a JSON array of {tool_call_id, tool_name, arguments,
-- result, duration_ms, is_error}, in the order the calls started.
ALTER TABLE messages ADD COLUMN tool_calls TEXT;
