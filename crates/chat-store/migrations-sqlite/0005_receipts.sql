-- SQLite twin of migrations/0005_receipts.sql: delivered watermarks, edited and deleted messages.
ALTER TABLE chat_members ADD COLUMN last_delivered_seq INTEGER NOT NULL DEFAULT 0 CHECK (last_delivered_seq >= 0);
ALTER TABLE chat_members ADD COLUMN delivered_at TEXT NULL;
CREATE INDEX ix_members_chat_delivered ON chat_members (chat_id, delivered_at);
ALTER TABLE messages ADD COLUMN edited_at TEXT NULL;
ALTER TABLE messages ADD COLUMN deleted_at TEXT NULL;
ALTER TABLE messages ADD COLUMN updated_at TEXT NULL;
CREATE INDEX ix_messages_chat_updated ON messages (chat_id, updated_at);
