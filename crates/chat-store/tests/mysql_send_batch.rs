//! The MySQL send writer's statements and session (`chat_store::test_internals`), on a MariaDB
//! database of each test's own (on `CHAT_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`,
//! dropped afterwards): the two ways `insert_messages` learns its ids (MariaDB's default lock
//! mode gives consecutive ids, so only the session numbering by threes here covers the read-back
//! that MySQL 8's mode 2 takes), a member list the server cuts short, and the session's
//! statements that ride together in one round trip.

mod common;

use chat_proto::{Chat, Id, MessageKind};
use chat_store::test_internals::{
    BatchError, InsertFacts, QueuedMessage, RetryCause, WriterSession, chat_lock_name,
    insert_messages, run_batch_of, write_batch,
};
use chat_store::{NewMessage, Store};
use sqlx::{Connection, MySqlConnection, MySqlPool};

/// A text message from `sender_id` in `chat_id`, as queued for a writer.
fn queued(chat_id: Id, sender_id: Id, text: &str, client_msg_id: &str) -> QueuedMessage {
    QueuedMessage::new(&NewMessage {
        chat_id,
        sender_id,
        kind: MessageKind::Text,
        text: Some(text),
        attachment: None,
        reply_to_id: None,
        client_msg_id,
    })
}

/// A migrated database with alice and bob in one private chat.
struct Fixture {
    admin: MySqlConnection,
    name: String,
    url: String,
    chat: Chat,
    alice: Id,
    chat_peer: Id,
}

impl Fixture {
    async fn new(tag: &str) -> Self {
        let name = format!("chat_store_{tag}_{}", std::process::id());
        let (mut admin, url) = common::fresh_mysql_database(&name).await;
        let store = Store::connect_lazy(&url, 2).expect("mysql url");
        store.migrate().await.expect("migrations");
        // Ids of seven digits, so that a member list of two is longer than the shortest
        // `group_concat_max_len` (4).
        let sql = format!("ALTER TABLE `{name}`.users AUTO_INCREMENT = 1000000");
        sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
        let alice = store.create_user("alice", None, "h").await.expect("alice");
        let bob = store.create_user("bob", None, "h").await.expect("bob");
        let (chat, _) = store
            .get_or_create_private(alice.id, bob.id)
            .await
            .expect("chat");
        store.close().await;
        Self {
            admin,
            name,
            url,
            chat,
            alice: alice.id,
            chat_peer: bob.id,
        }
    }

    /// Whether another session could take the chat's named lock now.
    async fn lock_is_free(&mut self, chat: Id) -> bool {
        let name = format!("{}{}", self.name, chat_lock_name(chat));
        let free: Option<i64> = sqlx::query_scalar("SELECT IS_FREE_LOCK(LEFT(?, 64))")
            .bind(name)
            .fetch_one(&mut self.admin)
            .await
            .expect("IS_FREE_LOCK");
        free == Some(1)
    }

    async fn last_seq(&mut self) -> u64 {
        let sql = format!("SELECT last_seq FROM `{}`.chats WHERE id = ?", self.name);
        sqlx::query_scalar(&sql)
            .bind(self.chat.id)
            .fetch_one(&mut self.admin)
            .await
            .expect("the chat's counter")
    }

    async fn drop_database(mut self) {
        sqlx::query(&format!("DROP DATABASE `{}`", self.name))
            .execute(&mut self.admin)
            .await
            .expect("drop the test database");
    }
}

