//! Attachments: upload as a raw body, type sniffed from the bytes, download byte-identical with
//! Range support, access only for the uploader and members of chats where it was sent (404 for
//! everyone else), image/file messages that carry the metadata, and an oversize upload that is
//! refused with 413 and leaves no file and no row behind.

use std::path::Path;
use std::time::Duration;

use chat_testkit::{
    ApiClient, Stack, TestUser, Value, WsClient, assert_error, assert_status, id_of, json,
    unique_client_msg_id,
};
use sha2::{Digest, Sha256};

/// A PNG signature and header followed by pseudo-random bytes: sniffed as image/png.
fn png_bytes(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec();
    let mut x: u32 = 0x1234_5678;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push((x & 0xff) as u8);
    }
    bytes
}

/// A multipart/form-data body with a text field, then the file in the field `file`.
fn multipart_body(file: &[u8], claimed: &str) -> (String, Vec<u8>) {
    let boundary = "chat-test-boundary-7d1f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\nhello\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\
             Content-Type: {claimed}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Download {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

fn header<'a>(d: &'a Download, name: &str) -> &'a str {
    d.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn upload(api: &ApiClient, user: &TestUser, bytes: Vec<u8>, claimed: &str) -> (u16, Value) {
    api.with_token(&user.token)
        .request_raw(
            reqwest::Method::POST,
            "/v1/attachments",
            Some(bytes),
            Some(("content-type", claimed)),
        )
        .await
}

/// A POST that declares `content_length` bytes of PNG and asks to continue first
/// (`Expect: 100-continue`, as curl does for large bodies), over plain TCP: the status and JSON
/// body of the answer, which must come without any of the body being sent.
async fn declared_upload_waiting_to_continue(
    stack: &Stack,
    user: &TestUser,
    content_length: usize,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = stack.api_url().replace("http://", "");
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let head = format!(
        "POST /v1/attachments HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: image/png\r\ncontent-length: {content_length}\r\n\
         expect: 100-continue\r\n\r\n",
        user.token
    );
    stream
        .write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("writing the request head: {e}"));
    let mut answer = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(complete) = parsed_response(&answer) {
                return complete;
            }
            let n = stream
                .read(&mut chunk)
                .await
                .unwrap_or_else(|e| panic!("reading the answer: {e}"));
            assert!(
                n > 0,
                "closed before a whole answer: {:?}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer without the body within 10 s (the server waited for the body?)")
}

/// Status and JSON body of a complete HTTP/1.1 response with a content-length, if `raw` holds one.
fn parsed_response(raw: &[u8]) -> Option<(u16, Value)> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..head_end]).expect("an ASCII response head");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("a content-length: {head}"));
    let body = raw.get(head_end..head_end + length)?;
    Some((status, serde_json::from_slice(body).unwrap_or(Value::Null)))
}

async fn download(stack: &Stack, user: &TestUser, id: u64, range: Option<&str>) -> Download {
    let mut request = reqwest::Client::new()
        .get(format!("{}/v1/attachments/{id}", stack.api_url()))
        .bearer_auth(&user.token);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET attachment {id}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("reading attachment {id}: {e}"))
        .to_vec();
    Download {
        status,
        headers,
        body,
    }
}

