-- SQLite twin of migrations/0004_attachments.sql: uploaded files (the bytes live in object storage
-- under object_key) and the index behind the download access check.
CREATE TABLE attachments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    uploader_id  INTEGER NOT NULL,
    object_key   TEXT    NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    content_type TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    CONSTRAINT fk_attachments_uploader FOREIGN KEY (uploader_id) REFERENCES users (id)
) STRICT;
CREATE INDEX ix_attachments_uploader ON attachments (uploader_id);
CREATE INDEX ix_messages_attachment ON messages (attachment_id);
