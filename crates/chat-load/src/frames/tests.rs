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
