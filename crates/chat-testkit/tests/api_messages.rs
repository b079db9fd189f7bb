//! chat-api: sending and paging messages, idempotency, read watermarks, unread counts.

use chat_testkit::{
    ApiClient, Stack, StackOptions, TestUser, Value, assert_error, assert_has_keys, assert_status,
    assert_time, id_of, json, unique_client_msg_id,
};

async fn stack() -> Stack {
    Stack::start(StackOptions::gateways(0)).await
}

const MESSAGE_KEYS: &[&str] = &[
    "id",
    "chat_id",
    "seq",
    "sender_id",
    "type",
    "text",
    "attachment",
    "reply_to_id",
    "client_msg_id",
    "created_at",
];

/// Two users and their private chat.
async fn pair(api: &ApiClient) -> (TestUser, TestUser, u64) {
    let a = api.new_user("ma").await;
    let b = api.new_user("mb").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");
    (a, b, chat)
}

fn seqs(body: &Value) -> Vec<u64> {
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {body}"))
        .iter()
        .map(|m| id_of(m, "seq"))
        .collect()
}

#[tokio::test]
async fn send_message_shape_and_retry() {
    let stack = stack().await;
    let api = stack.api();
    let (a, b, chat) = pair(&api).await;
    let as_a = api.as_user(&a);
    let path = format!("/v1/chats/{chat}/messages");
    let cmid = unique_client_msg_id("shape");

    let resp = as_a
        .post(&path, &json!({"client_msg_id": cmid, "text": "  hello  "}))
        .await;
    assert_status(&resp, 201, "send");
    assert_has_keys(&resp.1, &["message"], "send response");
    let msg = resp.1["message"].clone();
    assert_has_keys(&msg, MESSAGE_KEYS, "message");
    assert_eq!(msg["chat_id"], json!(chat));
    assert_eq!(msg["seq"], json!(1));
    assert_eq!(msg["sender_id"], json!(a.id));
    assert_eq!(msg["type"], json!("text"), "type defaults to text");
    assert_eq!(msg["text"], json!("hello"), "text is stored trimmed");
    assert_eq!(msg["attachment"], json!(null));
    assert_eq!(msg["reply_to_id"], json!(null));
    assert_eq!(msg["client_msg_id"], json!(cmid));
    assert_time(&msg["created_at"], "message.created_at");
    let msg_id = id_of(&msg, "id");

    // The retry gets 200 and the stored message, whatever its body says.
    let resp = as_a
        .post(&path, &json!({"client_msg_id": cmid, "text": "different"}))
        .await;
    assert_status(&resp, 200, "retry with the same client_msg_id");
    assert_eq!(
        resp.1["message"], msg,
        "the retry returns the stored message"
    );

    // Same client_msg_id from the other member is a different message.
    let resp = api
        .as_user(&b)
        .post(&path, &json!({"client_msg_id": cmid, "text": "from b"}))
        .await;
    assert_status(&resp, 201, "same client_msg_id, other sender");
    assert_ne!(id_of(&resp.1["message"], "id"), msg_id);
    assert_eq!(resp.1["message"]["seq"], json!(2));

    // Explicit type "text" and a reply.
    let resp = as_a
        .post(
            &path,
            &json!({"client_msg_id": unique_client_msg_id("r"), "type": "text",
                    "text": "re", "reply_to_id": msg_id}),
        )
        .await;
    assert_status(&resp, 201, "reply");
    assert_eq!(resp.1["message"]["reply_to_id"], json!(msg_id));
    assert_eq!(resp.1["message"]["seq"], json!(3));

    let page = as_a.get(&path).await;
    assert_status(&page, 200, "get messages");
    assert_eq!(seqs(&page.1), vec![1, 2, 3], "no duplicate from the retry");
    assert_eq!(
        page.1["messages"][0], msg,
        "GET returns the same message object"
    );
    assert_eq!(page.1["has_more"], json!(false));

    let chat_view = as_a.get(&format!("/v1/chats/{chat}")).await;
    assert_eq!(chat_view.1["last_seq"], json!(3));
    assert_eq!(chat_view.1["last_message"]["seq"], json!(3));
}

