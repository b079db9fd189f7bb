-- Uploaded files. The bytes live in object storage under object_key; the row holds
-- what clients see. A message references one by messages.attachment_id; the index serves the
-- "is this attachment in a chat I am a member of" check of downloads.
CREATE TABLE attachments (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    uploader_id  BIGINT UNSIGNED NOT NULL,
    object_key   VARCHAR(255)    NOT NULL,
    size         BIGINT UNSIGNED NOT NULL,
    content_type VARCHAR(127)    NOT NULL,
    sha256       CHAR(64)        NOT NULL,
    created_at   DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    KEY ix_attachments_uploader (uploader_id),
    CONSTRAINT fk_attachments_uploader FOREIGN KEY (uploader_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
CREATE INDEX ix_messages_attachment ON messages (attachment_id);
