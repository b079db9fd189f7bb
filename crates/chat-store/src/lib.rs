//! The only crate that speaks SQL: repositories for users, contacts, chats, members and messages,
//! and the embedded migrations, on one of two backends behind the same [`Store`] API:
//!
//! - MySQL/MariaDB (the served deployment): the SQL lives in the `impl Store` blocks of the
//!   topic modules (`users`, `chats`, `messages`, ...), migrations in `migrations/`.
//! - SQLite (the embedded single-process "zero setup" mode, issue 8): the [`sqlite`] module, one
//!   submodule per topic, migrations in `migrations-sqlite/`.
//!
//! The backend is chosen by the URL given to [`Store::connect_lazy`] (`sqlite:` or MySQL).
//!
//! Design: enum dispatch, not a trait. Each public method opens with [`mysql_or_sqlite!`], which
//! hands back the MySQL pool or returns the SQLite twin's answer (a method of the same name and
//! signature on `sqlite::Sqlite`). A trait would add a fourth copy of all ~35 signatures
//! (declaration, two impls, and the inherent methods callers use), could not be a trait object
//! because of `send_message`'s generic closure, and would buy no check the compiler does not make
//! already: a missing or differently typed SQLite twin fails to build here. What does not depend
//! on the backend (row to model conversion, chat assembly, validation, sync slicing) lives once in
//! the topic modules and both backends call it.
//!
//! Every function takes the acting user where access matters and answers `NotFound` for chats the
//! user is not a member of, so callers cannot leak a chat's existence by mistake.

// Defined before the modules so that all of them can use it.
/// In a `Store` method: the MySQL pool, or return what the SQLite backend's method of the same
/// name answers for the same arguments.
macro_rules! mysql_or_sqlite {
    ($self:ident, $method:ident($($arg:expr),* $(,)?)) => {
        match &$self.backend {
            $crate::Backend::MySql(pool) => pool,
            $crate::Backend::Sqlite(db) => return db.$method($($arg),*).await,
        }
    };
}

mod attachments;
mod chats;
mod contacts;
mod error;
mod messages;
mod padded;
mod push;
mod seen_batch;
mod send_batch;
mod sqlite;
mod sync;
mod users;

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

pub use attachments::AttachmentRecord;
pub use chats::{ChatUpdate, NewGroup};
pub use error::StoreError;
pub use messages::{MessagePage, NewMessage, ReadOutcome, SendOutcome};
pub use push::PushContext;
pub use sync::{SyncEvent, SyncSlice};
pub use users::{Credentials, Seen};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A handle on the database; cheap to clone (it is a pool, or two for SQLite).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    /// MySQL: the writers that coalesce sends, started by the first send (on its runtime).
    sends: std::sync::Arc<std::sync::OnceLock<send_batch::SendBatcher>>,
    /// How many writers `sends` starts.
    send_writers: usize,
    /// MySQL: the writer that coalesces presence changes, started by the first one.
    seen: std::sync::Arc<std::sync::OnceLock<seen_batch::SeenBatcher>>,
}

/// An idle connection is pinged before it is handed out only past this: sqlx pings every one by
/// default, one round trip more on every query, and a send batch is a handful of round trips in a
/// row on a busy machine (docs/performance.md). A connection that broke within the last second
/// fails its query instead, as one that breaks after the ping always could.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Pings `conn` if it has been idle for `PING_AFTER_IDLE`; the pool's check before handing a
/// connection out, and a send writer's before using the one it keeps.
pub(crate) async fn ping_if_idle(
    conn: &mut sqlx::MySqlConnection,
    idle_for: Duration,
) -> sqlx::Result<bool> {
    if idle_for >= PING_AFTER_IDLE {
        sqlx::Connection::ping(conn).await?;
    }
    Ok(true)
}

#[derive(Clone, Debug)]
enum Backend {
    MySql(MySqlPool),
    Sqlite(sqlite::Sqlite),
}

impl Store {
    /// Connects lazily: the pool opens connections on first use, so a service can start and report
    /// not-ready while the database is still coming up.
    ///
    /// A `sqlite:` URL (e.g. `sqlite://data/chat.db`, relative to the working directory, or
    /// `sqlite:///var/lib/chat/chat.db`) selects SQLite: the file and its directory are created if
    /// missing. Anything else is a MySQL URL.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self> {
        if sqlite::is_sqlite_url(url) {
            return Ok(Self {
                backend: Backend::Sqlite(sqlite::Sqlite::connect_lazy(url, max_connections)?),
                sends: Default::default(),
                send_writers: send_batch::DEFAULT_WRITERS,
                seen: Default::default(),
            });
        }
        let options: MySqlConnectOptions = url.parse().map_err(StoreError::from)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(Duration::from_secs(300))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta.idle_for)))
            .connect_lazy_with(options.timezone(Some(String::from("+00:00"))));
        Ok(Self {
            backend: Backend::MySql(pool),
            sends: Default::default(),
            send_writers: send_batch::DEFAULT_WRITERS,
            seen: Default::default(),
        })
    }

    /// Sets how many writer tasks coalesce sends on MySQL, each with
    /// its own share of the chats and one connection at a time (at least one; default 1). Fewer
    /// writers make larger batches, so fewer statements per message; more overlap more
    /// transactions. Takes effect if no message was sent through this store yet.
    pub fn with_send_writers(mut self, writers: usize) -> Self {
        self.send_writers = writers.max(1);
        self
    }

    /// Which backend this store runs on, `"mysql"` or `"sqlite"` (for logs).
    pub fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::MySql(_) => "mysql",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Runs the embedded migrations of the backend (sqlx takes a database lock, so several
    /// replicas starting together apply them once).
    pub async fn migrate(&self) -> Result<()> {
        let pool = mysql_or_sqlite!(self, migrate());
        MIGRATOR
            .run(pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// A cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        let pool = mysql_or_sqlite!(self, ping());
        sqlx::query("SELECT 1").execute(pool).await?;
        Ok(())
    }

    /// Closes the pool once the send writers have stored what they hold and given their
    /// connections back; sends after this are refused.
    pub async fn close(&self) {
        match &self.backend {
            Backend::MySql(pool) => {
                if let Some(sends) = self.sends.get() {
                    sends.close().await;
                }
                pool.close().await;
            }
            Backend::Sqlite(db) => db.close().await,
        }
    }
}