#[tokio::test]
async fn text_length_counts_characters() {
    let stack = stack().await;
    let api = stack.api();
    let (a, _, chat) = pair(&api).await;
    let as_a = api.as_user(&a);
    let path = format!("/v1/chats/{chat}/messages");
    let send = |text: String| {
        let as_a = as_a.clone();
        let path = path.clone();
        async move {
            as_a.post(
                &path,
                &json!({"client_msg_id": unique_client_msg_id("len"), "text": text}),
            )
            .await
        }
    };

    let resp = send("a".repeat(5000)).await;
    assert_status(&resp, 201, "5000 ASCII characters");
    assert_eq!(
        resp.1["message"]["text"]
            .as_str()
            .map(|t| t.chars().count()),
        Some(5000)
    );
    // 5000 characters of 2, 3 and 4 bytes: over 5000 bytes, still 5000 characters.
    for (ch, what) in [("é", "2-byte"), ("€", "3-byte"), ("😀", "4-byte")] {
        let text = ch.repeat(5000);
        let resp = send(text.clone()).await;
        assert_status(&resp, 201, &format!("5000 {what} characters"));
        assert_eq!(
            resp.1["message"]["text"],
            json!(text),
            "{what} text round trip"
        );
    }
    let resp = send(format!("  {}  ", "b".repeat(5000))).await;
    assert_status(
        &resp,
        201,
        "5000 characters plus surrounding spaces (trimmed)",
    );

    let resp = send("a".repeat(5001)).await;
    assert_error(&resp, 400, "invalid_input", "5001 ASCII characters");
    let resp = send("😀".repeat(5001)).await;
    assert_error(&resp, 400, "invalid_input", "5001 4-byte characters");
    for (text, what) in [
        ("", "empty text"),
        ("   ", "blank text"),
        ("\n\t  \n", "whitespace text"),
    ] {
        let resp = send(text.to_string()).await;
        assert_error(&resp, 400, "invalid_input", what);
    }
    let resp = as_a
        .post(&path, &json!({"client_msg_id": unique_client_msg_id("n")}))
        .await;
    assert_error(&resp, 400, "invalid_input", "text message without text");

    let page = as_a.get(&path).await;
    assert_eq!(
        seqs(&page.1),
        vec![1, 2, 3, 4, 5],
        "rejected sends took no seq"
    );
}

#[tokio::test]
async fn message_validation() {
    let stack = stack().await;
    let api = stack.api();
    let (a, b, chat) = pair(&api).await;
    let c = api.new_user("mc").await;
    let as_a = api.as_user(&a);
    let path = format!("/v1/chats/{chat}/messages");
    let other_chat = id_of(&as_a.private_chat(c.id).await, "id");
    let foreign = as_a
        .send_text(other_chat, &unique_client_msg_id("f"), "elsewhere")
        .await;
    let foreign_id = id_of(&foreign, "id");

    let bad = [
        (json!({"text": "x"}), "missing client_msg_id"),
        (
            json!({"client_msg_id": "", "text": "x"}),
            "empty client_msg_id",
        ),
        (
            json!({"client_msg_id": "c".repeat(65), "text": "x"}),
            "65-char client_msg_id",
        ),
        (
            json!({"client_msg_id": 17, "text": "x"}),
            "numeric client_msg_id",
        ),
        (json!({"client_msg_id": "v1", "text": 5}), "numeric text"),
        (
            json!({"client_msg_id": "v2", "type": "video", "text": "x"}),
            "unknown type",
        ),
        (
            json!({"client_msg_id": "v3", "type": "image"}),
            "image without attachment",
        ),
        (
            json!({"client_msg_id": "v4", "type": "file", "text": "f"}),
            "file without attachment",
        ),
        (
            json!({"client_msg_id": "v5", "type": "image", "attachment_id": 1}),
            "image before attachments exist",
        ),
        (
            json!({"client_msg_id": "v6", "text": "x", "reply_to_id": foreign_id}),
            "reply to a message of another chat",
        ),
        (
            json!({"client_msg_id": "v7", "text": "x", "reply_to_id": 999_999_999}),
            "reply to an unknown message",
        ),
    ];
    for (body, what) in bad {
        let resp = as_a.post(&path, &body).await;
        assert_error(&resp, 400, "invalid_input", what);
    }
    let resp = as_a.post_raw(&path, "{\"client_msg_id\":\"x\",").await;
    assert_error(&resp, 400, "invalid_input", "malformed JSON");

    let resp = as_a
        .post(
            &path,
            &json!({"client_msg_id": "c".repeat(64), "text": "ok"}),
        )
        .await;
    assert_status(&resp, 201, "64-char client_msg_id");
    assert_eq!(
        resp.1["message"]["seq"],
        json!(1),
        "rejected sends took no seq"
    );

    let resp = api
        .post(&path, &json!({"client_msg_id": "anon", "text": "x"}))
        .await;
    assert_error(&resp, 401, "unauthorized", "send without a token");
    let _ = b;
}

