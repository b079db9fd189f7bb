//! A database migrated with a migration's text as it first shipped still starts after that text
//! was reworded in comments (`revisions` in the crate), and one migrated with any other text
//! still fails, as sqlx intends.

mod common;

use chat_store::{Store, StoreError};
use common::{Cleanup, TestStore};
use sqlx::Connection;

/// The SHA-384 recorded for SQLite migration 1 and MySQL migration 3 before their header
/// comments were reworded (the same values as `src/revisions.rs`, written out again here so that
/// a change there is a visible change here).
const SQLITE_1_SHIPPED: &str = "55bc986acc6be70595fe7dcf4a50e7b2652f7baa43baa1b53491ffaab89f051b07ffb43ab00fd5c3a61c9adfef794b07";
const MYSQL_3_SHIPPED: &str = "65e1ad4f8d01d7b7a962c39670736ce4b8d09ff3901c6c6a3213dabe8d9a0b30550ec60535851162d74832f92da6e3c8";

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A closure that sets migration `$version`'s recorded checksum (when given) and reads it back,
/// on a fresh `$conn` to `$url`.
macro_rules! recorded_checksum {
    ($conn:ty, $url:expr, $version:expr) => {
        |set: Option<Vec<u8>>| {
            let url = $url.clone();
            async move {
                let mut conn = <$conn>::connect(&url).await.expect("connect");
                if let Some(set) = set {
                    sqlx::query("UPDATE _sqlx_migrations SET checksum = ? WHERE version = ?")
                        .bind(set)
                        .bind($version)
                        .execute(&mut conn)
                        .await
                        .expect("set the recorded checksum");
                }
                let current: Vec<u8> =
                    sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = ?")
                        .bind($version)
                        .fetch_one(&mut conn)
                        .await
                        .expect("read it back");
                conn.close().await.expect("close");
                current
            }
        }
    };
}

/// What both backends are held to: the shipped checksum recorded, migrating starts and records
/// the current one; a foreign one recorded, migrating is refused.
async fn shipped_moves_and_foreign_is_refused<F, Fut>(url: &str, shipped: &str, checksum: F)
where
    F: Fn(Option<Vec<u8>>) -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    let current = checksum(None).await;
    assert_ne!(current, bytes(shipped), "the file was reworded");
    checksum(Some(bytes(shipped))).await;
    let store = Store::connect_lazy(url, 2).expect("url");
    store
        .migrate()
        .await
        .expect("a database migrated with the shipped text starts");
    store.close().await;
    assert_eq!(
        checksum(None).await,
        current,
        "the record moved to the current text"
    );

    checksum(Some(vec![7; 48])).await;
    let store = Store::connect_lazy(url, 2).expect("url");
    let refused = store.migrate().await;
    assert!(
        matches!(refused, Err(StoreError::Migration(_))),
        "a foreign checksum is refused: {refused:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_migrated_with_the_shipped_text_starts_and_a_foreign_text_does_not() {
    let db = TestStore::sqlite().await;
    let Cleanup::Dir(dir) = &db.cleanup else {
        unreachable!("a sqlite store")
    };
    let url = format!("sqlite://{}", dir.join("data").join("chat.db").display());
    db.store.close().await;
    let checksum = recorded_checksum!(sqlx::SqliteConnection, url, 1_i64);
    shipped_moves_and_foreign_is_refused(&url, SQLITE_1_SHIPPED, checksum).await;
    db.finish().await;
}

#[tokio::test]
async fn mysql_migrated_with_the_shipped_text_starts_and_a_foreign_text_does_not() {
    let db = TestStore::mysql().await;
    let Cleanup::MySql { admin_url, name } = &db.cleanup else {
        unreachable!("a mysql store")
    };
    let url = format!("{admin_url}/{name}");
    let checksum = recorded_checksum!(sqlx::MySqlConnection, url, 3_i64);
    shipped_moves_and_foreign_is_refused(&url, MYSQL_3_SHIPPED, checksum).await;
    db.finish().await;
}

/// Replicas that start together on a fresh database migrate it once between them: every one of
/// them starts. (MariaDB answers the `GET_LOCK(name, -1)` that sqlx's migrator takes with NULL at
/// once, so without a lock of the store's own they raced, and the loser found a migration
/// "partially applied".)
#[tokio::test]
async fn replicas_migrating_a_fresh_database_together_all_start() {
    for round in 0..3 {
        let name = format!("chat_store_race_{}_{round}", std::process::id());
        let (mut admin, url) = common::fresh_mysql_database(&name).await;
        let replicas: Vec<Store> = (0..3)
            .map(|_| Store::connect_lazy(&url, 2).expect("mysql url"))
            .collect();
        let (a, b, c) = tokio::join!(
            replicas[0].migrate(),
            replicas[1].migrate(),
            replicas[2].migrate()
        );
        let results = [a, b, c];
        for replica in &replicas {
            replica.close().await;
        }
        sqlx::query(&format!("DROP DATABASE `{name}`"))
            .execute(&mut admin)
            .await
            .expect("drop the test database");
        for (i, result) in results.into_iter().enumerate() {
            assert!(result.is_ok(), "round {round}, replica {i}: {result:?}");
        }
    }
}
