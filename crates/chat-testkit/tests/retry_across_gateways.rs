//! A send whose gateway dies mid-request is retried with the same client_msg_id on another
//! gateway: the message is stored once, and the retry's ack names the stored message.

use std::time::Duration;

use chat_testkit::{Stack, StackOptions, WAIT, WsClient, id_of, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_on_another_gateway_after_a_crash_is_stored_once() {
    let mut stack = Stack::start(StackOptions::gateways(4)).await;
    let api = stack.api();
    let a = api.new_user("rt_a").await;
    let b = api.new_user("rt_b").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");
    let survivor = 3;

    let mut acked = Vec::new();
    // Kill the first gateway at different moments after the send frame: before, around and
    // after chat-api commits.
    for (doomed, delay_ms) in [(0usize, 0u64), (1, 2), (2, 15)] {
        let client_msg_id = format!("retry-{doomed}");
        let frame = json!({"type": "send", "id": "r", "chat_id": chat,
                           "client_msg_id": client_msg_id, "text": "once"});
        let mut first = WsClient::authed(&stack.gateway_ws_url(doomed), &a.token).await;
        first.send_json(&frame).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        stack.kill_gateway(doomed);

        let mut retry = WsClient::authed(&stack.gateway_ws_url(survivor), &a.token).await;
        let ack = retry.request(&frame, WAIT).await;
        assert_eq!(
            ack["type"],
            json!("ack"),
            "retry after killing gateway {doomed}: {ack}"
        );
        assert_eq!(ack["message"]["client_msg_id"], json!(client_msg_id));
        acked.push(id_of(&ack["message"], "id"));
        retry.close().await;
    }

    let history = api.as_user(&b).all_messages(chat).await;
    let ids: Vec<u64> = history.iter().map(|m| id_of(m, "id")).collect();
    let seqs: Vec<u64> = history.iter().map(|m| id_of(m, "seq")).collect();
    assert_eq!(
        ids, acked,
        "each send is stored exactly once, and acked with the stored message"
    );
    assert_eq!(seqs, vec![1, 2, 3]);
}
