//! Tests of `codec`.

use super::*;
use crate::ErrorCode;
use crate::event::PresenceStatus;
use crate::frame::Reply;
use crate::model::{Message, MessageKind};

fn sample_message() -> Message {
    Message {
        id: 7,
        chat_id: 3,
        seq: 1,
        sender_id: 1,
        kind: MessageKind::Text,
        text: Some("héllo".into()),
        attachment: None,
        reply_to_id: None,
        client_msg_id: "c1".into(),
        created_at: crate::time::now_millis(),
        edited_at: None,
        deleted_at: None,
    }
}

#[test]
fn receipt_edit_and_delete_frames_decode_in_both_formats() {
    let frames: [(&[u8], ClientFrame); 3] = [
        (
            br#"{"type":"delivered","id":"r3","chat_id":5,"up_to_seq":9}"#,
            ClientFrame::Delivered {
                id: Some(RequestId::Text("r3".into())),
                chat_id: 5,
                up_to_seq: 9,
            },
        ),
        (
            br#"{"type":"edit","id":"r4","chat_id":5,"message_id":70,"text":"fixed"}"#,
            ClientFrame::Edit {
                id: Some(RequestId::Text("r4".into())),
                chat_id: 5,
                message_id: 70,
                text: "fixed".into(),
            },
        ),
        (
            br#"{"type":"delete","id":"r5","chat_id":5,"message_id":70}"#,
            ClientFrame::Delete {
                id: Some(RequestId::Text("r5".into())),
                chat_id: 5,
                message_id: 70,
            },
        ),
    ];
    for (raw, expected) in frames {
        let frame = WireFormat::Json.decode_client_frame(raw).expect("valid");
        assert_eq!(frame, expected);
        let packed = rmp_serde::to_vec_named(&frame).expect("encodes");
        assert_eq!(
            WireFormat::MsgPack
                .decode_client_frame(&packed)
                .expect("valid"),
            expected
        );
    }
    let negative = WireFormat::Json
        .decode_client_frame(br#"{"type":"delivered","id":"r6","chat_id":5,"up_to_seq":-1}"#)
        .expect_err("a negative watermark is refused");
    assert_eq!(negative.request_id(), Some(RequestId::Text("r6".into())));
}

#[test]
fn updated_and_delivered_events_have_the_contract_shape() {
    let mut message = sample_message();
    message.text = None;
    message.deleted_at = Some(crate::time::now_millis());
    let updated = ServerEvent::MessageUpdated {
        message,
        cursor: "c9".into(),
    };
    for format in [WireFormat::Json, WireFormat::MsgPack] {
        let raw = format.encode(&updated);
        let value: serde_json::Value = match format {
            WireFormat::Json => serde_json::from_slice(&raw).expect("json"),
            WireFormat::MsgPack => rmp_serde::from_slice(&raw).expect("msgpack"),
        };
        assert_eq!(value["type"], "message_updated");
        assert!(value["message"]["text"].is_null());
        assert!(value["message"]["edited_at"].is_null());
        assert!(value["message"]["deleted_at"].is_string());
        assert_eq!(value["cursor"], "c9");
    }
    let delivered = ServerEvent::MessageDelivered {
        chat_id: 3,
        user_id: 4,
        up_to_seq: 5,
        cursor: "c1".into(),
    };
    let json: serde_json::Value =
        serde_json::from_slice(&WireFormat::Json.encode(&delivered)).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"type":"message_delivered","chat_id":3,"user_id":4,"up_to_seq":5,"cursor":"c1"})
    );
    let envelope = BusEnvelope::new(BusBody::Event(updated));
    assert_eq!(
        BusEnvelope::decode(&envelope.encode()).expect("decodes"),
        envelope
    );
}

#[test]
fn messages_without_the_new_fields_still_decode() {
    let old = serde_json::json!({"id":1,"chat_id":2,"seq":3,"sender_id":4,"type":"text",
        "text":"hi","attachment":null,"reply_to_id":null,"client_msg_id":"a",
        "created_at":"2026-11-24T08:29:18.123Z"});
    let message: Message = serde_json::from_value(old).expect("decodes");
    assert_eq!((message.edited_at, message.deleted_at), (None, None));
}

#[test]
fn json_event_has_the_contract_shape() {
    let event = ServerEvent::NewMessage {
        message: sample_message(),
        cursor: "c1".into(),
    };
    let json: serde_json::Value =
        serde_json::from_slice(&WireFormat::Json.encode(&event)).expect("valid json");
    assert_eq!(json["type"], "new_message");
    assert_eq!(json["message"]["type"], "text");
    assert_eq!(json["message"]["seq"], 1);
    assert_eq!(json["cursor"], "c1");
    assert!(json["message"]["attachment"].is_null());
    let created = json["message"]["created_at"].as_str().expect("string");
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");
}

