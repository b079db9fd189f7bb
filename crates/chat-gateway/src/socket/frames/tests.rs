use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame as it goes on the wire: header, mask, masked payload.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
}

const TEXT_FIN: u8 = 0x81;

fn parsed(bytes: &[u8], max: usize) -> Result<Option<RawFrame>, ReadError> {
    parse(&mut BytesMut::from(bytes), max)
}

fn close_code_of(result: Result<Option<RawFrame>, ReadError>) -> u16 {
    match result {
        Err(ReadError::Broken(cause)) => cause.code,
        other => panic!("expected a broken frame, got {other:?}"),
    }
}

#[test]
fn a_whole_frame_is_unmasked_and_taken_off_the_buffer() {
    let mut buf = BytesMut::from(&client_frame(TEXT_FIN, b"hello")[..]);
    buf.extend_from_slice(&client_frame(0x82, &[1, 2, 3]));
    let first = parse(&mut buf, 100).expect("valid").expect("whole");
    assert_eq!(
        first,
        RawFrame {
            fin: true,
            opcode: OpCode::Text,
            payload: Bytes::from_static(b"hello"),
        }
    );
    let second = parse(&mut buf, 100).expect("valid").expect("whole");
    assert_eq!(second.opcode, OpCode::Binary);
    assert_eq!(&second.payload[..], &[1, 2, 3]);
    assert!(buf.is_empty());
    assert_eq!(parse(&mut buf, 100).expect("valid"), None);
}

#[test]
fn a_frame_arriving_in_pieces_waits_for_its_last_byte() {
    let payload: Vec<u8> = (0..300u16).map(|n| n as u8).collect();
    let wire = client_frame(0x02, &payload);
    for cut in 1..wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(
            parse(&mut buf, 1000).expect("valid so far"),
            None,
            "cut {cut}"
        );
        assert_eq!(buf.len(), cut, "nothing consumed at cut {cut}");
        buf.extend_from_slice(&wire[cut..]);
        let frame = parse(&mut buf, 1000).expect("valid").expect("whole");
        assert!(!frame.fin);
        assert_eq!(&frame.payload[..], &payload[..]);
    }
}

#[test]
fn sixteen_and_sixty_four_bit_lengths() {
    let medium = vec![7u8; 40_000];
    let frame = parsed(&client_frame(0x82, &medium), 100_000)
        .expect("valid")
        .expect("whole");
    assert_eq!(frame.payload.len(), 40_000);
    let large = vec![9u8; 70_000];
    let frame = parsed(&client_frame(0x82, &large), 100_000)
        .expect("valid")
        .expect("whole");
    assert_eq!(&frame.payload[..], &large[..]);
}

#[test]
fn an_oversize_frame_is_refused_from_its_header() {
    let wire = client_frame(0x82, &[0u8; 2_000]);
    // A header announcing a large frame reserves nothing for it.
    let mut header_only = BytesMut::from(&wire[..8]);
    assert_eq!(parse(&mut header_only, 2_000).expect("valid so far"), None);
    assert!(header_only.capacity() < 100, "{}", header_only.capacity());
    // Only the header is here: the refusal does not wait for the payload.
    assert_eq!(close_code_of(parsed(&wire[..8], 1_000)), close_code::POLICY);
    assert!(parsed(&wire, 2_000).expect("at the limit").is_some());
    // A 64-bit length beyond any buffer.
    let mut huge = vec![0x82, 0x80 | 127];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    huge.extend_from_slice(&MASK);
    assert_eq!(close_code_of(parsed(&huge, 1_000)), close_code::POLICY);
}

