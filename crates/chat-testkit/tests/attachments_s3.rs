//! Attachments on S3-compatible storage (`CHAT_ATTACHMENTS_STORE=s3`) against a local S3 mock,
//! moto's `moto_server`. Ignored by default because the mock is not part of the stack the kit
//! provisions; run with `cargo test -p chat-testkit --test attachments_s3 -- --ignored` where
//! `moto_server` is on PATH (`pip install 'moto[server]'`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat_testkit::{Stack, StackOptions, id_of, json};
use sha2::{Digest, Sha256};

const BUCKET: &str = "chat-attachments-test";

/// The mock server, killed when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("picking a port: {e}"));
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting moto_server (pip install 'moto[server]'): {e}"));
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(resp) = http.put(format!("{}/{BUCKET}", moto.url)).send().await
            && resp.status().is_success()
        {
            return moto;
        }
        assert!(Instant::now() < deadline, "moto_server did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server on PATH"]
async fn attachments_round_trip_through_an_s3_bucket() {
    let moto = start_moto().await;
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    let stack = Stack::start(StackOptions {
        api_env: vec![
            env("CHAT_ATTACHMENTS_STORE", "s3"),
            env("CHAT_S3_BUCKET", BUCKET),
            env("CHAT_S3_ENDPOINT", &moto.url),
            env("AWS_ACCESS_KEY_ID", "test"),
            env("AWS_SECRET_ACCESS_KEY", "test"),
        ],
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend((0..3_000_000u32).map(|i| (i % 251) as u8));
    let (status, uploaded) = api
        .with_token(&alice.token)
        .request_raw(
            reqwest::Method::POST,
            "/v1/attachments",
            Some(bytes.clone()),
            None,
        )
        .await;
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!(uploaded["content_type"], json!("application/pdf"));
    assert_eq!(
        uploaded["sha256"],
        json!(hex::encode(Sha256::digest(&bytes)))
    );
    let id = id_of(&uploaded, "id");

    let get = |range: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .get(format!("{}/v1/attachments/{id}", stack.api_url()))
            .bearer_auth(&alice.token);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send()
    };
    let full = get(None).await.unwrap_or_else(|e| panic!("GET: {e}"));
    assert_eq!(full.status().as_u16(), 200);
    let body = full.bytes().await.unwrap_or_default();
    assert!(
        body.as_ref() == bytes.as_slice(),
        "byte-identical from the bucket"
    );
    let part = get(Some("bytes=2000000-2000099"))
        .await
        .unwrap_or_else(|e| panic!("GET range: {e}"));
    assert_eq!(part.status().as_u16(), 206);
    let body = part.bytes().await.unwrap_or_default();
    assert!(
        body.as_ref() == &bytes[2_000_000..2_000_100],
        "the exact slice"
    );
    // Nothing but the (empty) staging directory stays on local disk.
    let local: Vec<_> = std::fs::read_dir(stack.attachments_dir().join(".incoming"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(local.is_empty(), "staging files removed: {local:?}");
    let entries: Vec<_> = std::fs::read_dir(stack.attachments_dir())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        entries,
        vec![".incoming"],
        "the object went to the bucket, not the disk"
    );
}
