//! What a reader of the log replays: the user's events only, in sync order, each once.

use bytes::Bytes;
use chat_proto::{BusBody, BusEnvelope, Cursor, Message, MessageKind, ServerEvent};

use super::replay;

const ME: u64 = 7;
const T: i64 = 1_700_000_000_000;

fn message(id: u64, chat_id: u64, at_ms: i64) -> Message {
    Message {
        id,
        chat_id,
        seq: id,
        sender_id: 1,
        kind: MessageKind::Text,
        text: Some("hi".into()),
        attachment: None,
        reply_to_id: None,
        client_msg_id: format!("c{id}"),
        created_at: chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default(),
        edited_at: None,
        deleted_at: None,
    }
}

fn new_message(id: u64, chat_id: u64, at_ms: i64) -> ServerEvent {
    ServerEvent::NewMessage {
        message: message(id, chat_id, at_ms),
        cursor: Cursor::after_event(at_ms).to_string(),
    }
}

fn read(chat_id: u64, user_id: u64, up_to_seq: u64, at_ms: i64) -> ServerEvent {
    ServerEvent::MessageRead {
        chat_id,
        user_id,
        up_to_seq,
        cursor: Cursor::after_event(at_ms).to_string(),
    }
}

fn private(event: ServerEvent) -> Bytes {
    BusEnvelope::new(BusBody::Event(event)).encode()
}

fn group(chat_id: u64, skip: Option<u64>, event: ServerEvent) -> Bytes {
    BusEnvelope::new(BusBody::ChatEvent {
        chat_id,
        skip,
        event,
    })
    .encode()
}

#[test]
fn replays_the_users_events_in_sync_order_once() {
    let entries = vec![
        group(20, None, read(20, 3, 5, T + 30)),
        private(new_message(2, 10, T + 20)),
        group(20, None, new_message(5, 20, T + 30)),
        // Announced twice (a retry and the sweeper): replayed once.
        private(new_message(2, 10, T + 20)),
        // Before the cursor.
        private(new_message(1, 10, T - 1)),
        // A group the user left.
        group(30, None, new_message(9, 30, T + 10)),
        // Not for the user (skip), and not a sync event.
        group(20, Some(ME), read(20, 4, 5, T + 40)),
        private(ServerEvent::Typing {
            chat_id: 10,
            user_id: 1,
        }),
    ];
    let events = replay(&entries, ME, T, |chat| chat == 20);
    assert_eq!(
        events,
        vec![
            new_message(2, 10, T + 20),
            new_message(5, 20, T + 30),
            read(20, 3, 5, T + 30),
        ]
    );
}