#[test]
fn protocol_violations_are_refused() {
    let mut unmasked = client_frame(TEXT_FIN, b"hi");
    unmasked[1] &= 0x7f;
    assert_eq!(
        close_code_of(parsed(&unmasked, 100)),
        close_code::PROTOCOL_ERROR
    );
    let reserved = client_frame(TEXT_FIN | 0x40, b"hi");
    assert_eq!(
        close_code_of(parsed(&reserved, 100)),
        close_code::PROTOCOL_ERROR
    );
    let unknown_opcode = client_frame(0x83, b"hi");
    assert_eq!(
        close_code_of(parsed(&unknown_opcode, 100)),
        close_code::PROTOCOL_ERROR
    );
    let fragmented_ping = client_frame(0x09, b"hi");
    assert_eq!(
        close_code_of(parsed(&fragmented_ping, 100)),
        close_code::PROTOCOL_ERROR
    );
    let long_pong = client_frame(0x8a, &[0u8; 126]);
    assert_eq!(
        close_code_of(parsed(&long_pong, 1_000)),
        close_code::PROTOCOL_ERROR
    );
    let long_close = client_frame(0x88, &[0u8; 126]);
    assert_eq!(
        close_code_of(parsed(&long_close, 1_000)),
        close_code::PROTOCOL_ERROR
    );
}

#[test]
fn control_frames_within_the_rules_pass() {
    for (first, opcode) in [
        (0x89, OpCode::Ping),
        (0x8a, OpCode::Pong),
        (0x88, OpCode::Close),
    ] {
        let frame = parsed(&client_frame(first, &[0x03, 0xe8]), 100)
            .expect("valid")
            .expect("whole");
        assert_eq!(frame.opcode, opcode);
        assert_eq!(&frame.payload[..], &[0x03, 0xe8]);
    }
    let continuation = parsed(&client_frame(0x80, b"tail"), 100)
        .expect("valid")
        .expect("whole");
    assert_eq!(continuation.opcode, OpCode::Continuation);
}

#[test]
fn close_payloads() {
    assert!(close_payload(&[]).is_ok());
    assert!(close_payload(&[0x03, 0xe8]).is_ok());
    let mut with_reason = 4000u16.to_be_bytes().to_vec();
    with_reason.extend_from_slice("bye ✓".as_bytes());
    assert!(close_payload(&with_reason).is_ok());
    let code = |payload: &[u8]| close_payload(payload).expect_err("refused").code;
    assert_eq!(code(&[0x03]), close_code::PROTOCOL_ERROR);
    for refused in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
        assert_eq!(
            code(&refused.to_be_bytes()),
            close_code::PROTOCOL_ERROR,
            "{refused}"
        );
    }
    assert_eq!(code(&[0x03, 0xe8, 0xff]), close_code::INVALID_DATA);
}

/// A connected pair: the server side split for the reader, the client side to write to.
async fn pair() -> (OwnedReadHalf, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let client = TcpStream::connect(address).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let (read, write) = server.into_split();
    // Keep the write half open for the test's life: dropping it only shuts down writing.
    std::mem::forget(write);
    (read, client)
}

#[tokio::test]
async fn the_reader_takes_early_bytes_first_then_the_stream_and_holds_nothing_between_frames() {
    let (read, mut client) = pair().await;
    let first = client_frame(TEXT_FIN, b"{\"type\":\"auth\"}");
    let mut reader = FrameReader::new(read, Bytes::from(first[..5].to_vec()), 64 * 1024);
    client.write_all(&first[5..]).await.expect("write");
    let auth = reader.next_frame().await.expect("first frame");
    assert_eq!(&auth.payload[..], b"{\"type\":\"auth\"}");
    assert_eq!(
        reader.pending.capacity(),
        0,
        "an idle socket holds no buffer"
    );

    let second = client_frame(0x82, &[0u8; 20_000]);
    let writing = tokio::spawn(async move {
        // In slices, so that the frame spans several reads.
        for piece in second.chunks(3_000) {
            client.write_all(piece).await.expect("write");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        client
    });
    let big = reader.next_frame().await.expect("second frame");
    assert_eq!(big.payload.len(), 20_000);
    assert_eq!(reader.pending.capacity(), 0);
    drop(writing.await.expect("writer"));
    assert_eq!(reader.next_frame().await, Err(ReadError::Ended));
}

#[tokio::test]
async fn a_stream_ending_mid_frame_is_the_end() {
    let (read, mut client) = pair().await;
    let mut reader = FrameReader::new(read, Bytes::new(), 1024);
    client
        .write_all(&client_frame(TEXT_FIN, b"cut short")[..6])
        .await
        .expect("write");
    drop(client);
    assert_eq!(reader.next_frame().await, Err(ReadError::Ended));
}
