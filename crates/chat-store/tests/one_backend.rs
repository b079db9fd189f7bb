//! What only one backend has: SQLite's file, and MySQL's writer tasks (their queue, the presence
//! batch's deadlock retry, and their end when the store closes).

mod common;

use chat_proto::Id;
use chat_store::{Store, StoreError};
use common::{Cleanup, TestStore, send, text, user};
use sqlx::Connection;

/// SQLite only: the data is in the file, and a second store on it sees it.
#[tokio::test]
async fn sqlite_data_survives_reopening() {
    let db = TestStore::sqlite().await;
    let alice = user(&db.store, "alice").await;
    let Cleanup::Dir(dir) = &db.cleanup else {
        unreachable!("a sqlite store")
    };
    let url = format!("sqlite://{}", dir.join("data").join("chat.db").display());
    db.store.close().await;
    let reopened = Store::connect_lazy(&url, 2).expect("url");
    reopened.migrate().await.expect("migrations are idempotent");
    assert_eq!(reopened.me(alice).await.expect("me").username, "alice");
    reopened.close().await;
    db.finish().await;
}

/// MySQL only (SQLite sends one at a time, with no queue): when a chat's writer cannot keep up,
/// sends beyond its queue are refused at once with `Busy`, and stored never; the ones it accepted
/// are all stored, gap-free, once it can go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_beyond_a_full_writer_queue_are_refused_not_stored() {
    // More than the writer's queue and one batch can hold (send_batch: 1,024 for the one writer
    // of the default, and 256).
    const SENDS: usize = 1800;
    let db = TestStore::mysql().await;
    let store = &db.store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");

    // Hold the chat's send lock, so that its writer stops at its first batch.
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .in_send_order(chat.id, || async move {
                    let _ = held_tx.send(());
                    let _ = release_rx.await;
                })
                .await
        })
    };
    held_rx.await.expect("the lock is held");

    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..SENDS {
        let (store, done_tx) = (store.clone(), done_tx.clone());
        tokio::spawn(async move {
            let client_id = format!("m{n}");
            let outcome = store
                .send_message(text(chat.id, alice, "hi", &client_id), |_| async {})
                .await;
            let _ = done_tx.send((client_id, outcome));
        });
    }
    drop(done_tx);

    // While the lock is held nothing can be stored, so whatever answers now was refused.
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), done_rx.recv())
        .await
        .expect("a send beyond the queue is answered while the writer waits")
        .expect("an answer");
    assert!(
        matches!(first.1, Err(StoreError::Busy(_))),
        "the first answer is a refusal, got {:?}",
        first.1.map(|o| o.message.seq)
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    release_tx.send(()).expect("the holder waits");
    holder.await.expect("holder").expect("lock taken");

    let mut stored = Vec::new();
    let mut refused = vec![first.0];
    while let Some((client_id, outcome)) = done_rx.recv().await {
        match outcome {
            Ok(outcome) => {
                assert!(outcome.created);
                stored.push(outcome.message.seq);
            }
            Err(StoreError::Busy(_)) => refused.push(client_id),
            Err(e) => panic!("a send failed otherwise: {e}"),
        }
    }
    assert_eq!(stored.len() + refused.len(), SENDS);
    assert!(
        stored.len() > 1 && refused.len() > 1,
        "some sends are stored ({}) and some refused ({})",
        stored.len(),
        refused.len()
    );
    assert!(
        stored.len() <= 1024 + 256,
        "no more than a queue and a batch are accepted, got {}",
        stored.len()
    );
    stored.sort_unstable();
    assert_eq!(stored, (1..=stored.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        store.chat(alice, chat.id).await.expect("chat").last_seq,
        stored.len() as u64
    );
    for client_id in &refused {
        let found = store
            .message_by_client_id(chat.id, alice, client_id)
            .await
            .expect("look up");
        assert!(found.is_none(), "refused send {client_id} was not stored");
    }
    db.finish().await;
}

/// A presence batch whose UPDATE the server rolls back as a deadlock's victim runs again: a
/// transaction holding shared locks on `users` rows (as a send batch's foreign key checks do)
/// meets the batch's exclusive locks in a cycle, and both changes still get their answer.
#[tokio::test(flavor = "current_thread")]
async fn a_presence_batch_chosen_as_deadlock_victim_runs_again() {
    let db = TestStore::mysql().await;
    let store = &db.store;
    let Cleanup::MySql { admin_url, name } = &db.cleanup else {
        unreachable!("a MySQL test store")
    };
    let ids: Vec<Id> = {
        let mut ids = Vec::new();
        for n in 0..7 {
            ids.push(user(store, &format!("victim{n}")).await);
        }
        ids
    };
    let (low, high) = (ids[0], ids[1]);

    // The other transaction: heavier than the batch (five rows changed), holding `high` shared.
    let mut other = sqlx::MySqlConnection::connect(&format!("{admin_url}/{name}"))
        .await
        .expect("a second connection");
    sqlx::query("BEGIN")
        .execute(&mut other)
        .await
        .expect("begin");
    // One row at a time, by key: on a table this small an IN list is a full scan, which would
    // lock every row, `low` included, and leave no cycle to close.
    for &id in &ids[2..] {
        sqlx::query("UPDATE users SET email = 'x' WHERE id = ?")
            .bind(id)
            .execute(&mut other)
            .await
            .expect("a row changed");
    }
    sqlx::query("SELECT id FROM users WHERE id = ? LOCK IN SHARE MODE")
        .bind(high)
        .execute(&mut other)
        .await
        .expect("high held shared");

    // One batch of both users (on this single-threaded runtime the writer runs only after both
    // are queued): its UPDATE takes `low` and waits for `high`.
    let batch = {
        let store = store.clone();
        tokio::spawn(async move { tokio::join!(store.mark_seen(low), store.mark_seen(high)) })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Waiting for `low` closes the cycle; the server rolls back the lighter UPDATE at once.
    sqlx::query("SELECT id FROM users WHERE id = ? LOCK IN SHARE MODE")
        .bind(low)
        .execute(&mut other)
        .await
        .expect("low held shared: the batch was the victim, not this transaction");
    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("commit");

    let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(10), batch)
        .await
        .expect("the batch answers")
        .expect("task");
    let first = first.expect("low's change stored after the deadlock");
    let second = second.expect("high's change stored after the deadlock");
    assert_eq!(first.last_seen, second.last_seen, "one batch, one stamp");
    let stored: Option<chrono::NaiveDateTime> =
        sqlx::query_scalar("SELECT last_seen FROM users WHERE id = ?")
            .bind(high)
            .fetch_one(&mut other)
            .await
            .expect("read back");
    assert_eq!(stored.map(|t| t.and_utc()), Some(first.last_seen));
    let _ = other.close().await;
    db.finish().await;
}

/// MySQL: a send writer keeps its connection between batches, so closing the store stops the
/// writers before the pool: the pool's close waits for every connection handed out, and it
/// hung in CI when the writer's was among them. Without that a writer even went on storing
/// sends after `close` on the connection it kept; now they are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_store_stops_its_send_writers() {
    let db = TestStore::mysql().await;
    let store = &db.store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    send(store, text(chat.id, alice, "before", "c1")).await;
    // Past the writer's grace period: it has released its locks and sits idle, holding its
    // connection.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    tokio::time::timeout(std::time::Duration::from_secs(10), store.close())
        .await
        .expect("close returns while a send writer is idle");
    let late = store
        .send_message(text(chat.id, alice, "after", "c2"), |_| async {})
        .await;
    assert!(
        matches!(late, Err(StoreError::Busy(_))),
        "a send after close: {late:?}"
    );
    db.finish().await;
}
