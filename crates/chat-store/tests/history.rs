//! Reading back: history pages, read watermarks, and sync, on both backends
//! (`common::on_both_backends!`).

#[macro_use]
mod common;

use chat_proto::time::now_millis;
use chat_store::{Store, SyncEvent};
use common::{send, text, user};

on_both_backends!(
    history_pages,
    read_watermarks_never_move_back,
    sync_returns_what_was_missed_in_order,
);

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
