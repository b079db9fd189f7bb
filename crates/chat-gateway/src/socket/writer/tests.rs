//! Tests of `writer`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Control, EventKey, OutEvent, Writer, push_frame};
use crate::hub::CloseSignal;
use crate::socket::outbox::Outbox;
use bytes::Bytes;
use chat_proto::{Message, MessageKind, ServerEvent, WireFormat};
use fastwebsockets::OpCode;
use tokio::io::AsyncReadExt;

/// A histogram that keeps what it is given.
#[derive(Default)]
struct Recorded(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Recorded {
    fn record(&self, value: f64) {
        self.0.lock().expect("not poisoned").push(value);
    }
}

/// A live event is timed when its bytes are written to the socket, not when it was queued:
/// the peer reads nothing for 200 ms, so the write, and the timing, wait for it.
#[tokio::test]
async fn live_events_are_timed_at_the_socket_write() {
    let recorded = Arc::new(Recorded::default());
    let outbox = Arc::new(Outbox::new(8, 8));
    let signal = Arc::new(CloseSignal::default());
    // Room for less than one frame: the write completes only as the peer reads.
    let (io, mut peer) = tokio::io::duplex(4);
    let writer = Writer::new(
        io,
        WireFormat::Json,
        outbox.clone(),
        signal.clone(),
        Duration::from_secs(3600),
        metrics::Histogram::from_arc(recorded.clone()),
    );
    let task = tokio::spawn(writer.run());
    let published_at_ms = chrono::Utc::now().timestamp_millis() - 50;
    let live = |text: &'static str, published_at_ms| OutEvent {
        bytes: Bytes::from_static(text.as_bytes()),
        key: EventKey::Other,
        published_at_ms,
    };
    outbox
        .offer_event(live("timed", Some(published_at_ms)))
        .expect("queued");
    outbox.offer_event(live("untimed", None)).expect("queued");
    outbox.try_control(Control::Activate).expect("queued");

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        recorded.0.lock().expect("not poisoned").is_empty(),
        "timed before the write completed"
    );
    let mut frames = vec![0u8; 2 + 5 + 2 + 7];
    peer.read_exact(&mut frames).await.expect("both frames");
    assert_eq!(&frames[2..7], b"timed");
    assert_eq!(&frames[9..], b"untimed");
    signal.close(crate::hub::close_code::NORMAL);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the writer ends after a close")
        .expect("no panic");
    let values = recorded.0.lock().expect("not poisoned").clone();
    assert_eq!(
        values.len(),
        1,
        "only the live event with a publish time: {values:?}"
    );
    assert!(
        values[0] >= 0.25,
        "publish (50 ms before queueing) to write (200 ms later): {values:?}"
    );
}

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