#[tokio::test]
async fn inserted_ids_match_the_stored_rows_either_way() {
    let fixture = Fixture::new("ids").await;
    let (chat, alice) = (fixture.chat.id, fixture.alice);
    let mut conn = MySqlConnection::connect(&fixture.url)
        .await
        .expect("connect");
    sqlx::query("SET SESSION auto_increment_increment = 3")
        .execute(&mut conn)
        .await
        .expect("set the increment");
    let messages: Vec<QueuedMessage> = (0..6)
        .map(|i| queued(chat, alice, &format!("m{i}"), &format!("c{i}")))
        .collect();
    let now = sqlx::query_scalar("SELECT NOW(3)")
        .fetch_one(&mut conn)
        .await
        .expect("now");
    for (half, id_step) in [(0, None), (1, Some(3))] {
        let rows: Vec<(&QueuedMessage, u64)> = messages[half * 3..half * 3 + 3]
            .iter()
            .zip(1 + half as u64 * 3..)
            .collect();
        let mut tx = conn.begin().await.expect("begin");
        let facts = InsertFacts { now, id_step };
        let ids = insert_messages(&mut tx, &rows, &facts)
            .await
            .unwrap_or_else(|_| panic!("insert with id_step {id_step:?}"));
        tx.commit().await.expect("commit");
        let seqs: Vec<u64> = rows.iter().map(|(_, seq)| *seq).collect();
        let mut stored = Vec::new();
        for seq in &seqs {
            let id: u64 =
                sqlx::query_scalar("SELECT id FROM messages WHERE chat_id = ? AND seq = ?")
                    .bind(chat)
                    .bind(seq)
                    .fetch_one(&mut conn)
                    .await
                    .expect("stored row");
            stored.push(id);
        }
        assert_eq!(ids, stored, "ids with id_step {id_step:?}");
        assert_eq!(ids[1] - ids[0], 3, "the session numbers by threes");
    }
    fixture.drop_database().await;
}

/// The statement that fails before COMMIT leaves the transaction open on a usable
/// connection; `release` rolls it back and frees the lock.
#[tokio::test]
async fn a_statement_failing_before_commit_is_rolled_back_by_release() {
    let mut fixture = Fixture::new("rollback").await;
    let chat = fixture.chat.id;
    let pool = MySqlPool::connect(&fixture.url).await.expect("pool");
    let mut session = WriterSession::new(pool.clone());

    let granted = session.begin(&[chat]).await.expect("begin");
    assert!(granted.contains(&chat), "the chat's lock is granted");
    assert!(
        !fixture.lock_is_free(chat).await,
        "the session holds the lock"
    );
    let conn = session.connection().await.expect("connection");
    sqlx::query("UPDATE chats SET last_seq = 99 WHERE id = ?")
        .bind(chat)
        .execute(&mut *conn)
        .await
        .expect("update in the transaction");
    let failed = session.commit_with("UPDATE no_such_table SET x = 1").await;
    assert!(
        matches!(failed, Err(BatchError::Retry(RetryCause::Refused(_)))),
        "a database error is retryable"
    );
    session.release().await;
    assert!(session.has_connection(), "the connection was kept");
    assert_eq!(fixture.last_seq().await, 0, "the update was rolled back");
    assert!(fixture.lock_is_free(chat).await, "the lock was released");

    // The same session goes on: this time the transaction commits.
    session.begin(&[chat]).await.expect("begin again");
    let sql = format!("UPDATE chats SET last_seq = 7 WHERE id = {chat}");
    assert!(session.commit_with(&sql).await.is_ok(), "commit");
    assert_eq!(fixture.last_seq().await, 7, "the update was committed");
    session.release().await;
    drop(session);
    pool.close().await;
    fixture.drop_database().await;
}

/// A member list the server cut short is read again row by row; whole, it is used as is.
/// Either way the send's outcome names every member.
#[tokio::test]
async fn a_cut_member_list_is_read_again() {
    let mut fixture = Fixture::new("members").await;
    let (chat, alice) = (fixture.chat.id, fixture.alice);
    let pool = MySqlPool::connect(&fixture.url).await.expect("pool");
    let mut session = WriterSession::new(pool.clone());
    let mut expected = vec![alice, fixture.chat_peer];
    expected.sort_unstable();

    for (limit, client_msg_id) in [("4", "c1"), ("DEFAULT", "c2")] {
        let message = queued(chat, alice, "hi", client_msg_id);
        let conn = session.connection().await.expect("connection");
        sqlx::query(&format!("SET SESSION group_concat_max_len = {limit}"))
            .execute(&mut *conn)
            .await
            .expect("the list's limit");
        session.begin(&[chat]).await.expect("begin");
        let stored = match write_batch(&mut session, &[&message]).await {
            Ok(outcomes) => outcomes
                .into_iter()
                .next()
                .expect("one outcome")
                .expect("stored"),
            Err(_) => panic!("the batch is stored with group_concat_max_len = {limit}"),
        };
        let mut members = stored.member_ids;
        members.sort_unstable();
        assert_eq!(members, expected, "group_concat_max_len = {limit}");
    }
    assert_eq!(fixture.last_seq().await, 2, "both messages are stored");
    session.release().await;
    drop(session);
    pool.close().await;
    fixture.drop_database().await;
}

