//! Redis Cluster: users whose channels live on each of the three masters all get their
//! messages (sharded pub/sub through SPUBLISH/SSUBSCRIBE). Runs on the local 6-node cluster,
//! which the kit starts with deploy/local/redis-cluster.sh when it is not up.

use std::collections::BTreeMap;

use chat_testkit::redis_target::master_of;
use chat_testkit::{RedisTarget, Stack, StackOptions, WAIT, WsClient, id_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_every_master_get_their_messages() {
    let cluster = RedisTarget::cluster();
    let stack = Stack::start(StackOptions {
        gateways: 2,
        redis: Some(cluster.clone()),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let sender = api.new_user("cs").await;

    // Register users until each master owns at least one of their channels.
    let mut by_master: BTreeMap<String, chat_testkit::TestUser> = BTreeMap::new();
    for _ in 0..60 {
        let user = api.new_user("cr").await;
        let channel = format!("{}:u:{{{}}}", stack.redis_prefix(), user.id);
        let master = master_of(cluster.first_url(), &channel)
            .await
            .expect("slot owner");
        by_master.entry(master).or_insert(user);
        if by_master.len() == 3 {
            break;
        }
    }
    assert_eq!(
        by_master.len(),
        3,
        "could not place a user on each master: {by_master:?}"
    );

    let receivers: Vec<_> = by_master.values().collect();
    let member_ids: Vec<u64> = receivers.iter().map(|u| u.id).collect();
    let chat = api.as_user(&sender).group_chat("shards", &member_ids).await;
    let chat_id = id_of(&chat, "id");

    let mut sockets = Vec::new();
    for (i, user) in receivers.iter().enumerate() {
        let ws = WsClient::authed(&stack.gateway_ws_url(i % 2), &user.token).await;
        sockets.push(ws.labeled(&format!("user{}@gw{}", user.id, i % 2 + 1)));
    }
    let sent = api
        .as_user(&sender)
        .send_text(chat_id, "shard-1", "hello shards")
        .await;
    let message_id = id_of(&sent, "id");

    for ws in &mut sockets {
        let event = ws.recv_until("new_message", WAIT).await;
        assert_eq!(id_of(&event["message"], "id"), message_id, "{}", ws.label());
        ws.expect_no_frame_of_type("new_message", chat_testkit::QUIET)
            .await;
    }
}
