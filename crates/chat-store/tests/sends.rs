//! Sending: the per-chat sequence, publish order, bursts, retries, and work in send order, on
//! both backends (`common::on_both_backends!`).

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chat_proto::Id;
use chat_store::{NewGroup, Store, StoreError};
use common::{send, text, user};

on_both_backends!(
    concurrent_sends_get_every_seq_once_in_publish_order,
    a_burst_of_sends_in_many_chats_is_stored_exactly,
    a_retried_send_returns_the_first_message,
    work_in_send_order_holds_off_sends,
);

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