/// After a batch the locks stay with the session until its next batch begins (in the same
/// round trip) or the writer goes idle.
#[tokio::test]
async fn the_next_batch_releases_the_previous_batchs_locks() {
    let mut fixture = Fixture::new("locks").await;
    let chat = fixture.chat.id;
    let other = chat + 1_000_000;
    let pool = MySqlPool::connect(&fixture.url).await.expect("pool");
    let mut session = WriterSession::new(pool.clone());

    session.begin(&[chat]).await.expect("first batch");
    session
        .commit_with("DO 0")
        .await
        .map_err(|_| ())
        .expect("commit");
    assert!(!fixture.lock_is_free(chat).await, "held after the commit");
    session.begin(&[other]).await.expect("second batch");
    assert!(
        fixture.lock_is_free(chat).await,
        "released by the next batch"
    );
    assert!(
        !fixture.lock_is_free(other).await,
        "the next batch's lock is held"
    );
    session
        .commit_with("DO 0")
        .await
        .map_err(|_| ())
        .expect("commit");
    session.release().await;
    assert!(fixture.lock_is_free(other).await, "released when idle");
    drop(session);
    pool.close().await;
    fixture.drop_database().await;
}

/// The session's own count of a status counter (`Com_commit`, `Com_rollback`).
async fn session_count(session: &mut WriterSession, name: &str) -> u64 {
    let conn = session
        .connection()
        .await
        .expect("the session's connection");
    let (_, value): (String, String) =
        sqlx::query_as(&format!("SHOW SESSION STATUS LIKE '{name}'"))
            .fetch_one(conn)
            .await
            .expect(name);
    value.parse().expect("a count")
}

/// A client that lost its gateway resends what it had sent: a batch holding one such resend
/// among new sends answers the resend with the first message and still stores the new ones
/// together, in one commit, rather than one commit each.
#[tokio::test]
async fn a_resend_in_a_batch_leaves_the_rest_together() {
    let fixture = Fixture::new("resend").await;
    let (chat, alice, bob) = (fixture.chat.id, fixture.alice, fixture.chat_peer);
    let pool = MySqlPool::connect(&fixture.url).await.expect("pool");
    let mut session = WriterSession::new(pool.clone());

    let first = run_batch_of(&mut session, vec![queued(chat, alice, "hi", "sent-before")]).await;
    let first = first
        .into_iter()
        .next()
        .expect("one answer")
        .expect("stored");
    assert!(first.created);

    let mut batch: Vec<QueuedMessage> = (0..20)
        .map(|i| queued(chat, bob, "new", &format!("new-{i}")))
        .collect();
    batch.insert(7, queued(chat, alice, "hi", "sent-before"));
    let commits = session_count(&mut session, "Com_commit").await;
    let outcomes = run_batch_of(&mut session, batch).await;
    let commits = session_count(&mut session, "Com_commit").await - commits;

    let outcomes: Vec<_> = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every send answered"))
        .collect();
    assert!(!outcomes[7].created, "the resend is a repeat");
    assert_eq!(
        outcomes[7].message, first.message,
        "answered with the first"
    );
    let mut seqs: Vec<u64> = outcomes
        .iter()
        .filter(|outcome| outcome.created)
        .map(|outcome| outcome.message.seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (2..=21).collect::<Vec<_>>(),
        "the new sends, gap-free"
    );
    assert_eq!(commits, 1, "the new sends were stored together");
    let mut fixture = fixture;
    assert_eq!(fixture.last_seq().await, 21);

    session.release().await;
    drop(session);
    pool.close().await;
    fixture.drop_database().await;
}