#[tokio::test]
async fn non_members_get_404_everywhere() {
    let stack = stack().await;
    let api = stack.api();
    let (a, _, chat) = pair(&api).await;
    let outsider = api.new_user("out").await;
    api.as_user(&a)
        .send_text(chat, &unique_client_msg_id("x"), "secret")
        .await;
    let as_out = api.as_user(&outsider);

    let checks = [
        as_out.get(&format!("/v1/chats/{chat}")).await,
        as_out.get(&format!("/v1/chats/{chat}/messages")).await,
        as_out
            .post(
                &format!("/v1/chats/{chat}/messages"),
                &json!({"client_msg_id": "o1", "text": "let me in"}),
            )
            .await,
        as_out.get(&format!("/v1/chats/{chat}/members")).await,
        as_out
            .post(&format!("/v1/chats/{chat}/read"), &json!({"up_to_seq": 1}))
            .await,
        as_out.post_empty(&format!("/v1/chats/{chat}/typing")).await,
        as_out
            .patch(&format!("/v1/chats/{chat}"), &json!({"pinned": true}))
            .await,
    ];
    let names = [
        "get chat",
        "get messages",
        "post message",
        "members",
        "read",
        "typing",
        "patch",
    ];
    for (resp, what) in checks.iter().zip(names) {
        assert_error(resp, 404, "not_found", &format!("non-member: {what}"));
    }
    // The same answer as for a chat that does not exist.
    let resp = as_out.get("/v1/chats/999999999/messages").await;
    assert_error(&resp, 404, "not_found", "messages of an unknown chat");
    let resp = as_out
        .post("/v1/chats/999999999/read", &json!({"up_to_seq": 1}))
        .await;
    assert_error(&resp, 404, "not_found", "read of an unknown chat");
    let page = api
        .as_user(&a)
        .get(&format!("/v1/chats/{chat}/messages"))
        .await;
    assert_eq!(seqs(&page.1), vec![1], "the outsider's post was not stored");
}

#[tokio::test]
async fn paging_before_after_limit() {
    let stack = stack().await;
    let api = stack.api();
    let (a, _, chat) = pair(&api).await;
    let as_a = api.as_user(&a);
    for i in 1..=7 {
        as_a.send_text(chat, &format!("page-{i}"), &format!("m{i}"))
            .await;
    }
    let base = format!("/v1/chats/{chat}/messages");
    let cases: [(&str, Vec<u64>, bool); 12] = [
        ("", vec![1, 2, 3, 4, 5, 6, 7], false),
        ("?limit=3", vec![5, 6, 7], true),
        ("?limit=7", vec![1, 2, 3, 4, 5, 6, 7], false),
        ("?before_seq=5&limit=3", vec![2, 3, 4], true),
        ("?before_seq=4&limit=3", vec![1, 2, 3], false),
        ("?before_seq=1", vec![], false),
        ("?after_seq=2&limit=3", vec![3, 4, 5], true),
        ("?after_seq=4&limit=3", vec![5, 6, 7], false),
        ("?after_seq=7", vec![], false),
        ("?after_seq=1&before_seq=7&limit=2", vec![5, 6], true),
        ("?after_seq=3&before_seq=7&limit=5", vec![4, 5, 6], false),
        ("?limit=100", vec![1, 2, 3, 4, 5, 6, 7], false),
    ];
    for (query, want, has_more) in cases {
        let resp = as_a.get(&format!("{base}{query}")).await;
        assert_status(&resp, 200, query);
        assert_eq!(seqs(&resp.1), want, "seqs for {query:?}: {}", resp.1);
        assert_eq!(
            resp.1["has_more"],
            json!(has_more),
            "has_more for {query:?}"
        );
        if let Some(first) = resp.1["messages"].get(0) {
            let seq = id_of(first, "seq");
            assert_eq!(
                first["text"],
                json!(format!("m{seq}")),
                "content of seq {seq}"
            );
        }
    }
    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=-1",
        "?limit=abc",
        "?after_seq=x",
    ] {
        let resp = as_a.get(&format!("{base}{query}")).await;
        assert_error(&resp, 400, "invalid_input", &format!("GET messages{query}"));
    }
}

