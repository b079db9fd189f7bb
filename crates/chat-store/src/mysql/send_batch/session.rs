//! A send writer's database session and its state: whether a transaction is open and whether
//! the last batch's named locks are still held, so that the statements that only end one batch
//! (ROLLBACK, releasing the locks) ride with the next batch's first statement.

use std::collections::HashSet;
use std::time::Instant;

use chat_proto::Id;
use sqlx::pool::PoolConnection;
use sqlx::{Executor, MySql, MySqlConnection, MySqlPool, Row};

use super::statements::{BatchError, RetryCause};
use crate::StoreError;
use crate::mysql::chat_lock::{CHAT_LOCK_WAIT_SECS, chat_lock_name};
use crate::mysql::ping_if_idle;

/// A writer's own database session, kept from batch to batch. A batch is a handful of round trips
/// in a row, and on a busy machine each one waits for both processes to be scheduled
/// (docs/performance.md), so the session saves the ones that do no work: the pool's pings on
/// acquire and release, and a statement of its own for BEGIN, for COMMIT and for releasing the
/// chats' named locks. Those ride in the text protocol with the statement next to them.
pub struct WriterSession {
    pool: MySqlPool,
    conn: Option<PoolConnection<MySql>>,
    /// A transaction is open: it is rolled back before the locks go.
    in_transaction: bool,
    /// Named locks of the last batch are held: the next statement releases them first.
    pub(super) holds_locks: bool,
    last_used: Instant,
}

impl WriterSession {
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            conn: None,
            in_transaction: false,
            holds_locks: false,
            last_used: Instant::now(),
        }
    }

    /// Whether the session keeps a connection (none before its first batch or after a failure).
    #[cfg(feature = "test-internals")]
    pub fn has_connection(&self) -> bool {
        self.conn.is_some()
    }

    /// The session's connection: a new one from the pool after a failure, and one idle for a
    /// while is pinged first, as the pool does (`PING_AFTER_IDLE`).
    pub async fn connection(&mut self) -> std::result::Result<&mut MySqlConnection, sqlx::Error> {
        if let Some(conn) = self.conn.as_mut()
            && ping_if_idle(conn, self.last_used.elapsed()).await.is_err()
        {
            self.discard();
        }
        self.last_used = Instant::now();
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// Releases the previous batch's locks, takes the named locks of `chats` (ascending) and
    /// begins the batch's transaction, in one round trip; returns the chats granted.
    pub async fn begin(&mut self, chats: &[Id]) -> std::result::Result<HashSet<Id>, sqlx::Error> {
        // A batch whose every send was refused stored nothing and left its transaction open.
        let rollback = if self.in_transaction {
            "ROLLBACK; "
        } else {
            ""
        };
        let release = if self.holds_locks {
            "DO RELEASE_ALL_LOCKS(); "
        } else {
            ""
        };
        let locks = chats
            .iter()
            .map(|&chat| {
                // Ids are numbers, so the names need no quoting beyond the literal's quotes.
                format!(
                    "GET_LOCK(LEFT(CONCAT(DATABASE(), '{}'), 64), {})",
                    chat_lock_name(chat),
                    CHAT_LOCK_WAIT_SECS
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("{rollback}{release}SELECT {locks}; BEGIN");
        let conn = self.connection().await?;
        // All of the statements' results are read here, not left for the next command.
        let rows = conn.fetch_all(sql.as_str()).await;
        // Whatever happened, the old locks are gone or the connection will be.
        self.holds_locks = true;
        let rows = rows?;
        self.in_transaction = true;
        let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
        let mut granted = HashSet::new();
        for (index, &chat) in chats.iter().enumerate() {
            if row.try_get::<Option<i64>, _>(index)? == Some(1) {
                granted.insert(chat);
            }
        }
        Ok(granted)
    }

    /// Runs `statement` and COMMIT in one round trip. A database error leaves the transaction
    /// open (the server stops at the failing statement); any other leaves the commit unknown.
    pub async fn commit_with(&mut self, statement: &str) -> std::result::Result<(), BatchError> {
        let sql = format!("{statement}; COMMIT");
        let conn = self.connection().await?;
        match conn.execute(sql.as_str()).await {
            Ok(_) => {
                self.in_transaction = false;
                Ok(())
            }
            Err(e @ sqlx::Error::Database(_)) => Err(BatchError::Retry(RetryCause::Refused(e))),
            Err(e) => Err(BatchError::Failed(StoreError::at_commit(e))),
        }
    }

    /// Rolls back the open transaction and keeps the named locks; if that fails, closes the
    /// connection, which frees them too.
    pub(super) async fn rollback(&mut self) -> std::result::Result<(), sqlx::Error> {
        let Some(conn) = self.conn.as_mut().filter(|_| self.in_transaction) else {
            return Ok(());
        };
        match conn.execute("ROLLBACK").await {
            Ok(_) => {
                self.in_transaction = false;
                Ok(())
            }
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    /// Ends an open transaction and releases the named locks; if that fails, closes the
    /// connection instead, which does both.
    pub async fn release(&mut self) {
        let sql = match (self.in_transaction, self.holds_locks) {
            (false, false) => return,
            (true, true) => "ROLLBACK; DO RELEASE_ALL_LOCKS()",
            (true, false) => "ROLLBACK",
            (false, true) => "DO RELEASE_ALL_LOCKS()",
        };
        let released = match self.conn.as_mut() {
            Some(conn) => conn.execute(sql).await.is_ok(),
            None => true,
        };
        if released {
            self.in_transaction = false;
            self.holds_locks = false;
        } else {
            self.discard();
        }
    }

    /// Closes the connection, which ends its transaction and frees its locks on the server; the
    /// next batch takes a new one.
    pub(super) fn discard(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
        self.in_transaction = false;
        self.holds_locks = false;
    }
}

impl Drop for WriterSession {
    /// A session dropped mid-batch (the runtime shutting down) must not hand its transaction or
    /// locks back to the pool.
    fn drop(&mut self) {
        if self.in_transaction || self.holds_locks {
            self.discard();
        }
    }
}
