//! A fresh MariaDB database per test, dropped when the [`TestDb`] goes away.

use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, MySqlConnection};

/// The server-level URL (no database) used to create and drop test databases.
pub fn mysql_admin_url() -> String {
    std::env::var("CHAT_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A database named `chat_test_<pid>_<random>` that exists as long as this value does.
///
/// Dropping it drops the database; the drop runs on its own thread with its own small runtime, so
/// it works from inside a tokio test (and after the test's runtime is gone).
#[derive(Debug)]
pub struct TestDb {
    name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates the database. Panics with a clear message if MariaDB is unreachable.
    pub async fn create() -> TestDb {
        match Self::try_create().await {
            Ok(db) => db,
            Err(e) => panic!(
                "cannot create a test database on {} ({e:#}). Start MariaDB (or set \
                 CHAT_TEST_MYSQL_URL); the integration tests never skip.",
                mysql_admin_url()
            ),
        }
    }

    /// Creates the database, or says why it could not.
    pub async fn try_create() -> anyhow::Result<TestDb> {
        let admin_url = mysql_admin_url();
        let mut conn = tokio::time::timeout(
            Duration::from_secs(10),
            MySqlConnection::connect(&admin_url),
        )
        .await
        .context("timed out connecting to MariaDB")?
        .context("connecting to MariaDB")?;
        drop_stale_databases(&mut conn).await;
        let name = format!(
            "chat_test_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        sqlx::query(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
        let _ = conn.close().await;
        Ok(TestDb { name, admin_url })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `mysql://.../<name>`, for `DATABASE_URL`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.admin_url.trim_end_matches('/'), self.name)
    }

    /// Opens a direct connection to the database (for checks the API cannot make).
    pub async fn connect(&self) -> anyhow::Result<MySqlConnection> {
        MySqlConnection::connect(&self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("chat-testkit: cannot build a runtime to drop {name}: {e}");
                    return;
                }
            };
            runtime.block_on(async {
                let result = async {
                    let mut conn = MySqlConnection::connect(&url).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                        .execute(&mut conn)
                        .await?;
                    conn.close().await
                };
                if let Err(e) = tokio::time::timeout(Duration::from_secs(30), result)
                    .await
                    .map_err(|_| "timed out".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                {
                    eprintln!("chat-testkit: cannot drop test database {name}: {e}");
                }
            });
        });
        let _ = dropper.join();
    }
}

/// Drops `chat_test_<pid>_*` databases whose process is gone (a test run that was killed).
async fn drop_stale_databases(conn: &mut MySqlConnection) {
    let names: Vec<(String,)> = match sqlx::query_as("SHOW DATABASES LIKE 'chat\\_test\\_%'")
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => rows,
        Err(_) => return,
    };
    for (name,) in names {
        let Some(pid) = name
            .strip_prefix("chat_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                .execute(&mut *conn)
                .await;
        }
    }
}