#[tokio::test]
async fn paging_default_limit_is_50() {
    let stack = stack().await;
    let api = stack.api();
    let (a, b, chat) = pair(&api).await;
    let as_a = api.as_user(&a);
    let as_b = api.as_user(&b);
    // 55 messages from two concurrent senders.
    let (ra, rb) = tokio::join!(
        async {
            for i in 0..28 {
                as_a.send_text(chat, &format!("a{i}"), "x").await;
            }
        },
        async {
            for i in 0..27 {
                as_b.send_text(chat, &format!("b{i}"), "y").await;
            }
        }
    );
    let ((), ()) = (ra, rb);
    let resp = as_a.get(&format!("/v1/chats/{chat}/messages")).await;
    assert_status(&resp, 200, "default page");
    assert_eq!(seqs(&resp.1), (6..=55).collect::<Vec<u64>>(), "the last 50");
    assert_eq!(resp.1["has_more"], json!(true));
    let all = as_a.all_messages(chat).await;
    let all_seqs: Vec<u64> = all.iter().map(|m| id_of(m, "seq")).collect();
    assert_eq!(all_seqs, (1..=55).collect::<Vec<u64>>());
}

#[tokio::test]
async fn read_watermark_moves_forward_only() {
    let stack = stack().await;
    let api = stack.api();
    let (a, b, chat) = pair(&api).await;
    let as_a = api.as_user(&a);
    let as_b = api.as_user(&b);
    for i in 1..=4 {
        as_a.send_text(chat, &format!("w{i}"), "x").await;
    }
    let read = |who: &ApiClient, body: Value| {
        let who = who.clone();
        async move { who.post(&format!("/v1/chats/{chat}/read"), &body).await }
    };
    let watermark = |who: &ApiClient, user: u64| {
        let who = who.clone();
        async move {
            let resp = who.get(&format!("/v1/chats/{chat}")).await;
            assert_status(&resp, 200, "get chat");
            let member = resp.1["members"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["user_id"] == json!(user)).cloned())
                .unwrap_or_else(|| panic!("no member {user} in {}", resp.1));
            (
                id_of(&member, "last_read_seq"),
                id_of(&resp.1, "unread_count"),
            )
        }
    };

    // The sender's own watermark moved with the sends.
    assert_eq!(
        watermark(&as_a, a.id).await,
        (4, 0),
        "sender's watermark and unread"
    );
    assert_eq!(
        watermark(&as_b, b.id).await,
        (0, 4),
        "reader before reading"
    );

    assert_status(&read(&as_b, json!({"up_to_seq": 2})).await, 204, "read 2");
    assert_eq!(watermark(&as_b, b.id).await, (2, 2));
    assert_eq!(
        watermark(&as_a, b.id).await.0,
        2,
        "other members see the watermark"
    );
    assert_status(
        &read(&as_b, json!({"up_to_seq": 1})).await,
        204,
        "read 1 (backwards)",
    );
    assert_eq!(
        watermark(&as_b, b.id).await,
        (2, 2),
        "the watermark does not move back"
    );
    assert_status(
        &read(&as_b, json!({"up_to_seq": 2})).await,
        204,
        "read 2 again",
    );
    assert_status(
        &read(&as_b, json!({"up_to_seq": 1000})).await,
        204,
        "read past the end",
    );
    assert_eq!(watermark(&as_b, b.id).await, (4, 0), "capped at last_seq");

    as_a.send_text(chat, "w5", "x").await;
    assert_eq!(
        watermark(&as_b, b.id).await,
        (4, 1),
        "a new message is unread"
    );
    let list = as_b.get("/v1/chats").await;
    assert_eq!(
        list.1["chats"][0]["unread_count"],
        json!(1),
        "unread in the chat list"
    );

    assert_status(&read(&as_b, json!({"up_to_seq": 0})).await, 204, "read 0");
    for (body, what) in [
        (json!({"up_to_seq": -1}), "negative"),
        (json!({}), "missing up_to_seq"),
        (json!({"up_to_seq": "3"}), "string up_to_seq"),
    ] {
        let resp = read(&as_b, body).await;
        assert_error(&resp, 400, "invalid_input", what);
    }
    let resp = as_b.post_raw(&format!("/v1/chats/{chat}/read"), "{").await;
    assert_error(&resp, 400, "invalid_input", "malformed read JSON");
    assert_eq!(
        watermark(&as_b, b.id).await,
        (4, 1),
        "bad reads changed nothing"
    );
}

