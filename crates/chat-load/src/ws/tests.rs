use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    let (_stream, mut rest) = connect(&target, Ipv4Addr::LOCALHOST, "?token=t")
        .await
        .expect("upgrade");
    let frame = decode(&mut rest).expect("a frame").expect("whole");
    assert_eq!(frame.opcode, OP_TEXT);
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

/// A server frame as the gateway writes it: FIN, unmasked.
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

#[test]
fn frames_are_decoded_whole_whatever_the_reads_cut() {
    let long = vec![b'x'; 70_000];
    let mut wire = server_frame(OP_TEXT, b"{}");
    wire.extend(server_frame(OP_TEXT, &[b'y'; 300]));
    wire.extend(server_frame(OP_BINARY, &long));
    wire.extend(server_frame(OP_PING, b"p"));
    wire.extend(server_frame(OP_CLOSE, &1001u16.to_be_bytes()));
    for cut in [1, 2, 3, 7, 64, 1000, wire.len()] {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(cut) {
            buf.extend_from_slice(chunk);
            while let Some(f) = decode(&mut buf).expect("valid") {
                got.push((f.opcode, f.payload.len()));
            }
        }
        assert_eq!(
            got,
            [
                (OP_TEXT, 2),
                (OP_TEXT, 300),
                (OP_BINARY, 70_000),
                (OP_PING, 1),
                (OP_CLOSE, 2)
            ],
            "cut {cut}"
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn malformed_frames_are_refused() {
    let mut reserved = BytesMut::from(&[0xC1u8, 0][..]);
    assert_eq!(
        decode(&mut reserved).expect_err("refused"),
        FrameError::Reserved
    );
    let mut opcode = BytesMut::from(&[0x83u8, 0][..]);
    assert_eq!(
        decode(&mut opcode).expect_err("refused"),
        FrameError::Opcode(3)
    );
    let mut fragmented_ping = BytesMut::from(&[0x09u8, 0][..]);
    assert_eq!(
        decode(&mut fragmented_ping).expect_err("refused"),
        FrameError::BadControl
    );
    let mut huge = BytesMut::from(&[0x81u8, 127, 0, 0, 0, 0, 0, 0x10, 0, 0][..]);
    assert_eq!(
        decode(&mut huge).expect_err("refused"),
        FrameError::TooLarge(1 << 20)
    );
}

/// Our frames, unmasked the way a server does, give back what was sent (all three lengths).
#[test]
fn client_frames_are_masked_and_framed() {
    for len in [0usize, 125, 126, 65_535, 65_536] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut out = Vec::new();
        encode(&mut out, OP_TEXT, &payload, [1, 2, 3, 4]);
        assert_eq!(out[0], 0x81);
        assert_ne!(out[1] & 0x80, 0, "a client's frames are masked");
        let mut buf = BytesMut::from(&out[..]);
        let f = decode(&mut buf).expect("valid").expect("whole");
        assert_eq!(f.opcode, OP_TEXT);
        assert_eq!(&f.payload[..], &payload[..], "len {len}");
    }
}

#[test]
fn a_close_frame_without_a_code_is_1005() {
    assert_eq!(close_code(&[]), 1005);
    assert_eq!(close_code(&1008u16.to_be_bytes()), 1008);
}
