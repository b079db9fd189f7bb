-- Users, contacts, chats, members (with per-member read watermark and flags) and messages.
-- Runs on MySQL 8 and MariaDB 10.11: no RETURNING, utf8mb4 everywhere. utf8mb4_unicode_ci rather than
-- a binary collation because sqlx decodes binary-collated VARCHARs as VARBINARY.

CREATE TABLE users (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    username      VARCHAR(32)     NOT NULL,
    email         VARCHAR(254)    NULL,
    password_hash VARCHAR(255)    NOT NULL,
    created_at    DATETIME(3)     NOT NULL,
    last_seen     DATETIME(3)     NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_users_username (username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE contacts (
    owner_id   BIGINT UNSIGNED NOT NULL,
    contact_id BIGINT UNSIGNED NOT NULL,
    created_at DATETIME(3)     NOT NULL,
    PRIMARY KEY (owner_id, contact_id),
    KEY ix_contacts_contact (contact_id),
    CONSTRAINT fk_contacts_owner FOREIGN KEY (owner_id) REFERENCES users (id),
    CONSTRAINT fk_contacts_contact FOREIGN KEY (contact_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- last_seq is the per-chat message counter: a sender locks this row (SELECT ... FOR UPDATE)
-- in the transaction that inserts the message, so seq has no gaps and no duplicates.
-- pair_key ("<low id>:<high id>") makes private chats unique per pair of users.
CREATE TABLE chats (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    kind             VARCHAR(8)      NOT NULL,
    title            VARCHAR(128)    NULL,
    pair_key         VARCHAR(41)     NULL,
    created_by       BIGINT UNSIGNED NOT NULL,
    created_at       DATETIME(3)     NOT NULL,
    last_seq         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    last_message_id  BIGINT UNSIGNED NULL,
    last_activity_at DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_chats_pair (pair_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE chat_members (
    chat_id       BIGINT UNSIGNED NOT NULL,
    user_id       BIGINT UNSIGNED NOT NULL,
    role          VARCHAR(8)      NOT NULL,
    joined_at     DATETIME(3)     NOT NULL,
    last_read_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    pinned        TINYINT(1)      NOT NULL DEFAULT 0,
    archived      TINYINT(1)      NOT NULL DEFAULT 0,
    PRIMARY KEY (chat_id, user_id),
    KEY ix_members_user (user_id, chat_id),
    CONSTRAINT fk_members_chat FOREIGN KEY (chat_id) REFERENCES chats (id),
    CONSTRAINT fk_members_user FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- uq_messages_idem makes a retried send (same sender, chat and client_msg_id) find the first one.
CREATE TABLE messages (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    chat_id       BIGINT UNSIGNED NOT NULL,
    seq           BIGINT UNSIGNED NOT NULL,
    sender_id     BIGINT UNSIGNED NOT NULL,
    kind          VARCHAR(8)      NOT NULL,
    body          TEXT            NULL,
    attachment_id BIGINT UNSIGNED NULL,
    reply_to_id   BIGINT UNSIGNED NULL,
    client_msg_id VARBINARY(256)  NOT NULL, -- byte-exact: ids differing only in case are distinct
    created_at    DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_messages_chat_seq (chat_id, seq),
    UNIQUE KEY uq_messages_idem (chat_id, sender_id, client_msg_id),
    CONSTRAINT fk_messages_chat FOREIGN KEY (chat_id) REFERENCES chats (id),
    CONSTRAINT fk_messages_sender FOREIGN KEY (sender_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
