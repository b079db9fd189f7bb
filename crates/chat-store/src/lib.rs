//! The only crate that speaks SQL: repositories for users, contacts, chats, members and messages,
//! and the embedded migrations, on one of two backends behind the same [`Store`] API:
//!
//! - MySQL/MariaDB (the served deployment): `mysql/`, migrations in `migrations/`.
//! - SQLite (the embedded single-process "zero setup" mode): `sqlite/`, migrations in
//!   `migrations-sqlite/`.
//!
//! The backend is chosen by the URL given to [`Store::connect_lazy`] (`sqlite:` or MySQL).
//!
//! Components:
//!
//! - [`Store`] (here and in the topic modules `users`, `contacts`, `chats`, `messages`,
//!   `receipts`, `sync`, `attachments`, `push`): the public API and its types. Each topic module also holds its rows
//!   (`sqlx::FromRow`), its SQL, written once for both databases, and what does not depend on the
//!   database (validation, chat assembly, sync slicing).
//! - `backend`: the contract a database implements, which `Store` holds as a trait object.
//! - `dialect`: what the shared SQL needs to know about a database, and how ids and times are
//!   bound and read on both.
//! - `mysql` and `sqlite`: one folder per backend, with what each does its own way (connecting,
//!   migrations, sending, presence).
//! - `error`: [`StoreError`], split by what the caller should tell its client.
//! - `revisions`: migrations reworded in comments after they shipped, so that databases migrated
//!   with the old text still start.
//! - `padded`: `IN` lists padded to a few lengths, so that statements stay cached.
//!
//! Every function takes the acting user where access matters and answers `NotFound` for chats the
//! user is not a member of, so callers cannot leak a chat's existence by mistake.

mod attachments;
mod backend;
mod chats;
mod contacts;
mod dialect;
mod error;
mod messages;
mod mysql;
mod padded;
mod push;
mod receipts;
mod revisions;
mod sqlite;
mod sync;
mod users;

use std::sync::Arc;

use backend::Backend;

pub use attachments::AttachmentRecord;
pub use chats::{ChatUpdate, NewGroup};
pub use error::StoreError;
pub use messages::{MessagePage, NewMessage, ReadOutcome, SendOutcome};
pub use push::PushContext;
pub use receipts::UpdateOutcome;
pub use sync::{SyncEvent, SyncSlice};
pub use users::{Credentials, Seen};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The MySQL send writer's internals, for this crate's own tests of them on MariaDB
/// (`tests/mysql_send_batch.rs`), which cannot be unit tests: `make unit` runs those without
/// services. Only this crate's dev-dependency on itself enables the feature.
#[cfg(feature = "test-internals")]
#[doc(hidden)]
pub mod test_internals {
    pub use crate::mysql::chat_lock::chat_lock_name;
    pub use crate::mysql::send_batch::session::WriterSession;
    pub use crate::mysql::send_batch::statements::{
        BatchError, InsertFacts, RetryCause, insert_messages, write_batch,
    };
    pub use crate::mysql::send_batch::{QueuedMessage, run_batch_of};
}

/// A handle on the database; cheap to clone (the backend and its pools are shared).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Connects lazily: the pool opens connections on first use, so a service can start and report
    /// not-ready while the database is still coming up.
    ///
    /// A `sqlite:` URL (e.g. `sqlite://data/chat.db`, relative to the working directory, or
    /// `sqlite:///var/lib/chat/chat.db`) selects SQLite: the file and its directory are created if
    /// missing. Anything else is a MySQL URL.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self> {
        let backend: Arc<dyn Backend> = if sqlite::is_sqlite_url(url) {
            Arc::new(sqlite::SqliteBackend::connect_lazy(url, max_connections)?)
        } else {
            Arc::new(mysql::MySqlBackend::connect_lazy(url, max_connections)?)
        };
        Ok(Self { backend })
    }

    /// Sets how many writer tasks coalesce sends on MySQL, each with
    /// its own share of the chats and one connection at a time (at least one; default 1). Fewer
    /// writers make larger batches, so fewer statements per message; more overlap more
    /// transactions. Takes effect if no message was sent through this store yet.
    pub fn with_send_writers(self, writers: usize) -> Self {
        self.backend.set_send_writers(writers.max(1));
        self
    }

    /// Which backend this store runs on, `"mysql"` or `"sqlite"` (for logs).
    pub fn backend(&self) -> &'static str {
        self.backend.name()
    }

    /// Runs the embedded migrations of the backend (sqlx takes a database lock, so several
    /// replicas starting together apply them once).
    pub async fn migrate(&self) -> Result<()> {
        self.backend.migrate().await
    }

    /// A cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        self.backend.ping().await
    }

    /// Closes the pool once the send writers have stored what they hold and given their
    /// connections back; sends after this are refused.
    pub async fn close(&self) {
        self.backend.close().await
    }
}
