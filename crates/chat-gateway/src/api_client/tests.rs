//! Tests of `api_client`.

use super::*;
use chat_proto::{MessageKind, PresenceStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub(crate) fn client(base: &str) -> anyhow::Result<Arc<ApiClient>> {
    ApiClient::new(
        base,
        InternalCredential::Key("k".into()),
        "gw-test".into(),
        GatewayMetrics::register(),
        Pacing::new(4, Duration::from_secs(5)),
        64,
    )
}

/// A one-shot chat-api on a real socket: answers one request with `status` and `body`, and
/// hands back the request it read.
async fn one_answer(status: &str, body: &str) -> (String, tokio::task::JoinHandle<String>) {
    let (status, body) = (status.to_string(), body.to_string());
    let (base, mut requests) = serve(move |_| (status.clone(), body.clone())).await;
    let served = tokio::spawn(async move { requests.recv().await.expect("one request") });
    (base, served)
}

/// A scripted chat-api on a real socket: answers each request with what `answer` makes of
/// it (status line, JSON body), one request per connection, and passes every request on.
pub(crate) async fn serve<F>(answer: F) -> (String, mpsc::UnboundedReceiver<String>)
where
    F: Fn(&str) -> (String, String) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let request = read_request(&mut socket).await;
            let (status, body) = answer(&request);
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.expect("write");
            let _ = tx.send(request);
        }
    });
    (base, rx)
}

/// The head, then as much body as it announces.
async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.expect("read");
        request.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&request).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse::<usize>().expect("length"));
            if request.len() >= head_end + 4 + length {
                return text;
            }
        }
        assert!(n > 0, "the client hung up mid-request: {text}");
    }
}

