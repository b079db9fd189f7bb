-- SQLite twin of migrations/0001_initial.sql (the embedded single-process mode): the same
-- tables, columns, keys and indexes. Types map as BIGINT -> INTEGER, VARCHAR/TEXT -> TEXT,
-- VARBINARY -> BLOB (compared byte by byte, like VARBINARY), TINYINT(1) -> INTEGER 0/1 and
-- DATETIME(3) -> TEXT 'YYYY-MM-DD HH:MM:SS.mmm' in UTC (the store always writes three fraction
-- digits, so text order is time order). STRICT makes SQLite refuse values of the wrong type.
-- AUTOINCREMENT keeps ids from being reused after deletes, as AUTO_INCREMENT does.

-- NOCASE: the MySQL column's utf8mb4_unicode_ci makes usernames unique regardless of case.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL COLLATE NOCASE,
    email         TEXT    NULL,
    password_hash TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    last_seen     TEXT    NULL
) STRICT;
CREATE UNIQUE INDEX uq_users_username ON users (username);

CREATE TABLE contacts (
    owner_id   INTEGER NOT NULL,
    contact_id INTEGER NOT NULL,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (owner_id, contact_id),
    CONSTRAINT fk_contacts_owner FOREIGN KEY (owner_id) REFERENCES users (id),
    CONSTRAINT fk_contacts_contact FOREIGN KEY (contact_id) REFERENCES users (id)
) STRICT;
CREATE INDEX ix_contacts_contact ON contacts (contact_id);

-- last_seq is the per-chat message counter. SQLite has one writer at a time (the store sends in
-- a BEGIN IMMEDIATE transaction on its single writer connection), so seq has no gaps and no
-- duplicates without row locks. pair_key ("<low id>:<high id>") makes private chats unique.
CREATE TABLE chats (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT    NOT NULL,
    title            TEXT    NULL,
    pair_key         TEXT    NULL,
    created_by       INTEGER NOT NULL,
    created_at       TEXT    NOT NULL,
    last_seq         INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    last_message_id  INTEGER NULL,
    last_activity_at TEXT    NOT NULL
) STRICT;
CREATE UNIQUE INDEX uq_chats_pair ON chats (pair_key);

CREATE TABLE chat_members (
    chat_id       INTEGER NOT NULL,
    user_id       INTEGER NOT NULL,
    role          TEXT    NOT NULL,
    joined_at     TEXT    NOT NULL,
    last_read_seq INTEGER NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0),
    pinned        INTEGER NOT NULL DEFAULT 0,
    archived      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (chat_id, user_id),
    CONSTRAINT fk_members_chat FOREIGN KEY (chat_id) REFERENCES chats (id),
    CONSTRAINT fk_members_user FOREIGN KEY (user_id) REFERENCES users (id)
) STRICT;
CREATE INDEX ix_members_user ON chat_members (user_id, chat_id);

-- uq_messages_idem makes a retried send (same sender, chat and client_msg_id) find the first one.
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id       INTEGER NOT NULL,
    seq           INTEGER NOT NULL CHECK (seq > 0),
    sender_id     INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    body          TEXT    NULL,
    attachment_id INTEGER NULL,
    reply_to_id   INTEGER NULL,
    client_msg_id BLOB    NOT NULL, -- byte-exact: ids differing only in case are distinct
    created_at    TEXT    NOT NULL,
    CONSTRAINT fk_messages_chat FOREIGN KEY (chat_id) REFERENCES chats (id),
    CONSTRAINT fk_messages_sender FOREIGN KEY (sender_id) REFERENCES users (id)
) STRICT;
CREATE UNIQUE INDEX uq_messages_chat_seq ON messages (chat_id, seq);
CREATE UNIQUE INDEX uq_messages_idem ON messages (chat_id, sender_id, client_msg_id);