#[test]
fn msgpack_event_is_a_map_with_the_same_keys() {
    let event = ServerEvent::Presence {
        user_id: 9,
        status: PresenceStatus::Offline,
        last_seen: None,
    };
    let raw = WireFormat::MsgPack.encode(&event);
    let as_json: serde_json::Value = rmp_serde::from_slice(&raw).expect("msgpack map");
    assert_eq!(as_json["type"], "presence");
    assert_eq!(as_json["status"], "offline");
    assert!(as_json["last_seen"].is_null());
}

#[test]
fn bus_envelope_round_trips() {
    let envelope = BusEnvelope::new(BusBody::Event(ServerEvent::NewMessage {
        message: sample_message(),
        cursor: "c1".into(),
    }));
    let decoded = BusEnvelope::decode(&envelope.encode()).expect("decodes");
    assert_eq!(decoded, envelope);
    let revoked = BusEnvelope::new(BusBody::SessionRevoked { jti: "j".into() });
    assert_eq!(
        BusEnvelope::decode(&revoked.encode()).expect("decodes"),
        revoked
    );
}

#[test]
fn client_frames_decode_in_both_formats() {
    let json = br#"{"type":"send","id":"r1","chat_id":5,"client_msg_id":"a","text":"hi"}"#;
    let frame = WireFormat::Json.decode_client_frame(json).expect("valid");
    assert!(matches!(frame, ClientFrame::Send { chat_id: 5, .. }));
    let packed = rmp_serde::to_vec_named(&frame).expect("encodes");
    assert_eq!(
        WireFormat::MsgPack
            .decode_client_frame(&packed)
            .expect("valid"),
        frame
    );
}

/// Good frames skip the tree; the answer must be the one the tree gives, for every frame.
#[test]
fn the_direct_decode_agrees_with_the_tree() {
    let frames: [&[u8]; 12] = [
        br#"{"type":"send","id":"r1","chat_id":5,"client_msg_id":"a","text":"hi"}"#,
        br#"{"chat_id":5,"text":"hi","client_msg_id":"a","type":"send","reply_to_id":9}"#,
        br#"{"type":"send","chat_id":5,"client_msg_id":"a","text":"one","text":"two"}"#,
        br#"{"type":"send","chat_id":5,"client_msg_id":"a","text":"hi","extra":[1,{"x":2}]}"#,
        br#"{"type":"send","chat_id":-5,"client_msg_id":"a","text":"hi"}"#,
        br#"{"type":"send","chat_id":5.0,"client_msg_id":"a","text":"hi"}"#,
        br#"{"type":"read","id":7,"chat_id":5,"up_to_seq":18446744073709551615}"#,
        br#"{"type":"ping","id":null}"#,
        br#"{"type":"auth","token":"t","since":null}"#,
        br#"{"type":"typing","type":"read","chat_id":1,"up_to_seq":2}"#,
        br#"{"type":"resume"}"#,
        br#"{"type":"Send","chat_id":5,"client_msg_id":"a","text":"hi"}"#,
    ];
    for raw in frames {
        let direct = WireFormat::Json.decode_client_frame(raw).ok();
        let tree = serde_json::from_slice(raw)
            .ok()
            .and_then(|value| frame_from_value(value).ok());
        assert_eq!(direct, tree, "{}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn bad_frames_give_errors_that_keep_the_request_id() {
    let err = WireFormat::Json
        .decode_client_frame(br#"{"type":"send","id":"r9","chat_id":"x"}"#)
        .expect_err("bad shape");
    assert_eq!(err.request_id(), Some(RequestId::Text("r9".into())));
    let err = WireFormat::Json
        .decode_client_frame(br#"{"type":"dance","id":4}"#)
        .expect_err("unknown type");
    assert_eq!(err.request_id(), Some(RequestId::Number(4)));
    assert!(WireFormat::Json.decode_client_frame(b"{nope").is_err());
    assert!(WireFormat::Json.decode_client_frame(b"[]").is_err());
    assert!(WireFormat::MsgPack.decode_client_frame(&[0xc1]).is_err());
}

#[test]
fn error_reply_shape() {
    let reply = Reply::error(
        Some(RequestId::Text("r1".into())),
        ErrorCode::NotFound,
        "no such chat",
    );
    let json: serde_json::Value =
        serde_json::from_slice(&WireFormat::Json.encode(&reply)).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"type":"error","id":"r1","code":"not_found","message":"no such chat"})
    );
}
