-- SQLite twin of migrations/0002_sync.sql: when each read watermark last moved, and indexes that
-- find a user's events from a point in time in each of the user's chats.
ALTER TABLE chat_members ADD COLUMN read_at TEXT NULL;
CREATE INDEX ix_members_chat_read ON chat_members (chat_id, read_at);
CREATE INDEX ix_messages_chat_created ON messages (chat_id, created_at);
