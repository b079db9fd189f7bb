use super::*;
use tokio::net::TcpListener;

#[test]
fn the_accept_key_is_rfc_6455s() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn targets_need_ws_and_a_numeric_address() {
    let t = Target::parse("ws://127.0.0.1:18281/ws").expect("parses");
    assert_eq!(t.addr.port(), 18281);
    assert_eq!(t.authority, "127.0.0.1:18281");
    assert_eq!(t.path, "/ws");
    assert_eq!(Target::parse("ws://127.0.0.1:1").expect("parses").path, "/");
    assert!(Target::parse("wss://127.0.0.1:1/ws").is_err());
    assert!(Target::parse("ws://localhost:1/ws").is_err());
}

/// A server that answers the upgrade and puts a text frame in the same write, as the gateway
/// does with `?token=`: the frame must not be lost with the response's buffer.
async fn one_shot_server(status: &'static str, with_frame: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 2048];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).to_string();
        assert!(text.starts_with("GET /ws?token=t HTTP/1.1\r\n"), "{text}");
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("key")
            .trim()
            .to_string();
        let mut out = format!(
            "HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&key)
        )
        .into_bytes();
        if with_frame {
            let body = br#"{"type":"auth_ok","user_id":1}"#;
            out.push(0x81);
            out.push(body.len() as u8);
            out.extend_from_slice(body);
        }
        s.write_all(&out).await.expect("write");
        // Keep the socket open while the client reads.
        let _ = s.read(&mut buf).await;
    });
    addr
}

#[tokio::test]
async fn a_frame_sent_with_the_101_is_read_first() {
    let addr = one_shot_server("101 Switching Protocols", true).await;
    let target = Target::parse(&format!("ws://{addr}/ws")).expect("target");
    let (rd, _wr) = connect(&target, Ipv4Addr::LOCALHOST, "?token=t")
        .await
        .expect("upgrade");
    let (_rd, frame) = next(rd).await;
    let frame = frame.expect("frame");
    assert_eq!(frame.opcode, OpCode::Text);
    let parsed = crate::frames::parse(&frame.payload).expect("json");
    assert_eq!(parsed.kind, "auth_ok");
}

#[tokio::test]
async fn a_refused_upgrade_reports_its_status() {
    let addr = one_shot_server("429 Too Many Requests", false).await;
    let target = Target::parse(&format!("ws://{addr}/ws")).expect("target");
    match connect(&target, Ipv4Addr::LOCALHOST, "?token=t").await {
        Err(e) => assert_eq!(e.code(), "http_429"),
        Ok(_) => panic!("a 429 must not upgrade"),
    }
}
