//! What the store's integration tests share: a [`Store`] on a fresh database of either backend,
//! and `on_both_backends!`, which runs one test body on each, so that the two are held to one
//! behaviour.
//!
//! SQLite tests use a fresh file under the system temp directory (in a `data/` directory that
//! does not exist yet, so opening must create it), removed afterwards. MySQL tests create a
//! database named `chat_store_test_<pid>_<n>` on `CHAT_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`) and drop it afterwards.

// Each test file uses a part of this module.
#![allow(dead_code, unused_macros)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use chat_proto::{Id, MessageKind};
use chat_store::{NewMessage, Store};
use sqlx::Connection;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A store on a fresh database, and what to remove when the test is done.
pub struct TestStore {
    pub store: Store,
    pub cleanup: Cleanup,
}

pub enum Cleanup {
    Dir(PathBuf),
    MySql { admin_url: String, name: String },
}

impl TestStore {
    pub async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "chat-store-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dir.join("data").join("chat.db");
        let store = Store::connect_lazy(&format!("sqlite://{}", path.display()), 4)
            .expect("sqlite url parses");
        store.migrate().await.expect("sqlite migrations");
        assert!(
            path.exists(),
            "the database file is created with its directory"
        );
        Self {
            store,
            cleanup: Cleanup::Dir(dir),
        }
    }

    pub async fn mysql() -> Self {
        let name = format!(
            "chat_store_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (admin, url) = fresh_mysql_database(&name).await;
        let _ = admin.close().await;
        let store = Store::connect_lazy(&url, 8).expect("mysql url");
        store.migrate().await.expect("mysql migrations");
        Self {
            store,
            cleanup: Cleanup::MySql {
                admin_url: mysql_admin_url(),
                name,
            },
        }
    }

    pub async fn finish(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::Dir(dir) => std::fs::remove_dir_all(&dir).expect("remove the test files"),
            Cleanup::MySql { admin_url, name } => {
                let mut admin = sqlx::MySqlConnection::connect(&admin_url)
                    .await
                    .expect("MariaDB is reachable");
                sqlx::query(&format!("DROP DATABASE `{name}`"))
                    .execute(&mut admin)
                    .await
                    .expect("drop the test database");
                let _ = admin.close().await;
            }
        }
    }
}

/// The test MariaDB's URL with no database in it (`CHAT_TEST_MYSQL_URL`).
pub fn mysql_admin_url() -> String {
    std::env::var("CHAT_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// An empty database `name` on the test MariaDB (one a crashed run left is dropped first): an
/// admin connection, to drop it with when done, and the database's URL.
pub async fn fresh_mysql_database(name: &str) -> (sqlx::MySqlConnection, String) {
    let admin_url = mysql_admin_url();
    let mut admin = sqlx::MySqlConnection::connect(&admin_url)
        .await
        .expect("MariaDB is reachable (set CHAT_TEST_MYSQL_URL)");
    for sql in [
        format!("DROP DATABASE IF EXISTS `{name}`"),
        format!("CREATE DATABASE `{name}`"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
    }
    (admin, format!("{admin_url}/{name}"))
}

/// Runs each listed body once on SQLite and once on MySQL.
macro_rules! on_both_backends {
    ($($body:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    let db = $crate::common::TestStore::sqlite().await;
                    assert_eq!(db.store.backend(), "sqlite");
                    super::$body(&db.store).await;
                    db.finish().await;
                }
            )*
        }
        mod on_mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    let db = $crate::common::TestStore::mysql().await;
                    assert_eq!(db.store.backend(), "mysql");
                    super::$body(&db.store).await;
                    db.finish().await;
                }
            )*
        }
    };
}

pub async fn user(store: &Store, name: &str) -> Id {
    store
        .create_user(name, None, "hash")
        .await
        .expect("create user")
        .id
}

pub fn text<'a>(
    chat_id: Id,
    sender_id: Id,
    text: &'a str,
    client_msg_id: &'a str,
) -> NewMessage<'a> {
    NewMessage {
        chat_id,
        sender_id,
        kind: MessageKind::Text,
        text: Some(text),
        attachment: None,
        reply_to_id: None,
        client_msg_id,
    }
}

pub async fn send(store: &Store, new: NewMessage<'_>) -> chat_store::SendOutcome {
    store
        .send_message(new, |_| async {})
        .await
        .expect("send a message")
}
