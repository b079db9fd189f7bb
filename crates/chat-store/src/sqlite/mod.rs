//! The SQLite backend of [`crate::Store`], for the embedded single-process mode: the same
//! contract (`crate::backend`) and semantics as the MySQL backend, with migrations in
//! `migrations-sqlite/`. The queries both databases share run here through [`Dialect`]; what is
//! SQLite's own is the send path (`messages`) and presence (`presence`).
//!
//! How it keeps the MySQL guarantees with one database file:
//!
//! - Writes are serialized: every write goes through `writer`, a pool of exactly one connection,
//!   and multi-statement writes run in `BEGIN IMMEDIATE` transactions (which take SQLite's write
//!   lock up front, so a transaction never fails halfway upgrading from read to write when some
//!   other process holds the file). That one writer is what makes `seq` gap-free and
//!   duplicate-free without `SELECT ... FOR UPDATE`, and read watermarks monotonic.
//! - Reads use `reader`, a pool of several connections. In WAL mode readers never block the writer
//!   and see every committed write, so a read after a write sees it as on MySQL.
//! - A send holds a per-chat lock (an in-process mutex, standing in for MySQL's `GET_LOCK`) from
//!   before its transaction until its publish is done, so a chat's events leave in seq order. It
//!   is taken before the writer, never while holding it, so the two cannot deadlock.
//! - Timestamps are taken from the process clock under the writer (one process, one clock), stored
//!   as `YYYY-MM-DD HH:MM:SS.mmm` UTC text, always with three fraction digits, so comparing the
//!   text compares the times.
//! - SQLite integers are signed 64-bit: ids and counters are bound as `i64` and read as `u64`
//!   (`crate::dialect`).

mod messages;
mod presence;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chat_proto::Id;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Pool, Sqlite};

use crate::backend::{Backend, ChatLock};
use crate::dialect::{Dialect, UniqueKey};
use crate::messages::{Announce, NewMessage, SendOutcome};
use crate::users::Seen;
use crate::{Result, StoreError};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-sqlite");

/// How many per-chat send locks there are; chats share them by `chat_id % SEND_LOCKS`. Sharing
/// only makes two chats' publishes wait for each other now and then, and keeps the memory fixed.
const SEND_LOCKS: u64 = 64;

/// How long SQLite itself waits for a lock held by another connection (e.g. a checkpoint or a
/// second process on the same file) before answering SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a write waits for the one writer connection. Writes queue there rather than on
/// row locks, so this is the SQLite counterpart of MySQL's lock waits, and as generous.
const WRITER_WAIT: Duration = Duration::from_secs(10);

/// Whether `Store::connect_lazy` should open this URL with SQLite.
pub(crate) fn is_sqlite_url(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// The SQLite database: one writer connection, a few readers, the per-chat send locks.
#[derive(Debug)]
pub(crate) struct SqliteBackend {
    writer: SqlitePool,
    reader: SqlitePool,
    send_locks: Box<[tokio::sync::Mutex<()>]>,
}

impl SqliteBackend {
    /// Records the current checksum of each migration revised in comments only
    /// (`crate::revisions`) where the shipped one is recorded.
    async fn move_revised_checksums(&self) -> Result<()> {
        let migrated: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.writer)
        .await?;
        if migrated == 0 {
            return Ok(());
        }
        for (version, shipped, current) in
            crate::revisions::checksum_moves(&MIGRATOR, crate::revisions::SQLITE)
        {
            sqlx::query(
                "UPDATE _sqlx_migrations SET checksum = ? WHERE version = ? AND checksum = ?",
            )
            .bind(current)
            .bind(version)
            .bind(shipped)
            .execute(&self.writer)
            .await?;
        }
        Ok(())
    }

    /// Opens the pools lazily; creates the database file's directory now (SQLite creates the file
    /// but not its directory).
    pub(crate) fn connect_lazy(url: &str, max_connections: u32) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // With WAL, NORMAL loses at most the last commits on a power cut, never consistency.
            .synchronous(SqliteSynchronous::Normal);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(WRITER_WAIT)
            .idle_timeout(None)
            .connect_lazy_with(options.clone());
        let reader = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        Ok(Self {
            writer,
            reader,
            send_locks: (0..SEND_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    /// The send lock of a chat.
    fn send_lock(&self, chat_id: u64) -> &tokio::sync::Mutex<()> {
        let slot = usize::try_from(chat_id % SEND_LOCKS).unwrap_or(0);
        &self.send_locks[slot % self.send_locks.len()]
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        self.move_revised_checksums().await?;
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    async fn mark_seen(&self, user_id: Id) -> Result<Seen> {
        SqliteBackend::mark_seen(self, user_id).await
    }

    async fn send_message(&self, new: NewMessage<'_>, announce: Announce) -> Result<SendOutcome> {
        SqliteBackend::send_message(self, new, announce).await
    }

    async fn lock_chat(&self, chat_id: Id) -> Result<Box<dyn ChatLock + '_>> {
        Ok(Box::new(SqliteChatLock {
            _held: self.chat_lock(chat_id).await?,
        }))
    }
}

impl Dialect for SqliteBackend {
    type Db = Sqlite;

    fn reader(&self) -> &Pool<Sqlite> {
        &self.reader
    }

    fn writer(&self) -> &Pool<Sqlite> {
        &self.writer
    }

    /// Takes the write lock up front (see the module's doc).
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const INSERT_IGNORE: &'static str = "INSERT OR IGNORE";
    /// SQLite's LIKE has no escape character unless told (and is ASCII case-insensitive, as
    /// MySQL's collation is).
    const LIKE_ESCAPE: &'static str = " ESCAPE '\\'";
    const UPSERT_PUSH_TOKEN: &'static str = "INSERT INTO push_tokens \
        (user_id, token, platform, updated_at) VALUES (?, ?, ?, ?) \
        ON CONFLICT (user_id, token) DO UPDATE \
        SET platform = excluded.platform, updated_at = excluded.updated_at";
    const CLOCK: Option<&'static str> = None;

    fn concat(parts: &[&str]) -> String {
        parts.join(" || ")
    }

    fn inserted_id(done: &SqliteQueryResult) -> Result<Id> {
        u64::try_from(done.last_insert_rowid())
            .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn is_duplicate(err: &sqlx::Error, key: UniqueKey) -> bool {
        let columns = match key {
            UniqueKey::Username => "users.username",
            UniqueKey::ChatPair => "chats.pair_key",
        };
        is_unique_violation(err, columns)
    }
}

/// A chat's send lock: the in-process mutex of its slot, released when dropped.
struct SqliteChatLock<'a> {
    _held: tokio::sync::MutexGuard<'a, ()>,
}

#[async_trait]
impl ChatLock for SqliteChatLock<'_> {
    async fn release(self: Box<Self>) {}
}

/// Whether the error is a UNIQUE violation on exactly these columns (SQLite names the columns,
/// e.g. `users.username`, not the index).
fn is_unique_violation(err: &sqlx::Error, columns: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                && db
                    .message()
                    .strip_prefix("UNIQUE constraint failed: ")
                    .is_some_and(|failed| failed == columns)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
