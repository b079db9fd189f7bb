//! Store errors, split by what the caller should tell its client.

use tokio::sync::mpsc::error::TrySendError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule refused the write (e.g. the username is taken).
    #[error("{0}")]
    Conflict(&'static str),
    /// The request names something that breaks a data rule the store checks.
    #[error("{0}")]
    Invalid(String),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A lock could not be had in time; retrying later can succeed.
    #[error("{0}")]
    Busy(&'static str),
    /// The database cannot be reached or timed out; retrying later can succeed.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// COMMIT was sent and no answer came back (the connection broke): the write may or may not
    /// have been applied. Retrying is safe where the write is idempotent.
    #[error("database unavailable, the commit's outcome is unknown: {0}")]
    CommitUnknown(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => Self::Unavailable(err),
            // Lock wait timeout, deadlock, server shutting down, too many connections: transient.
            sqlx::Error::Database(_)
                if matches!(
                    mysql_error_number(&err),
                    Some(1205 | 1213 | 1053 | 1040 | 2006 | 2013)
                ) =>
            {
                Self::Unavailable(err)
            }
            // SQLite: the database file is locked past the busy timeout, or cannot be opened or
            // read (missing directory, disk I/O): transient as far as a client can tell.
            sqlx::Error::Database(db) if sqlite_transient(db.as_ref()) => Self::Unavailable(err),
            _ => Self::Database(err),
        }
    }
}

impl StoreError {
    /// An equal error for another caller (one failure of a shared transaction fails each of its
    /// sends): the same variant, the database error carried as its message.
    pub(crate) fn duplicate(&self) -> Self {
        let carried = |err: &sqlx::Error| sqlx::Error::Protocol(err.to_string());
        match self {
            Self::NotFound => Self::NotFound,
            Self::Conflict(why) => Self::Conflict(why),
            Self::Invalid(why) => Self::Invalid(why.clone()),
            Self::Forbidden(why) => Self::Forbidden(why),
            Self::Busy(why) => Self::Busy(why),
            Self::Unavailable(err) => Self::Unavailable(carried(err)),
            Self::CommitUnknown(err) => Self::CommitUnknown(carried(err)),
            Self::Migration(why) => Self::Migration(why.clone()),
            Self::Database(err) => Self::Database(carried(err)),
        }
    }

    /// The error of a COMMIT: a broken connection leaves its outcome unknown; anything else (a
    /// deadlock, a refused write) is the server's answer and classified as usual.
    pub(crate) fn at_commit(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => {
                Self::CommitUnknown(err)
            }
            other => other.into(),
        }
    }
}

/// The error a writer task's bounded queue gives when it cannot take another request: the
/// caller should retry (the queue is full) or go elsewhere (the writer has stopped).
pub(crate) fn queue_refusal<T>(err: TrySendError<T>, full: &'static str) -> StoreError {
    match err {
        TrySendError::Full(_) => StoreError::Busy(full),
        TrySendError::Closed(_) => StoreError::Busy("the store is shutting down"),
    }
}

/// MySQL's error number, when the server answered with an error.
fn mysql_error_number(err: &sqlx::Error) -> Option<u16> {
    match err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|e| e.number()),
        _ => None,
    }
}

/// Whether the server rolled the statement back as a deadlock's victim (MySQL error 1213).
pub(crate) fn is_deadlock(err: &sqlx::Error) -> bool {
    mysql_error_number(err) == Some(1213)
}

/// Whether the error is a duplicate-key violation of the named unique index.
pub(crate) fn is_duplicate_of(err: &sqlx::Error, index: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            mysql_error_number(err) == Some(1062) && db.message().contains(index)
        }
        _ => false,
    }
}

/// SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR and SQLITE_CANTOPEN, with their extended codes (the
/// primary code is the low byte).
fn sqlite_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::error::DatabaseError as _;
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 14))
}
