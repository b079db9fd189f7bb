//! Private chats, groups and their members, the chat list, and what non-members get, on both
//! backends (`common::on_both_backends!`).

#[macro_use]
mod common;

use chat_proto::{ChatKind, MemberRole};
use chat_store::{ChatUpdate, NewGroup, Store, StoreError};
use common::{send, text, user};

on_both_backends!(
    private_chats_are_one_per_pair,
    groups_members_and_flags,
    chat_list_order_and_unread_counts,
    non_members_get_not_found,
);

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
