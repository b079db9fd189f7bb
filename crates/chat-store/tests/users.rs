//! Users, contacts and presence, on both backends (`common::on_both_backends!`).

#[macro_use]
mod common;

use chat_proto::time::now_millis;
use chat_store::{Store, StoreError};
use common::user;

on_both_backends!(
    users_register_log_in_and_search,
    contacts_and_presence_audience,
    presence_changes_at_once_each_get_their_own_audience,
);

async fn users_register_log_in_and_search(store: &Store) {
    store.ping().await.expect("ping");
    let before = now_millis();
    let alice = store
        .create_user("alice", Some("alice@example.com"), "h1")
        .await
        .expect("create alice");
    assert_eq!(alice.username, "alice");
    let taken = store.create_user("alice", None, "h2").await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    // Usernames are unique regardless of case on both backends.
    let taken = store.create_user("ALICE", None, "h2").await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let alina = user(store, "alina").await;
    user(store, "a_b").await;
    user(store, "bob").await;

    let credentials = store
        .credentials("alice")
        .await
        .expect("credentials")
        .expect("alice exists");
    assert_eq!(credentials.user.id, alice.id);
    assert_eq!(credentials.password_hash, "h1");
    assert!(store.credentials("nobody").await.expect("lookup").is_none());

    let me = store.me(alice.id).await.expect("me");
    assert_eq!(me.email.as_deref(), Some("alice@example.com"));
    assert!(me.created_at >= before && me.created_at <= now_millis());
    assert_eq!(
        me.created_at.timestamp_subsec_nanos() % 1_000_000,
        0,
        "milliseconds"
    );
    assert!(matches!(
        store.me(9_999_999).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.me(u64::MAX).await,
        Err(StoreError::NotFound)
    ));

    let found: Vec<_> = store
        .search_users("al", 10)
        .await
        .expect("search")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(found, ["alice", "alina"]);
    let limited = store.search_users("al", 1).await.expect("search");
    assert_eq!(limited.len(), 1);
    // `_` is a literal, not a wildcard.
    let found: Vec<_> = store
        .search_users("a_", 10)
        .await
        .expect("search")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(found, ["a_b"]);
    assert!(
        store
            .search_users("%", 10)
            .await
            .expect("search")
            .is_empty()
    );

    assert!(store.user_exists(alina).await.expect("exists"));
    assert!(!store.user_exists(9_999_999).await.expect("exists"));
    assert!(!store.user_exists(u64::MAX).await.expect("exists"));
}

async fn contacts_and_presence_audience(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let erin = user(store, "erin").await;

    store.add_contact(alice, carol).await.expect("add");
    store.add_contact(alice, bob).await.expect("add");
    store
        .add_contact(alice, bob)
        .await
        .expect("adding twice is fine");
    assert!(matches!(
        store.add_contact(alice, 9_999_999).await,
        Err(StoreError::NotFound)
    ));
    let seen = store.mark_seen(bob).await.expect("mark seen").last_seen;
    let contacts = store.contacts(alice).await.expect("contacts");
    let names: Vec<_> = contacts.iter().map(|(u, _)| u.username.as_str()).collect();
    assert_eq!(names, ["bob", "carol"]);
    assert_eq!(contacts[0].1, Some(seen));
    assert_eq!(contacts[1].1, None);

    store.add_contact(dave, alice).await.expect("add");
    store
        .get_or_create_private(alice, erin)
        .await
        .expect("chat");
    let mut audience = store.mark_seen(alice).await.expect("mark seen").audience;
    audience.sort_unstable();
    assert_eq!(audience, [bob, carol, dave, erin]);

    store.remove_contact(alice, carol).await.expect("remove");
    store
        .remove_contact(alice, carol)
        .await
        .expect("removing twice is fine");
    let contacts = store.contacts(alice).await.expect("contacts");
    assert_eq!(contacts.len(), 1);
}

/// Many users coming online together (one batch on MySQL): each answer carries that user's own
/// audience and the time stored for that user.
async fn presence_changes_at_once_each_get_their_own_audience(store: &Store) {
    const USERS: usize = 40;
    let mut ids = Vec::new();
    for n in 0..USERS {
        ids.push(user(store, &format!("ring{n}")).await);
    }
    // Each user has the next as a contact, and every fourth shares a private chat with the one
    // two ahead: user n's audience is n-1 and n+1, plus n+2 and n-2 where a chat joins them.
    for n in 0..USERS {
        store
            .add_contact(ids[n], ids[(n + 1) % USERS])
            .await
            .expect("add");
        if n.is_multiple_of(4) {
            store
                .get_or_create_private(ids[n], ids[(n + 2) % USERS])
                .await
                .expect("chat");
        }
    }
    let expected = |n: usize| {
        let mut audience = vec![ids[(n + USERS - 1) % USERS], ids[(n + 1) % USERS]];
        if n.is_multiple_of(4) {
            audience.push(ids[(n + 2) % USERS]);
        }
        if n % 4 == 2 {
            audience.push(ids[(n + USERS - 2) % USERS]);
        }
        audience.sort_unstable();
        audience
    };

    // Every user twice (online, then offline), all at once.
    let changes: Vec<_> = (0..2 * USERS)
        .map(|i| {
            let store = store.clone();
            let user_id = ids[i % USERS];
            tokio::spawn(async move { (i % USERS, store.mark_seen(user_id).await) })
        })
        .collect();
    let mut last_seen = vec![None; USERS];
    for change in changes {
        let (n, seen) = change.await.expect("task");
        let mut seen = seen.expect("mark seen");
        seen.audience.sort_unstable();
        assert_eq!(seen.audience, expected(n), "audience of ring{n}");
        last_seen[n] = last_seen[n].max(Some(seen.last_seen));
    }
    for n in 0..USERS {
        let contacts = store
            .contacts(ids[(n + USERS - 1) % USERS])
            .await
            .expect("contacts");
        assert_eq!(contacts.len(), 1);
        assert_eq!(
            contacts[0].1, last_seen[n],
            "the last time stored for ring{n}"
        );
    }
}
