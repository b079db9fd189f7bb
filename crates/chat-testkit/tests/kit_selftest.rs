//! Checks of the kit itself that need only MariaDB (no service binaries).

use chat_testkit::TestDb;
use sqlx::Connection;

#[tokio::test]
async fn test_db_is_created_and_dropped() {
    let db = TestDb::create().await;
    let name = db.name().to_string();
    assert!(
        name.starts_with(&format!("chat_test_{}_", std::process::id())),
        "{name}"
    );
    assert!(db.url().ends_with(&format!("/{name}")), "{}", db.url());
    let mut conn = db.connect().await.expect("connect to the test database");
    sqlx::query("CREATE TABLE t (x INT)")
        .execute(&mut conn)
        .await
        .expect("the database is usable");
    conn.close().await.expect("close");
    drop(db);

    let mut admin = sqlx::MySqlConnection::connect(&chat_testkit::mysql_admin_url())
        .await
        .expect("connect to MariaDB");
    let left: Vec<(String,)> = sqlx::query_as("SHOW DATABASES")
        .fetch_all(&mut admin)
        .await
        .expect("show databases");
    assert!(
        !left.iter().any(|(n,)| n == &name),
        "{name} still exists after drop"
    );
}