async fn send(api: &ApiClient, user: &TestUser, chat_id: u64, body: Value) -> (u16, Value) {
    api.with_token(&user.token)
        .post(&format!("/v1/chats/{chat_id}/messages"), &body)
        .await
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

async fn attachment_rows(stack: &Stack) -> i64 {
    stack
        .count_rows("attachments")
        .await
        .unwrap_or_else(|e| panic!("counting attachments: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_round_trips_with_ranges_and_reaches_members_only() {
    let stack = Stack::start_default().await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;

    let bytes = png_bytes(300_000);
    // The header lies; the bytes say PNG.
    let (status, uploaded) = upload(&api, &alice, bytes.clone(), "text/html").await;
    assert_eq!(status, 201, "upload: {uploaded}");
    let id = id_of(&uploaded, "id");
    assert_eq!(uploaded["size"], json!(bytes.len()));
    assert_eq!(
        uploaded["content_type"],
        json!("image/png"),
        "sniffed, not claimed"
    );
    assert_eq!(uploaded["sha256"], json!(sha256_hex(&bytes)));
    assert_eq!(uploaded["url"], json!(format!("/v1/attachments/{id}")));

    // The uploader reads it back byte for byte.
    let own = download(&stack, &alice, id, None).await;
    assert_eq!(own.status, 200);
    assert_eq!(header(&own, "content-type"), "image/png");
    assert_eq!(header(&own, "accept-ranges"), "bytes");
    assert_eq!(sha256_hex(&own.body), sha256_hex(&bytes));
    assert!(own.body == bytes, "byte-identical");

    // Not sent anywhere yet: bob cannot see it, and it does not exist for him.
    assert_eq!(download(&stack, &bob, id, None).await.status, 404);

    let chat_id = id_of(&api.as_user(&alice).private_chat(bob.id).await, "id");
    let mut bob_ws = WsClient::authed(&stack.gateway_ws_url(0), &bob.token).await;
    let (status, sent) = send(
        &api,
        &alice,
        chat_id,
        json!({"client_msg_id": unique_client_msg_id("img"), "type": "image",
               "attachment_id": id, "text": "  the view  "}),
    )
    .await;
    assert_eq!(status, 201, "image message: {sent}");
    let message = &sent["message"];
    assert_eq!(message["type"], json!("image"));
    assert_eq!(message["text"], json!("the view"));
    assert_eq!(
        message["attachment"], uploaded,
        "the message carries the metadata"
    );

    let event = bob_ws
        .recv_until("new_message", Duration::from_secs(5))
        .await;
    assert_eq!(
        event["message"]["attachment"], uploaded,
        "the event carries it too"
    );
    let history = api.as_user(&bob).all_messages(chat_id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["attachment"], uploaded, "and the history");
    let sync = api.as_user(&bob).get("/v1/sync?since=c0").await;
    assert_status(&sync, 200, "sync");
    let synced: Vec<&Value> = sync.1["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == json!("new_message"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(synced.len(), 1, "{}", sync.1);
    assert_eq!(synced[0]["message"]["attachment"], uploaded, "and sync");
    let chat = api.as_user(&bob).get(&format!("/v1/chats/{chat_id}")).await;
    assert_eq!(
        chat.1["last_message"]["attachment"], uploaded,
        "and the chat's last message"
    );

    // A member of the chat may read it now, ranges included.
    let full = download(&stack, &bob, id, None).await;
    assert_eq!(full.status, 200);
    assert!(full.body == bytes, "bob gets the same bytes");
    let slice = download(&stack, &bob, id, Some("bytes=1000-1999")).await;
    assert_eq!(slice.status, 206);
    assert_eq!(
        header(&slice, "content-range"),
        format!("bytes 1000-1999/{}", bytes.len())
    );
    assert_eq!(header(&slice, "content-length"), "1000");
    assert!(slice.body == bytes[1000..2000], "the exact slice");
    let tail = download(&stack, &bob, id, Some("bytes=-10")).await;
    assert_eq!(tail.status, 206);
    assert!(tail.body == bytes[bytes.len() - 10..], "the last ten bytes");
    let open = download(&stack, &bob, id, Some("bytes=299990-")).await;
    assert_eq!(open.status, 206);
    assert!(open.body == bytes[299_990..]);
    let beyond = download(&stack, &bob, id, Some(&format!("bytes={}-", bytes.len()))).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(
        header(&beyond, "content-range"),
        format!("bytes */{}", bytes.len())
    );
    let backwards = download(&stack, &bob, id, Some("bytes=9-3")).await;
    assert_eq!(backwards.status, 416);
    // RFC 9110 §14.2: an unknown range unit is ignored, the whole file comes back.
    let other_unit = download(&stack, &bob, id, Some("items=0-1")).await;
    assert_eq!(other_unit.status, 200);
    assert!(
        other_unit.body == bytes,
        "the whole file for an unknown unit"
    );

    // A non-member gets 404 (the same as for an id that does not exist), never 403.
    let stranger = download(&stack, &carol, id, None).await;
    assert_eq!(stranger.status, 404);
    let error: Value = serde_json::from_slice(&stranger.body).unwrap_or(Value::Null);
    assert_eq!(error["error"]["code"], json!("not_found"), "{error}");
    assert_eq!(download(&stack, &carol, id + 1000, None).await.status, 404);
    assert_eq!(
        download(&stack, &carol, id, Some("bytes=0-1")).await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reference_only_own_attachments_of_the_right_kind() {
    let stack = Stack::start_default().await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let chat_id = id_of(&api.as_user(&alice).private_chat(bob.id).await, "id");

    let pdf = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n".to_vec();
    let (status, pdf_meta) = upload(&api, &alice, pdf.clone(), "image/png").await;
    assert_eq!(status, 201);
    assert_eq!(pdf_meta["content_type"], json!("application/pdf"));
    let pdf_id = id_of(&pdf_meta, "id");
    let (status, blob_meta) = upload(&api, &alice, b"just some text".to_vec(), "image/jpeg").await;
    assert_eq!(status, 201);
    assert_eq!(blob_meta["content_type"], json!("application/octet-stream"));
    let (status, bobs) = upload(&api, &bob, png_bytes(100), "image/png").await;
    assert_eq!(status, 201);

    let attempt = |kind: &str, attachment: Option<u64>| {
        let mut body = json!({"client_msg_id": unique_client_msg_id(kind), "type": kind});
        if let Some(id) = attachment {
            body["attachment_id"] = json!(id);
        }
        body
    };
    let resp = send(&api, &alice, chat_id, attempt("image", Some(pdf_id))).await;
    assert_error(&resp, 400, "invalid_input", "an image message with a PDF");
    let resp = send(&api, &alice, chat_id, attempt("file", None)).await;
    assert_error(
        &resp,
        400,
        "invalid_input",
        "a file message without attachment_id",
    );
    let resp = send(
        &api,
        &alice,
        chat_id,
        attempt("file", Some(id_of(&bobs, "id"))),
    )
    .await;
    assert_error(&resp, 400, "invalid_input", "someone else's attachment");
    let resp = send(&api, &alice, chat_id, attempt("file", Some(99_999_999))).await;
    assert_error(&resp, 400, "invalid_input", "an unknown attachment");
    let mut text_with_file = attempt("text", Some(pdf_id));
    text_with_file["text"] = json!("hi");
    let resp = send(&api, &alice, chat_id, text_with_file).await;
    assert_error(
        &resp,
        400,
        "invalid_input",
        "a text message with an attachment",
    );

    let (status, sent) = send(&api, &alice, chat_id, attempt("file", Some(pdf_id))).await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["message"]["attachment"], pdf_meta);
    assert!(sent["message"]["text"].is_null(), "no caption: {sent}");
    let got = download(&stack, &bob, pdf_id, None).await;
    assert_eq!(got.status, 200);
    assert_eq!(header(&got, "content-type"), "application/pdf");
    assert!(got.body == pdf);

    let (status, _) = upload(&api, &alice, Vec::new(), "image/png").await;
    assert_eq!(status, 400, "an empty file");
    let anonymous = api
        .anonymous()
        .request_raw(reqwest::Method::POST, "/v1/attachments", Some(pdf), None)
        .await;
    assert_status(&anonymous, 401, "upload without a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_stores_the_file_field() {
    let stack = Stack::start_default().await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    // Larger than the 1 MiB JSON body limit, which must not apply here.
    let bytes = png_bytes(2 * 1024 * 1024 + 17);
    let (content_type, body) = multipart_body(&bytes, "application/x-msdownload");
    let (status, uploaded) = upload(&api, &alice, body, &content_type).await;
    assert_eq!(status, 201, "multipart upload: {uploaded}");
    assert_eq!(
        uploaded["size"],
        json!(bytes.len()),
        "only the file field is stored"
    );
    assert_eq!(uploaded["content_type"], json!("image/png"));
    assert_eq!(uploaded["sha256"], json!(sha256_hex(&bytes)));
    let back = download(&stack, &alice, id_of(&uploaded, "id"), None).await;
    assert!(back.body == bytes, "byte-identical");

    let (content_type, body) = multipart_body(b"", "text/plain");
    let (status, _) = upload(&api, &alice, body, &content_type).await;
    assert_eq!(status, 400, "an empty file field");
    let (status, _) = upload(
        &api,
        &alice,
        b"--nope--".to_vec(),
        "multipart/form-data; boundary=x",
    )
    .await;
    assert_eq!(status, 400, "a broken multipart body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_upload_gets_413_and_leaves_nothing_behind() {
    // The default limit, 25 MiB.
    let stack = Stack::start_default().await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    let limit = 25 * 1024 * 1024;

    // Exactly at the limit is fine (and proves files do land where we look).
    let (status, at_limit) = upload(&api, &alice, png_bytes(limit), "image/png").await;
    assert_eq!(status, 201, "{at_limit}");
    let stored = files_under(&stack.attachments_dir());
    assert_eq!(stored.len(), 1, "one stored file: {stored:?}");
    assert_eq!(attachment_rows(&stack).await, 1);

    // Declared too large by a client that waits to continue: refused before any body is sent.
    let resp = declared_upload_waiting_to_continue(&stack, &alice, limit + 1).await;
    assert_error(&resp, 413, "too_large", "declared, waiting to continue");

    // Declared too large and sent whole at once: the server reads the body away before it
    // answers, so the client gets the 413 and not a reset from a close while it still writes.
    let resp = upload(&api, &alice, png_bytes(limit + 1), "image/png").await;
    assert_error(&resp, 413, "too_large", "declared, sent whole");

    // Streamed without a length: refused once the count passes the limit.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = png_bytes(limit + 64 * 1024)
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/attachments", stack.api_url()))
        .bearer_auth(&alice.token)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // Refused mid-stream, the rest is read away too: an answer, not a reset.
    let response = response.unwrap_or_else(|e| panic!("streamed oversize upload: {e:?}"));
    assert_eq!(response.status().as_u16(), 413, "streamed oversize upload");
    // As a multipart form: the file field is counted the same way.
    let (content_type, body) = multipart_body(&png_bytes(limit + 1), "image/png");
    let resp = upload(&api, &alice, body, &content_type).await;
    assert_error(&resp, 413, "too_large", "a 25 MiB + 1 byte multipart file");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = reqwest::get(format!("{}/metrics", stack.api_url()))
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l == "chat_attachments_rejected_total{reason=\"too_large\"} 4"),
        "the two declared, the streamed and the multipart uploads were all refused:\n{metrics}"
    );
    let after = files_under(&stack.attachments_dir());
    assert_eq!(after, stored, "no file left behind by the refused uploads");
    assert_eq!(attachment_rows(&stack).await, 1, "no row left behind");
}
