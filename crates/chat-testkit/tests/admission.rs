//! chat-api's admission classes: a flood of syncs beyond the sync class's turns and queue gets
//! 503 `unavailable` with `Retry-After`, while the sends made during the flood, a class of their
//! own, are all stored.

use chat_testkit::{Stack, StackOptions, Value, assert_status, id_of, json, unique_client_msg_id};
use futures_util::future::join_all;

const SYNCS: usize = 200;
const SENDS: usize = 40;

#[tokio::test]
async fn a_sync_flood_is_refused_with_retry_after_while_every_send_is_stored() {
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let stack = Stack::start(StackOptions {
        gateways: 0,
        api_env: env(&[
            // One sync at a time, two waiting, each for at most 50 ms.
            ("CHAT_SYNC_CONCURRENCY", "1"),
            ("CHAT_SYNC_QUEUE", "2"),
            ("CHAT_SYNC_WAIT_MS", "50"),
            ("CHAT_ADMISSION_RETRY_AFTER_SECS", "3"),
            // The sends below are many for one user; the bucket is not under test.
            ("CHAT_MSG_RATE_PER_SEC", "0"),
        ]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let a = api.new_user("adm_a").await;
    let b = api.new_user("adm_b").await;
    let as_a = api.as_user(&a);
    let chat = id_of(&as_a.private_chat(b.id).await, "id");
    // Something for the syncs to read.
    for n in 0..20 {
        as_a.send_text(chat, &unique_client_msg_id("seed"), &format!("seed {n}"))
            .await;
    }

    let http = reqwest::Client::new();
    let sync_url = format!("{}/v1/sync?since=c0&limit=500", api.base());
    let syncs = join_all((0..SYNCS).map(|_| {
        let request = http.get(&sync_url).bearer_auth(&b.token).send();
        async move {
            let response = request.await.expect("chat-api answers a sync");
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, retry_after, body)
        }
    }));
    let path = format!("/v1/chats/{chat}/messages");
    let sends = join_all((0..SENDS).map(|n| {
        let as_a = as_a.clone();
        let path = path.clone();
        async move {
            let body = json!({"client_msg_id": unique_client_msg_id("flood"), "text": format!("during {n}")});
            as_a.post(&path, &body).await
        }
    }));
    let (syncs, sends) = tokio::join!(syncs, sends);

    for send in &sends {
        assert_status(send, 201, "a send during the sync flood");
    }
    let refused: Vec<_> = syncs.iter().filter(|(status, ..)| *status == 503).collect();
    let served = syncs.iter().filter(|(status, ..)| *status == 200).count();
    assert_eq!(
        refused.len() + served,
        SYNCS,
        "every sync is served or refused: {:?}",
        syncs.iter().map(|(s, ..)| s).collect::<Vec<_>>()
    );
    assert!(
        !refused.is_empty(),
        "{SYNCS} syncs at once against one turn and a queue of two: some are refused"
    );
    assert!(served > 0, "the syncs that got a turn are served");
    for (_, retry_after, body) in &refused {
        assert_eq!(retry_after.as_deref(), Some("3"), "Retry-After on {body}");
        assert_eq!(body["error"]["code"], json!("unavailable"), "{body}");
    }

    // Once the flood is over, a sync is served again and sees every message.
    let (status, page) = api.as_user(&b).get("/v1/sync?since=c0&limit=500").await;
    assert_eq!(status, 200, "{page}");
    let messages = page["events"].as_array().map_or(0, |events| {
        events.iter().filter(|e| e["type"] == "new_message").count()
    });
    assert_eq!(messages, 20 + SENDS, "{page}");
}
