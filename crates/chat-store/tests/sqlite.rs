//! Every public `Store` method on SQLite (the embedded mode, issue 8), and the same test bodies on
//! MySQL/MariaDB, so the two backends are held to one behaviour.
//!
//! SQLite tests use a fresh file under the system temp directory (in a `data/` directory that does
//! not exist yet, so opening must create it), removed afterwards. MySQL tests create a database
//! named `chat_store_test_<pid>_<n>` on `CHAT_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`) and drop it afterwards.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chat_proto::time::now_millis;
use chat_proto::{Attachment, ChatKind, Id, MemberRole, MessageKind};
use chat_store::{ChatUpdate, NewGroup, NewMessage, Store, StoreError, SyncEvent};
use sqlx::Connection;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A store on a fresh database, and what to remove when the test is done.
struct TestStore {
    store: Store,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    MySql { admin_url: String, name: String },
}

impl TestStore {
    async fn sqlite() -> Self {
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

    async fn mysql() -> Self {
        let admin_url = std::env::var("CHAT_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let name = format!(
            "chat_store_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::MySqlConnection::connect(&admin_url)
            .await
            .expect("MariaDB is reachable (set CHAT_TEST_MYSQL_URL)");
        sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
            .execute(&mut admin)
            .await
            .expect("drop a stale database");
        sqlx::query(&format!("CREATE DATABASE `{name}`"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let store = Store::connect_lazy(&format!("{admin_url}/{name}"), 8).expect("mysql url");
        store.migrate().await.expect("mysql migrations");
        Self {
            store,
            cleanup: Cleanup::MySql { admin_url, name },
        }
    }

    async fn finish(self) {
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

/// Runs each listed body once on SQLite and once on MySQL.
macro_rules! on_both_backends {
    ($($body:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    let db = super::TestStore::sqlite().await;
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
                    let db = super::TestStore::mysql().await;
                    assert_eq!(db.store.backend(), "mysql");
                    super::$body(&db.store).await;
                    db.finish().await;
                }
            )*
        }
    };
}

on_both_backends!(
    users_register_log_in_and_search,
    contacts_and_presence_audience,
    presence_changes_at_once_each_get_their_own_audience,
    private_chats_are_one_per_pair,
    groups_members_and_flags,
    chat_list_order_and_unread_counts,
    concurrent_sends_get_every_seq_once_in_publish_order,
    a_burst_of_sends_in_many_chats_is_stored_exactly,
    a_retried_send_returns_the_first_message,
    work_in_send_order_holds_off_sends,
    non_members_get_not_found,
    history_pages,
    read_watermarks_never_move_back,
    sync_returns_what_was_missed_in_order,
    attachments_and_who_may_read_them,
    push_tokens_move_between_users,
);

async fn user(store: &Store, name: &str) -> Id {
    store
        .create_user(name, None, "hash")
        .await
        .expect("create user")
        .id
}

fn text<'a>(chat_id: Id, sender_id: Id, text: &'a str, client_msg_id: &'a str) -> NewMessage<'a> {
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

async fn send(store: &Store, new: NewMessage<'_>) -> chat_store::SendOutcome {
    store
        .send_message(new, |_| async {})
        .await
        .expect("send a message")
}

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

async fn private_chats_are_one_per_pair(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    assert!(matches!(
        store.get_or_create_private(alice, alice).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.get_or_create_private(alice, 9_999_999).await,
        Err(StoreError::NotFound)
    ));
    let (chat, created) = store
        .get_or_create_private(alice, bob)
        .await
        .expect("create");
    assert!(created);
    assert_eq!(chat.kind, ChatKind::Private);
    assert_eq!(chat.members.len(), 2);
    assert_eq!(chat.last_seq, 0);
    assert!(chat.last_message.is_none());
    let (again, created) = store.get_or_create_private(bob, alice).await.expect("get");
    assert!(!created);
    assert_eq!(again.id, chat.id);

    // Racing creators still end with one chat.
    let carol = user(store, "carol").await;
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            let (me, peer) = if i % 2 == 0 {
                (alice, carol)
            } else {
                (carol, alice)
            };
            tokio::spawn(async move { store.get_or_create_private(me, peer).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for racer in racers {
        let (chat, new) = racer.await.expect("task").expect("get or create");
        ids.push(chat.id);
        created += usize::from(new);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one chat for the pair");
    assert_eq!(created, 1, "created once");

    let titled = store
        .update_chat(
            alice,
            chat.id,
            ChatUpdate {
                title: Some("x".into()),
                ..ChatUpdate::default()
            },
        )
        .await;
    assert!(matches!(titled, Err(StoreError::Invalid(_))));
    assert!(matches!(
        store.add_member(alice, chat.id, carol).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn groups_members_and_flags(store: &Store) {
    let owner = user(store, "owner").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let outsider = user(store, "outsider").await;
    assert!(matches!(
        store
            .create_group(
                owner,
                NewGroup {
                    title: "g",
                    member_ids: &[bob, 9_999_999],
                },
            )
            .await,
        Err(StoreError::NotFound)
    ));
    let group = store
        .create_group(
            owner,
            NewGroup {
                title: "team",
                member_ids: &[bob, carol, owner, bob],
            },
        )
        .await
        .expect("create group");
    assert_eq!(group.kind, ChatKind::Group);
    assert_eq!(group.title.as_deref(), Some("team"));
    let roles: Vec<_> = group.members.iter().map(|m| (m.user_id, m.role)).collect();
    assert_eq!(
        roles,
        [
            (owner, MemberRole::Owner),
            (bob, MemberRole::Member),
            (carol, MemberRole::Member)
        ]
    );

    let renamed = store
        .update_chat(
            bob,
            group.id,
            ChatUpdate {
                title: Some("renamed".into()),
                pinned: Some(true),
                archived: None,
            },
        )
        .await
        .expect("update");
    assert_eq!(renamed.title.as_deref(), Some("renamed"));
    assert!(renamed.pinned && !renamed.archived);
    let for_owner = store.chat(owner, group.id).await.expect("chat");
    assert_eq!(for_owner.title.as_deref(), Some("renamed"));
    assert!(!for_owner.pinned, "flags are per member");
    let archived = store
        .update_chat(
            bob,
            group.id,
            ChatUpdate {
                archived: Some(true),
                ..ChatUpdate::default()
            },
        )
        .await
        .expect("update");
    assert!(archived.pinned && archived.archived);

    // A new member starts with nothing unread.
    send(store, text(group.id, owner, "before dave", "c1")).await;
    store.add_member(bob, group.id, dave).await.expect("add");
    store.add_member(bob, group.id, dave).await.expect("twice");
    assert_eq!(
        store.chat(dave, group.id).await.expect("chat").unread_count,
        0
    );
    assert!(matches!(
        store.add_member(bob, group.id, 9_999_999).await,
        Err(StoreError::NotFound)
    ));
    let mut ids = store.member_ids(group.id).await.expect("ids");
    ids.sort_unstable();
    assert_eq!(ids, [owner, bob, carol, dave]);
    assert_eq!(
        store.members(carol, group.id).await.expect("members").len(),
        4
    );
    assert!(matches!(
        store.members(outsider, group.id).await,
        Err(StoreError::NotFound)
    ));
    store.require_member(dave, group.id).await.expect("member");
    assert!(matches!(
        store.require_member(outsider, group.id).await,
        Err(StoreError::NotFound)
    ));

    assert!(matches!(
        store.remove_member(bob, group.id, carol).await,
        Err(StoreError::Forbidden(_))
    ));
    store
        .remove_member(bob, group.id, bob)
        .await
        .expect("leave");
    assert!(matches!(
        store.chat(bob, group.id).await,
        Err(StoreError::NotFound)
    ));
    store
        .remove_member(owner, group.id, carol)
        .await
        .expect("remove");
    assert!(matches!(
        store.remove_member(owner, group.id, carol).await,
        Err(StoreError::NotFound)
    ));
    let mut ids = store.member_ids(group.id).await.expect("ids");
    ids.sort_unstable();
    assert_eq!(ids, [owner, dave]);
}

async fn chat_list_order_and_unread_counts(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let (with_bob, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let (with_carol, _) = store
        .get_or_create_private(alice, carol)
        .await
        .expect("chat");
    let group = store
        .create_group(
            alice,
            NewGroup {
                title: "g",
                member_ids: &[bob],
            },
        )
        .await
        .expect("group");

    send(store, text(with_bob.id, bob, "1", "b1")).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    send(store, text(with_carol.id, carol, "2", "c1")).await;
    send(store, text(with_carol.id, carol, "3", "c2")).await;
    let order: Vec<_> = store
        .chats_of(alice)
        .await
        .expect("list")
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(order, [with_carol.id, with_bob.id, group.id], "by activity");

    store
        .update_chat(
            alice,
            group.id,
            ChatUpdate {
                pinned: Some(true),
                ..ChatUpdate::default()
            },
        )
        .await
        .expect("pin");
    let list = store.chats_of(alice).await.expect("list");
    let order: Vec<_> = list.iter().map(|c| c.id).collect();
    assert_eq!(
        order,
        [group.id, with_carol.id, with_bob.id],
        "pinned first"
    );
    let carol_chat = &list[1];
    assert_eq!(carol_chat.unread_count, 2);
    assert_eq!(carol_chat.last_seq, 2);
    let last = carol_chat.last_message.as_ref().expect("last message");
    assert_eq!(last.text.as_deref(), Some("3"));
    assert_eq!(last.seq, 2);
    // The sender has read its own messages.
    assert_eq!(
        store
            .chat(carol, with_carol.id)
            .await
            .expect("chat")
            .unread_count,
        0
    );
    assert_eq!(store.chats_of(carol).await.expect("list").len(), 1);
}

async fn concurrent_sends_get_every_seq_once_in_publish_order(store: &Store) {
    let owner = user(store, "owner").await;
    let mut senders = vec![owner];
    for i in 0..4 {
        senders.push(user(store, &format!("sender{i}")).await);
    }
    let group = store
        .create_group(
            owner,
            NewGroup {
                title: "busy",
                member_ids: &senders,
            },
        )
        .await
        .expect("group");
    // Writes in other chats at the same time (a private chat per sender, sends and reads there):
    // on SQLite they contend for the one write lock and must wait, not fail.
    let mut side_chats = Vec::new();
    for &sender in &senders[1..] {
        side_chats.push((
            sender,
            store
                .get_or_create_private(owner, sender)
                .await
                .expect("chat")
                .0
                .id,
        ));
    }
    let side_tasks: Vec<_> = side_chats
        .into_iter()
        .map(|(sender, chat_id)| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let client_id = format!("side-{i}");
                    let sent = store
                        .send_message(text(chat_id, sender, "side", &client_id), |_| async {})
                        .await
                        .expect("a send in another chat");
                    assert_eq!(sent.message.seq, i + 1);
                    store
                        .mark_read(owner, chat_id, i + 1)
                        .await
                        .expect("a read in another chat");
                    store.mark_seen(sender).await.expect("mark seen");
                }
            })
        })
        .collect();
    let published = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(t, &sender)| {
            let store = store.clone();
            let published = published.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..10 {
                    let client_id = format!("t{t}-m{i}");
                    let published = published.clone();
                    let outcome = store
                        .send_message(text(group.id, sender, "hi", &client_id), |o| {
                            let seq = o.message.seq;
                            let members = o.member_ids.len();
                            async move {
                                // A slow publish: the next send in the chat must still wait.
                                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                                published.lock().expect("lock").push((seq, members));
                            }
                        })
                        .await
                        .expect("send");
                    assert!(outcome.created);
                    seqs.push(outcome.message.seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        let mine = task.await.expect("task");
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "a sender's seqs rise");
        seqs.extend(mine);
    }
    for task in side_tasks {
        task.await.expect("side task");
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
    let published = published.lock().expect("lock").clone();
    let order: Vec<u64> = published.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        order,
        (1..=50).collect::<Vec<u64>>(),
        "published in seq order"
    );
    assert!(published.iter().all(|(_, members)| *members == 5));
    let chat = store.chat(owner, group.id).await.expect("chat");
    assert_eq!(chat.last_seq, 50);
    let page = store
        .messages(owner, group.id, None, None, 100)
        .await
        .expect("history");
    let stored: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(stored, (1..=50).collect::<Vec<u64>>());
}

/// Sends that arrive together (on MySQL they share transactions): in several chats at once,
/// with replies, a refused sender, a refused reply and one idempotency key sent twice at the
/// same moment. Every answer must match what history, counters and watermarks hold.
async fn a_burst_of_sends_in_many_chats_is_stored_exactly(store: &Store) {
    let mut people = Vec::new();
    for i in 0..8 {
        people.push(user(store, &format!("burst{i}")).await);
    }
    let mallory = user(store, "mallory").await;
    let mut pairs = Vec::new();
    for pair in people.chunks(2) {
        let (chat, _) = store
            .get_or_create_private(pair[0], pair[1])
            .await
            .expect("pair chat");
        pairs.push((chat.id, pair.to_vec()));
    }
    let group = store
        .create_group(
            people[0],
            NewGroup {
                title: "burst",
                member_ids: &people,
            },
        )
        .await
        .expect("group");
    let first = send(store, text(group.id, people[0], "first", "g0")).await;

    // (chat, sender, client id, reply to)
    let mut planned: Vec<(Id, Id, String, Option<Id>)> = Vec::new();
    for (chat_id, members) in &pairs {
        for &member in members {
            for i in 0..3 {
                planned.push((*chat_id, member, format!("p{member}-{i}"), None));
            }
        }
    }
    for &member in &people {
        planned.push((
            group.id,
            member,
            format!("g{member}-a"),
            Some(first.message.id),
        ));
        planned.push((group.id, member, format!("g{member}-b"), None));
    }
    let twice = (pairs[0].0, pairs[0].1[0], "same-moment".to_string(), None);
    planned.push(twice.clone());
    planned.push(twice);
    let refused = [
        (group.id, mallory, "not-a-member".to_string(), None),
        (
            pairs[1].0,
            pairs[1].1[0],
            "reply-elsewhere".to_string(),
            Some(first.message.id),
        ),
    ];
    let tasks: Vec<_> = planned
        .iter()
        .chain(&refused)
        .cloned()
        .map(|(chat_id, sender, client_id, reply_to)| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut new = text(chat_id, sender, "burst", &client_id);
                new.reply_to_id = reply_to;
                store.send_message(new, |_| async {}).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("send task"));
    }
    let refusals = answers.split_off(planned.len());
    assert!(
        matches!(refusals[0], Err(StoreError::NotFound)),
        "{:?}",
        refusals[0]
    );
    assert!(
        matches!(refusals[1], Err(StoreError::Invalid(_))),
        "{:?}",
        refusals[1]
    );
    let outcomes: Vec<_> = answers
        .into_iter()
        .map(|answer| answer.expect("a planned send"))
        .collect();
    let (a, b) = (&outcomes[outcomes.len() - 2], &outcomes[outcomes.len() - 1]);
    assert_eq!(a.message, b.message, "one key sent twice is one message");
    assert_eq!(
        u32::from(a.created) + u32::from(b.created),
        1,
        "created once, found once"
    );
    for (outcome, (chat_id, sender, client_id, reply_to)) in outcomes.iter().zip(&planned) {
        let message = &outcome.message;
        assert_eq!(
            (message.chat_id, message.sender_id, &message.client_msg_id),
            (*chat_id, *sender, client_id)
        );
        assert_eq!(message.reply_to_id, *reply_to);
        if outcome.created {
            let mut members = outcome.member_ids.clone();
            members.sort_unstable();
            let mut expected = if *chat_id == group.id {
                people.clone()
            } else {
                pairs
                    .iter()
                    .find(|(id, _)| id == chat_id)
                    .expect("pair")
                    .1
                    .clone()
            };
            expected.sort_unstable();
            assert_eq!(members, expected, "members at commit time");
        }
    }
    let chats: Vec<Id> = pairs.iter().map(|(id, _)| *id).chain([group.id]).collect();
    for chat_id in chats {
        let reader = if chat_id == group.id {
            people[0]
        } else {
            pairs.iter().find(|(id, _)| *id == chat_id).expect("pair").1[0]
        };
        let history = store
            .messages(reader, chat_id, None, None, 100)
            .await
            .expect("history")
            .messages;
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=history.len() as u64).collect::<Vec<_>>(),
            "gap-free seqs in chat {chat_id}"
        );
        // Each stored message is exactly one created answer, with the same id, seq and time.
        for stored in &history {
            if stored.client_msg_id == "g0" {
                continue;
            }
            let answered: Vec<_> = outcomes
                .iter()
                .filter(|o| o.message.id == stored.id)
                .collect();
            assert!(!answered.is_empty(), "message {} was answered", stored.id);
            assert!(
                answered.iter().all(|o| o.message == *stored),
                "answer = history"
            );
        }
        let chat = store.chat(reader, chat_id).await.expect("chat");
        assert_eq!(chat.last_seq, history.len() as u64);
        assert_eq!(
            chat.last_message.as_ref(),
            history.last(),
            "the last message"
        );
        // Every sender has read up to their own newest message.
        for member in &chat.members {
            let newest_own = history
                .iter()
                .filter(|m| m.sender_id == member.user_id)
                .map(|m| m.seq)
                .max()
                .unwrap_or(0);
            assert_eq!(
                member.last_read_seq, newest_own,
                "watermark of {} in chat {chat_id}",
                member.user_id
            );
        }
    }
}

async fn a_retried_send_returns_the_first_message(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let first = send(store, text(chat.id, alice, "hello", "same-id")).await;
    assert!(first.created);
    let mut members = first.member_ids.clone();
    members.sort_unstable();
    assert_eq!(members, [alice, bob]);

    // The hook still runs, under the lock, told it is a repeat (so the caller can announce
    // what an unanswered commit left behind, but not the message again).
    let created_seen = Arc::new(AtomicU32::new(0));
    let repeats_seen = Arc::new(AtomicU32::new(0));
    let (created, repeats) = (created_seen.clone(), repeats_seen.clone());
    let retry = store
        .send_message(
            text(chat.id, alice, "hello again", "same-id"),
            move |outcome| {
                let seen = if outcome.created { &created } else { &repeats };
                seen.fetch_add(1, Ordering::Relaxed);
                async {}
            },
        )
        .await
        .expect("retry");
    assert!(!retry.created, "a duplicate");
    assert!(retry.member_ids.is_empty());
    assert_eq!(created_seen.load(Ordering::Relaxed), 0, "not a new message");
    assert_eq!(
        repeats_seen.load(Ordering::Relaxed),
        1,
        "the hook saw the repeat"
    );
    let found = store
        .message_by_client_id(chat.id, alice, "same-id")
        .await
        .expect("lookup");
    assert_eq!(
        found.as_ref(),
        Some(&first.message),
        "found by its idempotency key"
    );
    let missing = store
        .message_by_client_id(chat.id, bob, "same-id")
        .await
        .expect("lookup");
    assert_eq!(missing, None, "the key is per sender");
    assert_eq!(retry.message, first.message, "the first message, as stored");

    // Byte-exact ids: a different case is another message; another sender may reuse an id.
    let other_case = send(store, text(chat.id, alice, "x", "SAME-ID")).await;
    assert!(other_case.created);
    assert_eq!(other_case.message.seq, 2);
    let bobs = send(store, text(chat.id, bob, "y", "same-id")).await;
    assert!(bobs.created);
    assert_eq!(bobs.message.seq, 3);
    assert_eq!(store.chat(alice, chat.id).await.expect("chat").last_seq, 3);
}

async fn work_in_send_order_holds_off_sends(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let order = Arc::new(Mutex::new(Vec::new()));
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let holder = {
        let (store, order) = (store.clone(), order.clone());
        tokio::spawn(async move {
            store
                .in_send_order(chat.id, || async move {
                    let _ = entered_tx.send(());
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    order.lock().expect("order").push("work");
                })
                .await
        })
    };
    entered_rx.await.expect("the work started");
    let publish_order = order.clone();
    let sent = store
        .send_message(text(chat.id, alice, "after", "m1"), move |_| {
            publish_order.lock().expect("order").push("publish");
            async {}
        })
        .await
        .expect("send");
    holder.await.expect("holder").expect("lock taken");
    assert_eq!(sent.message.seq, 1);
    assert_eq!(
        *order.lock().expect("order"),
        ["work", "publish"],
        "the send waited for the work holding the chat's lock"
    );
}

async fn non_members_get_not_found(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let mallory = user(store, "mallory").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let sent = store
        .send_message(text(chat.id, mallory, "hi", "m1"), |_| async {})
        .await;
    assert!(matches!(sent, Err(StoreError::NotFound)), "{sent:?}");
    let sent = store
        .send_message(text(9_999_999, alice, "hi", "m1"), |_| async {})
        .await;
    assert!(matches!(sent, Err(StoreError::NotFound)), "{sent:?}");
    assert!(matches!(
        store.chat(mallory, chat.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.messages(mallory, chat.id, None, None, 10).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.mark_read(mallory, chat.id, 1).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .update_chat(mallory, chat.id, ChatUpdate::default())
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.chat(alice, u64::MAX).await,
        Err(StoreError::NotFound)
    ));

    // A reply must name a message of the same chat.
    let (other, _) = store
        .get_or_create_private(alice, mallory)
        .await
        .expect("chat");
    let elsewhere = send(store, text(other.id, alice, "there", "o1")).await;
    let mut reply = text(chat.id, alice, "re", "r1");
    reply.reply_to_id = Some(elsewhere.message.id);
    let sent = store.send_message(reply, |_| async {}).await;
    assert!(matches!(sent, Err(StoreError::Invalid(_))), "{sent:?}");
    let here = send(store, text(chat.id, bob, "here", "h1")).await;
    let mut reply = text(chat.id, alice, "re", "r2");
    reply.reply_to_id = Some(here.message.id);
    let replied = send(store, reply).await;
    assert_eq!(replied.message.reply_to_id, Some(here.message.id));
    assert_eq!(replied.message.seq, 2, "a refused send takes no seq");
}

async fn history_pages(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let empty = store
        .messages(alice, chat.id, None, None, 10)
        .await
        .expect("page");
    assert!(empty.messages.is_empty() && !empty.has_more);
    for i in 1..=7 {
        send(
            store,
            text(chat.id, alice, &format!("m{i}"), &format!("c{i}")),
        )
        .await;
    }
    let seqs = |page: &chat_store::MessagePage| -> Vec<u64> {
        page.messages.iter().map(|m| m.seq).collect()
    };
    let newest = store
        .messages(alice, chat.id, None, None, 3)
        .await
        .expect("page");
    assert_eq!(seqs(&newest), [5, 6, 7]);
    assert!(newest.has_more);
    let older = store
        .messages(alice, chat.id, Some(5), None, 3)
        .await
        .expect("page");
    assert_eq!(seqs(&older), [2, 3, 4]);
    assert!(older.has_more);
    let oldest = store
        .messages(alice, chat.id, Some(2), None, 3)
        .await
        .expect("page");
    assert_eq!(seqs(&oldest), [1]);
    assert!(!oldest.has_more);
    let after = store
        .messages(alice, chat.id, None, Some(2), 3)
        .await
        .expect("page");
    assert_eq!(seqs(&after), [3, 4, 5]);
    assert!(after.has_more);
    let tail = store
        .messages(alice, chat.id, None, Some(5), 3)
        .await
        .expect("page");
    assert_eq!(seqs(&tail), [6, 7]);
    assert!(!tail.has_more);
    let between = store
        .messages(alice, chat.id, Some(6), Some(2), 10)
        .await
        .expect("page");
    assert_eq!(seqs(&between), [3, 4, 5]);
    let huge = store
        .messages(alice, chat.id, Some(u64::MAX), None, 2)
        .await
        .expect("page");
    assert_eq!(seqs(&huge), [6, 7]);
    let past = store
        .messages(alice, chat.id, None, Some(u64::MAX), 2)
        .await
        .expect("page");
    assert!(past.messages.is_empty());
    assert_eq!(newest.messages[2].text.as_deref(), Some("m7"));
    assert_eq!(newest.messages[2].client_msg_id, "c7");
    assert_eq!(newest.messages[2].sender_id, alice);
}

async fn read_watermarks_never_move_back(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    for i in 1..=5 {
        send(store, text(chat.id, alice, "m", &format!("c{i}"))).await;
    }
    assert_eq!(
        store.chat(bob, chat.id).await.expect("chat").unread_count,
        5
    );

    let moved = store.mark_read(bob, chat.id, 3).await.expect("read");
    assert_eq!(moved.moved_to, Some(3));
    let mut members = moved.member_ids.clone();
    members.sort_unstable();
    assert_eq!(members, [alice, bob]);
    assert_eq!(
        store.chat(bob, chat.id).await.expect("chat").unread_count,
        2
    );

    let back = store.mark_read(bob, chat.id, 2).await.expect("read");
    assert_eq!(back.moved_to, None, "never back");
    assert!(back.member_ids.is_empty());
    let same = store.mark_read(bob, chat.id, 3).await.expect("read");
    assert_eq!(same.moved_to, None);

    // Past the last message: clamped to it.
    let clamped = store.mark_read(bob, chat.id, u64::MAX).await.expect("read");
    assert_eq!(clamped.moved_to, Some(5));
    let chat_now = store.chat(bob, chat.id).await.expect("chat");
    assert_eq!(chat_now.unread_count, 0);
    let bob_member = chat_now
        .members
        .iter()
        .find(|m| m.user_id == bob)
        .expect("bob is a member");
    assert_eq!(bob_member.last_read_seq, 5);

    // Racing reads end at the highest.
    for i in 6..=20 {
        send(store, text(chat.id, alice, "m", &format!("c{i}"))).await;
    }
    let racers: Vec<_> = (6..=20)
        .rev()
        .map(|up_to| {
            let store = store.clone();
            tokio::spawn(async move { store.mark_read(bob, chat.id, up_to).await })
        })
        .collect();
    for racer in racers {
        racer.await.expect("task").expect("read");
    }
    let members = store.members(bob, chat.id).await.expect("members");
    let bob_member = members.iter().find(|m| m.user_id == bob).expect("bob");
    assert_eq!(bob_member.last_read_seq, 20);
}

async fn sync_returns_what_was_missed_in_order(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let (with_bob, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let (not_alices, _) = store.get_or_create_private(bob, carol).await.expect("chat");
    let start = now_millis();
    let mut sent = Vec::new();
    for i in 0..6 {
        let from = if i % 2 == 0 { alice } else { bob };
        sent.push(
            send(store, text(with_bob.id, from, "m", &format!("c{i}")))
                .await
                .message,
        );
        // Spread the messages over several milliseconds so pages can end between them.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    send(store, text(not_alices.id, bob, "private", "p1")).await;
    let read = store.mark_read(alice, with_bob.id, 6).await.expect("read");
    assert_eq!(read.moved_to, Some(6));

    let all = store.sync(alice, start, 100).await.expect("sync");
    assert_eq!(all.more_from, None);
    assert_eq!(all.events.len(), 7, "six messages and one read");
    for (event, message) in all.events.iter().zip(&sent) {
        assert_eq!(event, &SyncEvent::Message(message.clone()));
    }
    assert!(matches!(
        all.events[6],
        SyncEvent::Read { chat_id, user_id, up_to_seq: 6, .. }
            if chat_id == with_bob.id && user_id == alice
    ));
    assert!(all.events.windows(2).all(|w| w[0].at() <= w[1].at()));

    // Paging from more_from hands out every event exactly once, in order.
    let mut paged = Vec::new();
    let mut from = start;
    let mut pages = 0;
    loop {
        let slice = store.sync(alice, from, 2).await.expect("sync");
        pages += 1;
        assert!(pages < 20, "paging ends");
        paged.extend(slice.events);
        match slice.more_from {
            Some(next) => {
                assert!(next > from, "paging moves forward");
                from = next;
            }
            None => break,
        }
    }
    assert!(pages >= 3, "a limit of 2 needs several pages, got {pages}");
    assert_eq!(paged, all.events);

    let later = store.sync(alice, now_millis() + chrono::Duration::seconds(1), 10);
    assert!(later.await.expect("sync").events.is_empty());
    // Carol sees only her chat.
    let carols = store.sync(carol, start, 100).await.expect("sync");
    assert_eq!(carols.events.len(), 1);
}

async fn attachments_and_who_may_read_them(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let sha = "ab".repeat(32);
    let record = store
        .create_attachment(alice, "objects/1", 1234, "image/png", &sha)
        .await
        .expect("create");
    assert_eq!(record.uploader_id, alice);
    assert_eq!(record.size, 1234);
    let own = store.own_attachment(alice, record.id).await.expect("own");
    assert_eq!(own.as_ref(), Some(&record));
    assert!(
        store
            .own_attachment(bob, record.id)
            .await
            .expect("own")
            .is_none()
    );
    assert!(
        store
            .readable_attachment(bob, record.id)
            .await
            .expect("readable")
            .is_none()
    );

    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let public: Attachment = record.public();
    let sent = send(
        store,
        NewMessage {
            chat_id: chat.id,
            sender_id: alice,
            kind: MessageKind::Image,
            text: None,
            attachment: Some(&public),
            reply_to_id: None,
            client_msg_id: "img",
        },
    )
    .await;
    assert_eq!(sent.message.attachment.as_ref(), Some(&public));
    let readable = store
        .readable_attachment(bob, record.id)
        .await
        .expect("readable");
    assert_eq!(readable, Some(record.clone()));
    assert!(
        store
            .readable_attachment(carol, record.id)
            .await
            .expect("readable")
            .is_none()
    );
    let page = store
        .messages(bob, chat.id, None, None, 10)
        .await
        .expect("history");
    assert_eq!(page.messages[0].attachment.as_ref(), Some(&public));
    assert_eq!(page.messages[0].kind, MessageKind::Image);
    let listed = store.chat(bob, chat.id).await.expect("chat");
    let last = listed.last_message.expect("last message");
    assert_eq!(last.attachment, Some(public));
}

async fn push_tokens_move_between_users(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    store
        .put_push_token(alice, "tok-b", Some("ios"))
        .await
        .expect("put");
    store
        .put_push_token(alice, "tok-a", None)
        .await
        .expect("put");
    store
        .put_push_token(alice, "tok-a", Some("android"))
        .await
        .expect("refresh");
    store.put_push_token(bob, "tok-c", None).await.expect("put");
    assert_eq!(
        store.push_tokens_of(&[bob, alice]).await.expect("tokens"),
        [
            (alice, "tok-a".to_string()),
            (alice, "tok-b".to_string()),
            (bob, "tok-c".to_string())
        ]
    );
    assert!(store.push_tokens_of(&[]).await.expect("none").is_empty());
    // A shared device changed accounts: the token moves.
    store
        .put_push_token(bob, "tok-b", None)
        .await
        .expect("move");
    assert_eq!(
        store.push_tokens_of(&[alice]).await.expect("tokens"),
        [(alice, "tok-a".to_string())]
    );
    store.delete_push_token(bob, "tok-c").await.expect("delete");
    store.delete_push_token(bob, "never").await.expect("absent");
    assert_eq!(
        store.push_tokens_of(&[bob]).await.expect("tokens"),
        [(bob, "tok-b".to_string())]
    );
    // Long lists, as the api asks for many messages' offline recipients at once: unordered,
    // repeated, with users that have no token, across more than one lookup's worth of users.
    let mut many: Vec<Id> = (1..=1500).map(|n| 1_000_000 + n).collect();
    many.extend([bob, alice, bob]);
    many.reverse();
    assert_eq!(
        store.push_tokens_of(&many).await.expect("tokens"),
        [(alice, "tok-a".to_string()), (bob, "tok-b".to_string())]
    );
    let carol = user(store, "carol").await;
    store
        .put_push_token(carol, "tok-d", None)
        .await
        .expect("put");
    let mut beyond_one_lookup: Vec<Id> = (1..=1030).map(|n| carol + n).collect();
    beyond_one_lookup.extend([carol, alice]);
    assert_eq!(
        store
            .push_tokens_of(&beyond_one_lookup)
            .await
            .expect("tokens"),
        [(alice, "tok-a".to_string()), (carol, "tok-d".to_string())]
    );

    let (private, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let context = store.push_context(alice, private.id).await.expect("ctx");
    assert_eq!(context.sender_username, "alice");
    assert_eq!(context.group_title, None);
    let group = store
        .create_group(
            bob,
            NewGroup {
                title: "team",
                member_ids: &[alice],
            },
        )
        .await
        .expect("group");
    let context = store.push_context(bob, group.id).await.expect("ctx");
    assert_eq!(context.group_title.as_deref(), Some("team"));
    assert!(matches!(
        store.push_context(bob, 9_999_999).await,
        Err(StoreError::NotFound)
    ));
}

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