#[tokio::test]
async fn typing_endpoint() {
    let stack = stack().await;
    let api = stack.api();
    let (a, _, chat) = pair(&api).await;
    let resp = api
        .as_user(&a)
        .post_empty(&format!("/v1/chats/{chat}/typing"))
        .await;
    assert_status(&resp, 204, "typing");
    let resp = api.post_empty(&format!("/v1/chats/{chat}/typing")).await;
    assert_error(&resp, 401, "unauthorized", "typing without a token");
}

/// The send path's histograms count what it did: three sends, each checked once; and the send
/// writer's, each send waited once and stored in a transaction that published, in at most three
/// batches. The writer is MySQL's: on SQLite (chat-embedded) each send is its own transaction
/// and the writer's series do not exist.
#[tokio::test]
async fn send_writer_histograms_count_the_sends() {
    let stack = stack().await;
    let api = stack.api();
    let (a, _b, chat) = pair(&api).await;
    let as_a = api.as_user(&a);
    let path = format!("/v1/chats/{chat}/messages");
    for n in 0..3 {
        let cmid = unique_client_msg_id(&format!("hist{n}"));
        let resp = as_a
            .post(&path, &json!({"client_msg_id": cmid, "text": "counted"}))
            .await;
        assert_status(&resp, 201, "send");
    }
    let resp = api.get("/metrics").await;
    assert_status(&resp, 200, "metrics");
    let text = resp.1.as_str().unwrap_or_default().to_string();
    let count = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from chat-api's /metrics:\n{text}"))
    };
    assert_eq!(count("chat_api_send_checked_seconds_count"), 3.0);
    if stack.is_embedded() {
        for writer_series in [
            "chat_api_send_wait_seconds",
            "chat_api_send_transaction_seconds",
            "chat_api_send_publish_seconds",
            "chat_api_send_batch_sends",
        ] {
            assert!(
                !text.contains(writer_series),
                "SQLite has no send writer to time:\n{text}"
            );
        }
        return;
    }
    assert_eq!(count("chat_api_send_wait_seconds_count"), 3.0);
    let batches = count("chat_api_send_transaction_seconds_count");
    assert!((1.0..=3.0).contains(&batches), "{batches} transactions");
    assert_eq!(count("chat_api_send_publish_seconds_count"), batches);
    assert_eq!(count("chat_api_send_batch_sends_count"), batches);
    assert!(count("chat_api_send_transaction_seconds_sum") > 0.0);
}

/// A send checks its token against the revocation list in the same round trip as its rate
/// limit: a logged-out token is refused and stores nothing; the user's other session sends.
#[tokio::test]
async fn a_revoked_token_cannot_send() {
    let stack = stack().await;
    let api = stack.api();
    let (a, _b, chat) = pair(&api).await;
    let (_, second) = api.login(&a.username, &a.password).await;
    let resp = api.as_user(&a).post_empty("/v1/auth/logout").await;
    assert_status(&resp, 204, "logout");
    let path = format!("/v1/chats/{chat}/messages");
    let body = |tag: &str| json!({"client_msg_id": unique_client_msg_id(tag), "text": "hi"});
    let resp = api.as_user(&a).post(&path, &body("revoked")).await;
    assert_error(&resp, 401, "unauthorized", "send with a revoked token");
    let resp = api.with_token(&second).post(&path, &body("other")).await;
    assert_status(&resp, 201, "send with the other session's token");
    assert_eq!(
        resp.1["message"]["seq"],
        json!(1),
        "the refused send stored nothing"
    );
}
