-- Device push tokens: what chat-api reads when it queues a push notification for a
-- recipient with no open socket. A token belongs to one user at a time: registering it for
-- another user (a shared device that changed accounts) moves it.
CREATE TABLE push_tokens (
    user_id    BIGINT UNSIGNED NOT NULL,
    token      VARBINARY(512)  NOT NULL,
    platform   VARCHAR(16)     NULL,
    updated_at DATETIME(3)     NOT NULL,
    PRIMARY KEY (user_id, token),
    KEY ix_push_tokens_token (token),
    CONSTRAINT fk_push_tokens_user FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