#[tokio::test]
async fn requests_beyond_the_connection_bound_wait_for_a_turn() {
    use std::sync::atomic::AtomicUsize;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (open_, most_) = (open.clone(), most.clone());
    // Answers each request on its connection 50 ms later, then closes it: a slow chat-api.
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (open, most) = (open_.clone(), most_.clone());
            tokio::spawn(async move {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                read_request(&mut socket).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                open.fetch_sub(1, Ordering::SeqCst);
                let response = "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    let api = ApiClient::new(
        &base,
        InternalCredential::Key("k".into()),
        "gw-test".into(),
        GatewayMetrics::register(),
        Pacing::new(4, Duration::from_secs(5)),
        3,
    )
    .expect("client");
    let reads: Vec<_> = (0..12)
        .map(|seq| {
            let api = api.clone();
            tokio::spawn(async move { api.mark_read("t", 1, seq).await })
        })
        .collect();
    for read in reads {
        assert!(
            matches!(read.await.expect("task"), ApiReply::Done(None)),
            "every request is answered"
        );
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "never more than the bound at once, and the bound used"
    );
}

#[test]
fn only_plain_http_base_urls_are_accepted() {
    assert!(client("http://chat-api:8080").is_ok());
    assert!(client("http://chat-api:8080/").is_ok());
    let https = client("https://chat-api:8080")
        .err()
        .expect("https refused");
    assert!(https.to_string().contains("plain HTTP"), "{https}");
    assert!(client("chat-api:8080").is_err(), "no scheme");
    assert!(client("/v1").is_err(), "no host");
    assert!(client("http://chat-api:8080/?x=1").is_err(), "query");
}

#[tokio::test]
async fn a_send_goes_as_the_user_and_its_stored_message_comes_back() {
    let stored = Message {
        id: 7,
        chat_id: 3,
        seq: 1,
        sender_id: 2,
        kind: MessageKind::Text,
        text: Some("hi".into()),
        attachment: None,
        reply_to_id: None,
        client_msg_id: "c1".into(),
        created_at: chrono::Utc::now(),
        edited_at: None,
        deleted_at: None,
    };
    let answer = serde_json::to_string(&MessageBody { message: stored }).expect("json");
    let (base, served) = one_answer("201 Created", &answer).await;
    let api = client(&format!("{base}/prefix/")).expect("client");
    let body: SendMessageRequest =
        serde_json::from_str(r#"{"client_msg_id":"c1","text":"hi"}"#).expect("request");
    let reply = api.send_message("tok.en", 3, &body).await;
    let request = served.await.expect("served");
    assert!(
        request.starts_with("POST /prefix/v1/chats/3/messages HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains("authorization: Bearer tok.en\r\n"),
        "{request}"
    );
    assert!(
        request.contains("content-type: application/json\r\n"),
        "{request}"
    );
    assert!(request.ends_with(r#""text":"hi"}"#), "{request}");
    match reply {
        ApiReply::Done(Some(message)) => assert_eq!((message.id, message.seq), (7, 1)),
        other => panic!("expected the stored message, got {other:?}"),
    }
}

#[tokio::test]
async fn chat_api_errors_keep_their_code_and_other_failures_get_one() {
    let (base, served) = one_answer(
        "403 Forbidden",
        r#"{"error":{"code":"forbidden","message":"not a member"}}"#,
    )
    .await;
    match client(&base).expect("client").typing("t", 1).await {
        ApiReply::Failed { code, message } => {
            assert_eq!(
                (code, message.as_str()),
                (ErrorCode::Forbidden, "not a member")
            );
        }
        other => panic!("expected forbidden, got {other:?}"),
    }
    let request = served.await.expect("served");
    assert!(
        !request.contains("content-type"),
        "typing has no body: {request}"
    );

    let (base, _served) = one_answer("502 Bad Gateway", "oops").await;
    match client(&base).expect("client").sync("t", "c").await {
        Err((code, message)) => {
            assert_eq!(code, ErrorCode::from_http_status(502));
            assert!(message.contains("502"), "{message}");
        }
        Ok(page) => panic!("expected an error, got {page:?}"),
    }

    // Nothing listens on the port any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    match client(&base).expect("client").mark_read("t", 1, 5).await {
        ApiReply::Failed { code, .. } => assert_eq!(code, ErrorCode::Unavailable),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_spread_over_replicas_and_skip_one_that_refuses_connections() {
    let (live, mut served) = serve(|_| ("204 No Content".into(), String::new())).await;
    let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone_base = format!("http://{}", gone.local_addr().expect("addr"));
    drop(gone);
    let api = client(&format!("{gone_base}, {live}")).expect("client");
    // Even a typing notice, which is never sent twice, goes on when a connection is refused.
    for _ in 0..4 {
        let reply = api.typing("t", 7).await;
        assert!(matches!(reply, ApiReply::Done(None)), "{reply:?}");
    }
    for _ in 0..4 {
        let request = served
            .recv()
            .await
            .expect("a request reached the live replica");
        assert!(request.starts_with("POST /v1/chats/7/typing"), "{request}");
    }
    assert!(client(" , ").is_err(), "an empty list is refused");
}

/// A status line followed by `retry-after: <secs>` (the scripted server writes the status
/// verbatim into the head).
fn unavailable_with_retry_after(secs: u64) -> String {
    format!("503 Service Unavailable\r\nretry-after: {secs}")
}

const ADMISSION_REFUSAL: &str =
    r#"{"error":{"code":"unavailable","message":"too many sync requests in progress"}}"#;

#[tokio::test]
async fn a_sync_refused_by_admission_is_asked_again_after_retry_after() {
    let asked = Arc::new(AtomicUsize::new(0));
    let (base, mut served) = serve({
        let asked = asked.clone();
        move |_| {
            if asked.fetch_add(1, Ordering::SeqCst) < 2 {
                (unavailable_with_retry_after(0), ADMISSION_REFUSAL.into())
            } else {
                (
                    "200 OK".into(),
                    r#"{"events":[],"cursor":"c9","has_more":false}"#.into(),
                )
            }
        }
    })
    .await;
    let page = client(&base)
        .expect("client")
        .sync("t", "c1")
        .await
        .expect("the third attempt is answered");
    assert_eq!(page.cursor, "c9");
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    for _ in 0..3 {
        let request = served.recv().await.expect("served");
        assert!(request.starts_with("GET /v1/sync?since=c1&"), "{request}");
    }
}

#[tokio::test]
async fn a_sync_refused_until_the_deadline_fails_as_unavailable() {
    let (base, _served) =
        serve(|_| (unavailable_with_retry_after(1), ADMISSION_REFUSAL.into())).await;
    let api = ApiClient::new(
        &base,
        InternalCredential::Key("k".into()),
        "gw-test".into(),
        GatewayMetrics::register(),
        Pacing::new(1, Duration::from_millis(500)),
        64,
    )
    .expect("client");
    let started = Instant::now();
    match api.sync("t", "c1").await {
        Err((code, _)) => assert_eq!(code, ErrorCode::Unavailable),
        Ok(page) => panic!("expected unavailable, got {page:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no retry starts past the deadline"
    );
}

#[tokio::test]
async fn a_send_refused_by_admission_is_retried_and_other_503s_are_not() {
    let asked = Arc::new(AtomicUsize::new(0));
    let (base, _served) = serve({
        let asked = asked.clone();
        move |_| {
            if asked.fetch_add(1, Ordering::SeqCst) == 0 {
                (unavailable_with_retry_after(0), ADMISSION_REFUSAL.into())
            } else {
                ("204 No Content".into(), String::new())
            }
        }
    })
    .await;
    let reply = client(&base).expect("client").mark_read("t", 1, 5).await;
    assert!(matches!(reply, ApiReply::Done(None)), "{reply:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 2);

    // Without Retry-After (the database is unreachable) the client hears of it at once.
    let asked = Arc::new(AtomicUsize::new(0));
    let (base, _served) = serve({
        let asked = asked.clone();
        move |_| {
            asked.fetch_add(1, Ordering::SeqCst);
            (
                "503 Service Unavailable".into(),
                r#"{"error":{"code":"unavailable","message":"the database is unavailable"}}"#
                    .into(),
            )
        }
    })
    .await;
    let reply = client(&base).expect("client").mark_read("t", 1, 5).await;
    assert!(
        matches!(
            reply,
            ApiReply::Failed {
                code: ErrorCode::Unavailable,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_sync_cursor_is_sent_url_encoded() {
    let (base, served) = one_answer("401 Unauthorized", "").await;
    let refused = client(&base).expect("client").sync("t", "a b&c=d").await;
    assert!(
        matches!(refused, Err((ErrorCode::Unauthorized, _))),
        "{refused:?}"
    );
    let request = served.await.expect("served");
    assert!(
        request.starts_with("GET /v1/sync?since=a+b%26c%3Dd&limit=500 HTTP/1.1\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn a_presence_batch_goes_with_the_internal_key_and_a_404_means_unsupported() {
    let (base, served) = one_answer("204 No Content", "").await;
    let batch = PresenceBatch {
        changes: vec![
            PresenceChange {
                user_id: 5,
                status: PresenceStatus::Online,
            },
            PresenceChange {
                user_id: 5,
                status: PresenceStatus::Offline,
            },
        ],
    };
    let api = client(&base).expect("client");
    api.presence_batch(&batch).await.expect("taken");
    let request = served.await.expect("served");
    assert!(
        request.starts_with("POST /internal/v1/presence/batch HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains("x-chat-internal-key: k\r\n"), "{request}");
    assert!(
        request.ends_with(
            r#"{"changes":[{"user_id":5,"status":"online"},{"user_id":5,"status":"offline"}]}"#
        ),
        "{request}"
    );

    let (base, _served) = one_answer("404 Not Found", "").await;
    let refused = client(&base).expect("client").presence_batch(&batch).await;
    assert!(
        matches!(refused, Err(NoticeError::Unsupported)),
        "{refused:?}"
    );
    let (base, _served) = one_answer("503 Service Unavailable", "").await;
    let refused = client(&base).expect("client").presence_batch(&batch).await;
    assert!(
        matches!(refused, Err(NoticeError::Failed(_))),
        "{refused:?}"
    );
}
