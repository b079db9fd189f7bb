//! The MySQL/MariaDB backend of [`crate::Store`] (the served deployment), with migrations in
//! `migrations/`: one pool, its [`Dialect`], the writer tasks that coalesce sends (`send_batch`)
//! and presence changes (`seen_batch`), and the chats' named locks (`chat_lock`).

pub(crate) mod chat_lock;
mod seen_batch;
pub(crate) mod send_batch;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_proto::Id;
use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlQueryResult,
};
use sqlx::{MySql, Pool};

use self::chat_lock::MySqlChatLock;
use self::seen_batch::SeenBatcher;
use self::send_batch::SendBatcher;
use crate::backend::{Backend, ChatLock};
use crate::dialect::{Dialect, UniqueKey};
use crate::error::is_duplicate_of;
use crate::messages::{Announce, NewMessage, SendOutcome};
use crate::users::Seen;
use crate::{Result, StoreError};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The name of the lock replicas take turns with to migrate, per database (a lock name is at
/// most 64 characters), as SQL.
const MIGRATE_LOCK: &str = "LEFT(CONCAT('chat_migrate:', DATABASE()), 64)";
/// How long a replica waits for another one's migrations.
const MIGRATE_LOCK_WAIT: Duration = Duration::from_secs(600);

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

/// The MySQL database: the pool, and the writers started by the first send or presence change
/// (on its runtime).
#[derive(Debug)]
pub(crate) struct MySqlBackend {
    pool: MySqlPool,
    /// The writers that coalesce sends.
    sends: OnceLock<SendBatcher>,
    /// How many writers `sends` starts.
    send_writers: AtomicUsize,
    /// The writer that coalesces presence changes.
    seen: OnceLock<SeenBatcher>,
}

impl MySqlBackend {
    /// Records the current checksum of each migration revised in comments only
    /// (`crate::revisions`) where the shipped one is recorded.
    async fn move_revised_checksums(conn: &mut MySqlConnection) -> Result<()> {
        let migrated: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'",
        )
        .fetch_one(&mut *conn)
        .await?;
        if migrated == 0 {
            return Ok(());
        }
        for (version, shipped, current) in
            crate::revisions::checksum_moves(&MIGRATOR, crate::revisions::MYSQL)
        {
            sqlx::query(
                "UPDATE _sqlx_migrations SET checksum = ? WHERE version = ? AND checksum = ?",
            )
            .bind(current)
            .bind(version)
            .bind(shipped)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    pub(crate) fn connect_lazy(url: &str, max_connections: u32) -> Result<Self> {
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
            pool,
            sends: OnceLock::new(),
            send_writers: AtomicUsize::new(send_batch::DEFAULT_WRITERS),
            seen: OnceLock::new(),
        })
    }
}

#[async_trait]
impl Backend for MySqlBackend {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn set_send_writers(&self, writers: usize) {
        self.send_writers.store(writers, Ordering::Relaxed);
    }

    /// Migrates under a named lock of the store's own, on one connection: replicas that start
    /// together on a fresh database take turns. sqlx's migrator takes `GET_LOCK(name, -1)`, which
    /// MariaDB answers with NULL at once (its timeout must not be negative), so on MariaDB they
    /// raced and all but one failed their first try.
    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let locked: Option<i64> =
            sqlx::query_scalar(&format!("SELECT GET_LOCK({MIGRATE_LOCK}, ?)"))
                .bind(MIGRATE_LOCK_WAIT.as_secs())
                .fetch_one(&mut *conn)
                .await?;
        if locked != Some(1) {
            return Err(StoreError::Migration(format!(
                "another replica held the migration lock for {} s",
                MIGRATE_LOCK_WAIT.as_secs()
            )));
        }
        let migrated = async {
            Self::move_revised_checksums(&mut conn).await?;
            MIGRATOR
                .run_direct(&mut *conn)
                .await
                .map_err(|e| StoreError::Migration(e.to_string()))
        }
        .await;
        // Should this fail, the lock goes with the connection when the pool closes it.
        let _ = sqlx::query(&format!("SELECT RELEASE_LOCK({MIGRATE_LOCK})"))
            .execute(&mut *conn)
            .await;
        migrated
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        if let Some(sends) = self.sends.get() {
            sends.close().await;
        }
        self.pool.close().await;
    }

    async fn mark_seen(&self, user_id: Id) -> Result<Seen> {
        self.seen
            .get_or_init(|| SeenBatcher::start(self.pool.clone()))
            .mark_seen(user_id)
            .await
    }

    async fn send_message(&self, new: NewMessage<'_>, announce: Announce) -> Result<SendOutcome> {
        // Concurrent sends share transactions (send_batch).
        self.sends
            .get_or_init(|| {
                SendBatcher::start(self.pool.clone(), self.send_writers.load(Ordering::Relaxed))
            })
            .send(&new, announce)
            .await
    }

    async fn lock_chat(&self, chat_id: Id) -> Result<Box<dyn ChatLock + '_>> {
        Ok(Box::new(MySqlChatLock::take(&self.pool, chat_id).await?))
    }
}

impl Dialect for MySqlBackend {
    type Db = MySql;

    fn reader(&self) -> &Pool<MySql> {
        &self.pool
    }

    fn writer(&self) -> &Pool<MySql> {
        &self.pool
    }

    const BEGIN_WRITE: &'static str = "BEGIN";
    const INSERT_IGNORE: &'static str = "INSERT IGNORE";
    const LIKE_ESCAPE: &'static str = "";
    const UPSERT_PUSH_TOKEN: &'static str = "INSERT INTO push_tokens \
        (user_id, token, platform, updated_at) VALUES (?, ?, ?, ?) \
        ON DUPLICATE KEY UPDATE platform = VALUES(platform), updated_at = VALUES(updated_at)";
    const CLOCK: Option<&'static str> = Some("NOW(3)");

    fn concat(parts: &[&str]) -> String {
        format!("CONCAT({})", parts.join(", "))
    }

    fn inserted_id(done: &MySqlQueryResult) -> Result<Id> {
        Ok(done.last_insert_id())
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    fn is_duplicate(err: &sqlx::Error, key: UniqueKey) -> bool {
        let index = match key {
            UniqueKey::Username => "uq_users_username",
            UniqueKey::ChatPair => "uq_chats_pair",
        };
        is_duplicate_of(err, index)
    }
}
