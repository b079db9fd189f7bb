-- Client contract 1.1: delivered receipts, edit and delete.
-- last_delivered_seq is a member's delivered watermark (never below last_read_seq as clients see
-- it: reading implies delivery), delivered_at when it last moved (database clock, for sync).
-- A message's edited_at and deleted_at are what clients see; updated_at is the later of the two,
-- the time of its latest message_updated event, indexed so sync finds them by chat and time.
ALTER TABLE chat_members
    ADD COLUMN last_delivered_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN delivered_at DATETIME(3) NULL;
CREATE INDEX ix_members_chat_delivered ON chat_members (chat_id, delivered_at);
ALTER TABLE messages
    ADD COLUMN edited_at DATETIME(3) NULL,
    ADD COLUMN deleted_at DATETIME(3) NULL,
    ADD COLUMN updated_at DATETIME(3) NULL;
CREATE INDEX ix_messages_chat_updated ON messages (chat_id, updated_at);
