//! The only crate that speaks SQL: MySQL/MariaDB repositories for users, contacts, chats, members
//! and messages, and the embedded migrations.
//!
//! Every function takes the acting user where access matters and answers `NotFound` for chats the
//! user is not a member of, so callers cannot leak a chat's existence by mistake.

mod attachments;
mod chats;
mod contacts;
mod error;
mod messages;
mod push;
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
pub use users::Credentials;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A handle on the database; cheap to clone (it is a pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: MySqlPool,
}

impl Store {
    /// Connects lazily: the pool opens connections on first use, so a service can start and report
    /// not-ready while the database is still coming up.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self> {
        let options: MySqlConnectOptions = url.parse().map_err(StoreError::from)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options.timezone(Some(String::from("+00:00"))));
        Ok(Self { pool })
    }

    /// Runs the embedded migrations (sqlx takes a database lock, so several replicas starting
    /// together apply them once).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// A cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
