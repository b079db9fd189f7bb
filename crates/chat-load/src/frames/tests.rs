use super::*;

#[test]
fn a_new_message_yields_its_chat_seq_sender_and_send_time() {
    let raw = br#"{"type":"new_message","cursor":"c1733000000000123","message":{"id":9,"chat_id":4,
        "seq":7,"sender_id":12,"type":"text","text":"1733000000123456","attachment":null,
        "reply_to_id":null,"client_msg_id":"cl-1-2","created_at":"2026-12-03T10:00:00.000Z"}}"#;
    let f = parse(raw).expect("parses");
    assert_eq!(f.kind, "new_message");
    assert_eq!(f.cursor.as_deref(), Some("c1733000000000123"));
    let m = f.message.expect("message");
    assert_eq!((m.chat_id, m.seq, m.sender_id), (4, 7, 12));
    assert_eq!(m.sent_at_us(), Some(1_733_000_000_123_456));
    assert_eq!(m.client_msg_id.as_deref(), Some("cl-1-2"));
}

#[test]
fn acks_errors_and_unknown_frames_parse() {
    let f = parse(
        br#"{"type":"ack","id":"r3","message":{"chat_id":1,"seq":2,"sender_id":3,"text":"x"}}"#,
    )
    .expect("ack");
    assert_eq!(f.id.as_deref(), Some("r3"));
    assert_eq!(f.message.expect("message").sent_at_us(), None);
    let f =
        parse(br#"{"type":"error","id":"r4","code":"unavailable","message":"db"}"#).expect("error");
    assert_eq!(
        (f.kind.as_ref(), f.code.as_deref()),
        ("error", Some("unavailable"))
    );
    // An error frame's message is a string: it must not be taken for a chat message.
    let f = parse(br#"{"type":"presence","user_id":5,"status":"online","last_seen":null}"#)
        .expect("presence");
    assert!(f.message.is_none());
    assert!(parse(b"not json").is_err());
}

#[test]
fn client_frames_are_valid_json() {
    let v: serde_json::Value = serde_json::from_str(&send("r1", 9, "cl-1", 42)).expect("json");
    assert_eq!(v["type"], "send");
    assert_eq!(v["chat_id"], 9);
    assert_eq!(v["text"], "42");
    let v: serde_json::Value = serde_json::from_str(&auth("a.b-c_d")).expect("json");
    assert_eq!(v["token"], "a.b-c_d");
    let v: serde_json::Value = serde_json::from_str(&resume("c0")).expect("json");
    assert_eq!(v["since"], "c0");
    let v: serde_json::Value = serde_json::from_str(ping()).expect("json");
    assert_eq!(v["type"], "ping");
}

/// The fast reader agrees with serde_json on every frame it takes, and hands the rest over.
#[test]
fn the_fast_reader_agrees_with_serde_json() {
    let frames: &[&[u8]] = &[
        br#"{"type":"new_message","message":{"id":9,"chat_id":4,"seq":7,"sender_id":12,"type":"text","text":"1733000000123456","attachment":null,"reply_to_id":null,"client_msg_id":"ch-0-1-2","created_at":"2026-12-03T10:00:00.000Z","edited_at":null,"deleted_at":null},"cursor":"c17"}"#,
        br#" { "type" : "ack" , "id" : "r3" , "message" : { "chat_id" : 1 , "seq" : 2 , "sender_id" : 3 , "text" : null } } "#,
        br#"{"type":"auth_ok","user_id":5,"session_id":"s-1"}"#,
        br#"{"type":"error","id":"r4","code":"unavailable","message":"the \"db\" is busy"}"#,
        br#"{"type":"presence","user_id":5,"status":"online","last_seen":null,"extra":[1,{"a":[2,"]}"]},-3.5e2,true]}"#,
        br#"{"type":"message_updated","message":{"chat_id":1,"seq":2,"sender_id":3,"attachment":{"id":1,"url":"/v1/a/1","size":10}},"cursor":"c9"}"#,
        br#"{"type":"synced","cursor":"c\u0031"}"#,
        br#"{"type":"new_message","message":{"chat_id":1.5,"seq":2,"sender_id":3}}"#,
        br#"{"type":"pong","ts":1733000000000}"#,
        br#"{}"#,
        br#"{"type":"ack","message":{"seq":2,"sender_id":3}}"#,
        br#"{"type":"ack"} x"#,
        br#"{"type":"ack",}"#,
        br#"{"type":"ack","id":7}"#,
        br#"{"type":"ack","user_id":-1}"#,
        br#"{"type":"ack""#,
        br#"[1]"#,
        b"",
    ];
    for raw in frames {
        let fast = Scan::new(raw).frame();
        let serde: Result<ServerFrame<'_>, _> = serde_json::from_slice(raw);
        let text = String::from_utf8_lossy(raw);
        if let Some(f) = &fast {
            assert_eq!(Some(f), serde.as_ref().ok(), "{text}");
        }
        assert_eq!(parse(raw).ok(), serde.ok(), "{text}");
    }
    // The common frames do take the fast way.
    for raw in &frames[..5] {
        assert!(
            Scan::new(raw).frame().is_some(),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn the_end_of_a_string_is_found_at_any_offset() {
    for len in 0..40 {
        for end in [b'"', b'\\', b'\n', 0x1F] {
            let mut b = vec![b'a'; len];
            b.push(end);
            b.extend_from_slice(b"xx\"");
            assert_eq!(special(&b), Some(len), "{len} {end}");
        }
        // Bytes above 0x7F (UTF-8) and just above the controls are not special.
        let b = vec![0xC3; len];
        assert_eq!(special(&b), None);
        let b = vec![0x20; len];
        assert_eq!(special(&b), None);
    }
}

#[test]
#[ignore]
fn bench_parse() {
    let raw = br#"{"type":"new_message","message":{"id":912345,"chat_id":4123,"seq":7,"sender_id":12345,"type":"text","text":"1733000000123456","attachment":null,"reply_to_id":null,"client_msg_id":"ch-0-1234-2","created_at":"2026-12-03T10:00:00.000Z","edited_at":null,"deleted_at":null},"cursor":"c1733000000000123"}"#;
    let iters: u64 = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let mut n = 0u64;
        for _ in 0..iters {
            n += Scan::new(std::hint::black_box(raw))
                .frame()
                .map_or(0, |f| f.message.map_or(0, |m| m.seq));
        }
        let fast = t.elapsed();
        let t = std::time::Instant::now();
        for _ in 0..iters {
            let f: ServerFrame<'_> = serde_json::from_slice(std::hint::black_box(raw)).expect("ok");
            n += f.message.map_or(0, |m| m.seq);
        }
        eprintln!("fast {:?} serde {:?} ({n})", fast, t.elapsed());
    }
}
