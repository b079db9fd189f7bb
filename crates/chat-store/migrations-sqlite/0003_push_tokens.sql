-- SQLite twin of migrations/0003_push_tokens.sql: device push tokens, one user per token.
CREATE TABLE push_tokens (
    user_id    INTEGER NOT NULL,
    token      BLOB    NOT NULL,
    platform   TEXT    NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (user_id, token),
    CONSTRAINT fk_push_tokens_user FOREIGN KEY (user_id) REFERENCES users (id)
) STRICT;
CREATE INDEX ix_push_tokens_token ON push_tokens (token);
