//! Delivered receipts, edits and deletions (client contract 1.1) on both backends
//! (`common::on_both_backends!`).

#[macro_use]
mod common;

use chat_proto::{DeliveredMove, Id, MessageKind};
use chat_store::{NewGroup, NewMessage, Store, StoreError, SyncEvent};
use common::user;

on_both_backends!(
    delivered_watermarks_only_move_forward_and_reads_imply_them,
    a_delivered_batch_answers_every_move,
    edits_follow_the_rules_and_keep_the_seq,
    deletes_leave_a_tombstone_and_revoke_attachment_access,
    sync_returns_updates_and_deliveries_in_order,
);

async fn send_text(
    store: &Store,
    chat_id: Id,
    sender_id: Id,
    text: &str,
    cid: &str,
) -> chat_proto::Message {
    store
        .send_message(
            NewMessage {
                chat_id,
                sender_id,
                kind: MessageKind::Text,
                text: Some(text),
                attachment: None,
                reply_to_id: None,
                client_msg_id: cid,
            },
            |_| async {},
        )
        .await
        .expect("send a message")
        .message
}

/// `(last_read_seq, last_delivered_seq)` of `user` in the chat as `viewer` sees the members.
async fn watermarks(store: &Store, viewer: Id, chat_id: Id, user: Id) -> (u64, u64) {
    let members = store.members(viewer, chat_id).await.expect("members");
    let member = members
        .iter()
        .find(|m| m.user_id == user)
        .expect("a member");
    (member.last_read_seq, member.last_delivered_seq)
}

async fn delivered_watermarks_only_move_forward_and_reads_imply_them(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    for i in 0..5 {
        send_text(store, chat.id, alice, "m", &format!("c{i}")).await;
    }
    assert_eq!(watermarks(store, alice, chat.id, bob).await, (0, 0));
    let moved = store
        .mark_delivered(bob, chat.id, 2)
        .await
        .expect("delivered");
    assert_eq!(moved.moved_to, Some(2));
    let mut members = moved.member_ids.clone();
    members.sort_unstable();
    assert_eq!(members, vec![alice, bob]);
    assert_eq!(watermarks(store, alice, chat.id, bob).await, (0, 2));
    // Never back, and the same value again moves nothing.
    for up_to in [1, 2, 0] {
        let again = store
            .mark_delivered(bob, chat.id, up_to)
            .await
            .expect("delivered");
        assert_eq!(again.moved_to, None, "up_to {up_to}");
        assert!(again.member_ids.is_empty());
    }
    // Beyond the last message: clamped.
    let clamped = store
        .mark_delivered(bob, chat.id, 99)
        .await
        .expect("delivered");
    assert_eq!(clamped.moved_to, Some(5));
    assert_eq!(watermarks(store, bob, chat.id, bob).await, (0, 5));
    // A read beyond the delivered watermark carries it along; a delivered below the read
    // watermark then moves nothing.
    send_text(store, chat.id, alice, "m", "c5").await;
    send_text(store, chat.id, alice, "m", "c6").await;
    store.mark_read(bob, chat.id, 7).await.expect("read");
    assert_eq!(watermarks(store, alice, chat.id, bob).await, (7, 7));
    let below_read = store
        .mark_delivered(bob, chat.id, 6)
        .await
        .expect("delivered");
    assert_eq!(below_read.moved_to, None);
    assert_eq!(watermarks(store, alice, chat.id, bob).await, (7, 7));
    // The sender's own messages count as delivered to the sender.
    assert_eq!(watermarks(store, bob, chat.id, alice).await, (7, 7));
    // Non-members and unknown chats: not found.
    let stranger = store.mark_delivered(carol, chat.id, 1).await;
    assert!(
        matches!(stranger, Err(StoreError::NotFound)),
        "{stranger:?}"
    );
    let unknown = store.mark_delivered(bob, chat.id + 1000, 1).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    // Concurrent moves of one member never end below the highest.
    let tasks: Vec<_> = (1..=20u64)
        .map(|i| {
            let store = store.clone();
            let chat_id = chat.id;
            tokio::spawn(async move {
                let at = 7 + (i % 3);
                if i == 20 {
                    send_text(&store, chat_id, alice, "m", "late").await;
                }
                store
                    .mark_delivered(bob, chat_id, at)
                    .await
                    .expect("delivered")
            })
        })
        .collect();
    let mut moved_to = Vec::new();
    for task in tasks {
        if let Some(to) = task.await.expect("task").moved_to {
            moved_to.push(to);
        }
    }
    let (_, delivered) = watermarks(store, alice, chat.id, bob).await;
    assert_eq!(Some(&delivered), moved_to.iter().max(), "{moved_to:?}");
    assert!(delivered >= 8, "{delivered}");
}

