//! Group membership under traffic: members are added, removed and leave a group while its owner
//! sends without pause, with the members spread over two gateways so that a gateway both starts
//! routing a group it never held (and subscribes to its channel) and stops routing one. Every
//! member must get exactly the messages sent while they were a member, and nobody any other.
//! Runs on every topology: standalone Redis, `CHAT_TEST_REDIS_MODE=cluster`, and
//! `CHAT_TEST_STACK=embedded`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chat_testkit::{
    QUIET, Stack, StackOptions, TestUser, Value, WsClient, assert_status, id_of, json,
    unique_client_msg_id,
};

/// How long a socket may take to receive what it is owed.
const DELIVERY: Duration = Duration::from_secs(10);
/// Messages sent between two membership changes.
const PER_STEP: u64 = 8;

enum Change {
    /// The owner adds the user.
    Add(usize),
    /// The owner removes the user.
    Remove(usize),
    /// The user leaves.
    Leave(usize),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_moving_in_and_out_get_exactly_the_messages_of_their_membership() {
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let api = stack.api();
    // 0 owner, 1-2 members from the start, 3-4 joining later, 5 never a member.
    let users = api.new_users("gm", 6).await;
    let gateway_of = |user: usize| usize::from(user >= 3);
    let mut sockets = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let ws = WsClient::authed(&stack.gateway_ws_url(gateway_of(i)), &user.token)
            .await
            .labeled(&format!("u{i}@gw{}", gateway_of(i)));
        sockets.push(ws);
    }
    let owner = api.as_user(&users[0]);
    let chat = id_of(
        &owner
            .group_chat("moving", &[users[1].id, users[2].id])
            .await,
        "id",
    );

    let mut members: BTreeSet<usize> = [0, 1, 2].into();
    // Per user, the seqs they must get.
    let mut owed: HashMap<usize, BTreeSet<u64>> = HashMap::new();
    let steps = [
        // Gateway 1 holds no member yet: it subscribes the chat and catches user 3 up.
        Change::Add(3),
        // Gateway 1 routes the chat already.
        Change::Add(4),
        Change::Remove(1),
        Change::Leave(3),
        // Gateway 1 loses its last member, then gets one again.
        Change::Remove(4),
        Change::Add(3),
        Change::Add(1),
    ];
    send_step(&stack, &users[0], chat, &members, &mut owed).await;
    for change in steps {
        let (path_user, actor, added) = match change {
            Change::Add(user) => (user, 0, true),
            Change::Remove(user) => (user, 0, false),
            Change::Leave(user) => (user, user, false),
        };
        let as_actor = api.as_user(&users[actor]);
        let resp = if added {
            as_actor
                .post(
                    &format!("/v1/chats/{chat}/members"),
                    &json!({"user_id": users[path_user].id}),
                )
                .await
        } else {
            as_actor
                .delete(&format!("/v1/chats/{chat}/members/{}", users[path_user].id))
                .await
        };
        assert_status(&resp, 204, "membership change");
        if added {
            members.insert(path_user);
        } else {
            members.remove(&path_user);
        }
        send_step(&stack, &users[0], chat, &members, &mut owed).await;
    }

    for (i, ws) in sockets.iter_mut().enumerate() {
        let expected = owed.remove(&i).unwrap_or_default();
        let got = collect_chat_messages(ws, chat, expected.len()).await;
        let unique: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "[{}] no message twice: {got:?}",
            ws.label()
        );
        let missed: Vec<u64> = expected.difference(&unique).copied().collect();
        let foreign: Vec<u64> = unique.difference(&expected).copied().collect();
        assert!(
            missed.is_empty() && foreign.is_empty(),
            "[{}] missed {missed:?}, got while not a member {foreign:?}",
            ws.label()
        );
    }
}

/// The owner sends `PER_STEP` messages back to back; each is owed to the members of the moment.
async fn send_step(
    stack: &Stack,
    owner: &TestUser,
    chat: u64,
    members: &BTreeSet<usize>,
    owed: &mut HashMap<usize, BTreeSet<u64>>,
) {
    let owner = stack.api().as_user(owner);
    for _ in 0..PER_STEP {
        let message = owner
            .send_text(chat, &unique_client_msg_id("gm"), "traffic")
            .await;
        let seq = id_of(&message, "seq");
        for &member in members {
            owed.entry(member).or_default().insert(seq);
        }
    }
}

/// The seqs of the chat's `new_message` events a socket receives: until `expected` arrived (or
/// DELIVERY passed), then for QUIET more to catch extras. Any event of the chat counts.
async fn collect_chat_messages(ws: &mut WsClient, chat: u64, expected: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    let deadline = Instant::now() + DELIVERY;
    let take = |frame: &Value, seqs: &mut Vec<u64>| {
        if frame["type"] == json!("new_message") && frame["message"]["chat_id"] == json!(chat) {
            seqs.push(id_of(&frame["message"], "seq"));
        }
    };
    while seqs.len() < expected && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = ws.recv_json_opt(left).await else {
            break;
        };
        take(&frame, &mut seqs);
    }
    for frame in ws.collect_for(QUIET).await {
        take(&frame, &mut seqs);
    }
    seqs
}
