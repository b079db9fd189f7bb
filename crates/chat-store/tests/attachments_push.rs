//! Attachments and who may read them, and push tokens, on both backends
//! (`common::on_both_backends!`).

#[macro_use]
mod common;

use chat_proto::{Attachment, Id, MessageKind};
use chat_store::{NewGroup, NewMessage, Store, StoreError};
use common::{send, user};

on_both_backends!(
    attachments_and_who_may_read_them,
    push_tokens_move_between_users,
);

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