async fn a_delivered_batch_answers_every_move(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let group = store
        .create_group(
            alice,
            NewGroup {
                title: "g",
                member_ids: &[bob, carol],
            },
        )
        .await
        .expect("group");
    let (private, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    for i in 0..3 {
        send_text(store, group.id, alice, "m", &format!("g{i}")).await;
        send_text(store, private.id, alice, "m", &format!("p{i}")).await;
    }
    let moves = [
        DeliveredMove {
            user_id: bob,
            chat_id: group.id,
            up_to_seq: 1,
        },
        DeliveredMove {
            user_id: carol,
            chat_id: group.id,
            up_to_seq: 3,
        },
        DeliveredMove {
            user_id: bob,
            chat_id: group.id,
            up_to_seq: 2,
        },
        DeliveredMove {
            user_id: carol,
            chat_id: private.id,
            up_to_seq: 1,
        },
        DeliveredMove {
            user_id: bob,
            chat_id: private.id,
            up_to_seq: 0,
        },
        DeliveredMove {
            user_id: bob,
            chat_id: private.id,
            up_to_seq: 50,
        },
    ];
    let answers = store.mark_delivered_batch(&moves).await.expect("batch");
    assert_eq!(answers.len(), moves.len());
    let moved: Vec<Option<Option<u64>>> = answers
        .iter()
        .map(|a| a.as_ref().ok().map(|o| o.moved_to))
        .collect();
    // Bob's two moves in a chat count as one, to the higher seq, answered at the first of
    // them; carol is not in the private chat.
    assert_eq!(
        moved,
        vec![
            Some(Some(2)),
            Some(Some(3)),
            Some(None),
            None,
            Some(Some(3)),
            Some(None)
        ]
    );
    assert!(matches!(answers[3], Err(StoreError::NotFound)));
    let group_members = answers[1].as_ref().expect("moved").member_ids.len();
    assert_eq!(group_members, 3);
    assert_eq!(watermarks(store, alice, group.id, bob).await, (0, 2));
    assert_eq!(watermarks(store, alice, group.id, carol).await, (0, 3));
    assert_eq!(watermarks(store, alice, private.id, bob).await, (0, 3));
    let again = store.mark_delivered_batch(&moves).await.expect("batch");
    assert!(
        again
            .iter()
            .all(|a| a.as_ref().map_or(true, |o| o.moved_to.is_none()))
    );
    assert!(
        store
            .mark_delivered_batch(&[])
            .await
            .expect("empty")
            .is_empty()
    );
}

async fn edits_follow_the_rules_and_keep_the_seq(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let (other, _) = store
        .get_or_create_private(alice, carol)
        .await
        .expect("chat");
    let first = send_text(store, chat.id, alice, "helo", "c1").await;
    let second = send_text(store, chat.id, bob, "hi", "c2").await;
    let elsewhere = send_text(store, other.id, alice, "x", "c3").await;

    let edited = store
        .edit_message(alice, chat.id, first.id, "hello")
        .await
        .expect("edit");
    assert!(edited.changed);
    assert_eq!(edited.message.text.as_deref(), Some("hello"));
    assert_eq!(edited.message.seq, first.seq);
    assert_eq!(edited.message.id, first.id);
    let edited_at = edited.message.edited_at.expect("edited_at set");
    assert!(edited_at >= first.created_at);
    assert_eq!(edited.message.deleted_at, None);
    assert_eq!(edited.member_ids.len(), 2);
    let page = store
        .messages(bob, chat.id, None, None, 10)
        .await
        .expect("history");
    assert_eq!(page.messages[0], edited.message);
    // The chat list shows the message as it now is (bob's is the last one).
    let listed = store.chat(alice, chat.id).await.expect("chat");
    assert_eq!(listed.last_message.map(|m| m.id), Some(second.id));
    let again = store
        .edit_message(bob, chat.id, second.id, "hi!")
        .await
        .expect("edit");
    let listed = store.chat(alice, chat.id).await.expect("chat");
    assert_eq!(listed.last_message, Some(again.message));

    let forbidden = store.edit_message(bob, chat.id, first.id, "mine now").await;
    assert!(
        matches!(forbidden, Err(StoreError::Forbidden(_))),
        "{forbidden:?}"
    );
    let stranger = store.edit_message(carol, chat.id, first.id, "x").await;
    assert!(
        matches!(stranger, Err(StoreError::NotFound)),
        "{stranger:?}"
    );
    let wrong_chat = store.edit_message(alice, chat.id, elsewhere.id, "x").await;
    assert!(
        matches!(wrong_chat, Err(StoreError::NotFound)),
        "{wrong_chat:?}"
    );
    let unknown = store
        .edit_message(alice, chat.id, elsewhere.id + 1000, "x")
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");

    store
        .delete_message(alice, chat.id, first.id)
        .await
        .expect("delete");
    let after_delete = store.edit_message(alice, chat.id, first.id, "back").await;
    assert!(
        matches!(after_delete, Err(StoreError::Conflict(_))),
        "{after_delete:?}"
    );
    // The next send still takes the next seq: nothing was reused or removed.
    let third = send_text(store, chat.id, alice, "more", "c4").await;
    assert_eq!(third.seq, 3);
}

async fn deletes_leave_a_tombstone_and_revoke_attachment_access(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let group = store
        .create_group(
            bob,
            NewGroup {
                title: "g",
                member_ids: &[alice, carol],
            },
        )
        .await
        .expect("group");
    let sha = "cd".repeat(32);
    let record = store
        .create_attachment(alice, "objects/9", 10, "application/pdf", &sha)
        .await
        .expect("attachment");
    let public = record.public();
    let file = store
        .send_message(
            NewMessage {
                chat_id: group.id,
                sender_id: alice,
                kind: MessageKind::File,
                text: Some("the doc"),
                attachment: Some(&public),
                reply_to_id: None,
                client_msg_id: "f1",
            },
            |_| async {},
        )
        .await
        .expect("send")
        .message;
    let by_carol = send_text(store, group.id, carol, "oops", "c1").await;
    let by_alice = send_text(store, group.id, alice, "hm", "c2").await;
    assert!(
        store
            .readable_attachment(carol, record.id)
            .await
            .expect("read")
            .is_some()
    );

    // Another member may not delete alice's message; the owner (bob) may delete carol's.
    let forbidden = store.delete_message(carol, group.id, by_alice.id).await;
    assert!(
        matches!(forbidden, Err(StoreError::Forbidden(_))),
        "{forbidden:?}"
    );
    let by_owner = store
        .delete_message(bob, group.id, by_carol.id)
        .await
        .expect("delete");
    assert!(by_owner.changed);
    assert_eq!(by_owner.member_ids.len(), 3);

    let deleted = store
        .delete_message(alice, group.id, file.id)
        .await
        .expect("delete");
    assert!(deleted.changed);
    let tomb = &deleted.message;
    assert_eq!((tomb.id, tomb.seq), (file.id, file.seq));
    assert_eq!(tomb.text, None);
    assert_eq!(tomb.attachment, None);
    assert!(tomb.deleted_at.is_some());
    // Deleting again is done already: nothing changes, nothing to announce.
    let twice = store
        .delete_message(alice, group.id, file.id)
        .await
        .expect("delete");
    assert!(!twice.changed);
    assert!(twice.member_ids.is_empty());
    assert_eq!(twice.message.deleted_at, tomb.deleted_at);

    // The history keeps every seq; the tombstones read as such.
    let page = store
        .messages(carol, group.id, None, None, 10)
        .await
        .expect("history");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(page.messages[0], deleted.message);
    assert!(page.messages[1].deleted_at.is_some() && page.messages[1].text.is_none());
    assert_eq!(page.messages[2].deleted_at, None);
    // The attachment: only its uploader still reads it.
    assert!(
        store
            .readable_attachment(carol, record.id)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .readable_attachment(bob, record.id)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .readable_attachment(alice, record.id)
            .await
            .expect("read")
            .is_some()
    );
    let stranger = store
        .delete_message(user(store, "dave").await, group.id, by_alice.id)
        .await;
    assert!(
        matches!(stranger, Err(StoreError::NotFound)),
        "{stranger:?}"
    );
    let next = send_text(store, group.id, alice, "next", "c3").await;
    assert_eq!(next.seq, 4);
}

async fn sync_returns_updates_and_deliveries_in_order(store: &Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let (chat, _) = store.get_or_create_private(alice, bob).await.expect("chat");
    let start = chat_proto::time::now_millis();
    let first = send_text(store, chat.id, alice, "one", "c1").await;
    let second = send_text(store, chat.id, alice, "two", "c2").await;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    store
        .mark_delivered(bob, chat.id, 2)
        .await
        .expect("delivered");
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let edited = store
        .edit_message(alice, chat.id, first.id, "uno")
        .await
        .expect("edit");
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let deleted = store
        .delete_message(alice, chat.id, second.id)
        .await
        .expect("delete");

    let all = store.sync(bob, start, 100).await.expect("sync");
    assert_eq!(all.more_from, None);
    let kinds: Vec<&str> = all
        .events
        .iter()
        .map(|e| match e {
            SyncEvent::Message(_) => "message",
            SyncEvent::Updated(_) => "updated",
            SyncEvent::Read { .. } => "read",
            SyncEvent::Delivered { .. } => "delivered",
        })
        .collect();
    // Messages appear as they now are; their updates at the time of the change.
    assert_eq!(
        kinds,
        vec!["message", "message", "delivered", "updated", "updated"],
        "{:?}",
        all.events
    );
    assert!(all.events.windows(2).all(|w| w[0].at() <= w[1].at()));
    assert!(matches!(
        all.events[2],
        SyncEvent::Delivered { chat_id, user_id, up_to_seq: 2, .. } if chat_id == chat.id && user_id == bob
    ));
    assert_eq!(all.events[3], SyncEvent::Updated(edited.message.clone()));
    assert_eq!(all.events[4], SyncEvent::Updated(deleted.message.clone()));
    assert_eq!(
        all.events[3].at(),
        edited.message.edited_at.expect("edited")
    );
    // Paging by one never splits or repeats.
    let mut paged = Vec::new();
    let mut from = start;
    for _ in 0..20 {
        let slice = store.sync(bob, from, 1).await.expect("sync");
        paged.extend(slice.events);
        match slice.more_from {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(paged, all.events);
    // From after the sends: only the later events.
    let later = store
        .sync(bob, edited.message.edited_at.expect("edited"), 100)
        .await
        .expect("sync");
    assert_eq!(later.events.len(), 2);
}
