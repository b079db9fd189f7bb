//! Tests of `writer`.

use super::{EventKey, push_frame};
use chat_proto::{Message, MessageKind, ServerEvent};
use fastwebsockets::OpCode;

#[test]
fn replayed_receipts_and_updates_have_keys_of_their_own() {
    let delivered = |seq| ServerEvent::MessageDelivered {
        chat_id: 1,
        user_id: 2,
        up_to_seq: seq,
        cursor: "c1".into(),
    };
    assert_eq!(
        EventKey::of(&delivered(3)),
        EventKey::Delivered {
            chat: 1,
            user: 2,
            seq: 3
        }
    );
    assert_ne!(EventKey::of(&delivered(3)), EventKey::of(&delivered(4)));
    let at = |ms| chrono::DateTime::from_timestamp_millis(ms).expect("valid");
    let mut message = Message {
        id: 9,
        chat_id: 1,
        seq: 1,
        sender_id: 2,
        kind: MessageKind::Text,
        text: Some("x".into()),
        attachment: None,
        reply_to_id: None,
        client_msg_id: "c".into(),
        created_at: at(1),
        edited_at: Some(at(5)),
        deleted_at: None,
    };
    let updated = |message: &Message| ServerEvent::MessageUpdated {
        message: message.clone(),
        cursor: "c1".into(),
    };
    let edit = EventKey::of(&updated(&message));
    assert_eq!(
        edit,
        EventKey::Updated {
            message: 9,
            at_ms: 5
        }
    );
    // A later edit, and then the deletion, are other events than the first edit.
    message.edited_at = Some(at(7));
    let second_edit = EventKey::of(&updated(&message));
    message.deleted_at = Some(at(8));
    let deletion = EventKey::of(&updated(&message));
    assert_ne!(edit, second_edit);
    assert_ne!(second_edit, deletion);
}

#[test]
fn frame_headers_follow_rfc6455() {
    let mut out = Vec::new();
    push_frame(&mut out, OpCode::Text, b"hi");
    assert_eq!(out, vec![0x81, 2, b'h', b'i']);
    let mut out = Vec::new();
    push_frame(&mut out, OpCode::Binary, &[0u8; 300]);
    assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
    assert_eq!(out.len(), 304);
    let mut out = Vec::new();
    push_frame(&mut out, OpCode::Close, &4008u16.to_be_bytes());
    assert_eq!(out, vec![0x88, 2, 0x0f, 0xa8]);
}
