//! Tests of `writer`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::{Control, EventKey, OutEvent, Writer, push_frame};
use crate::hub::CloseSignal;
use crate::socket::outbox::Outbox;
use bytes::Bytes;
use chat_proto::{Message, MessageKind, ServerEvent, WireFormat};
use fastwebsockets::OpCode;
use parking_lot::Mutex;
use tokio::time::Instant;

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

/// Writes with when they were made.
type Writes = Vec<(Instant, Vec<u8>)>;

/// Every write the writer makes, with when it made it.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Writes>>);

impl Recorder {
    fn writes(&self) -> Writes {
        self.0.lock().clone()
    }

    async fn wait_for(&self, count: usize) -> Writes {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while self.0.lock().len() < count {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{count} writes: got {:?}", self.writes());
        self.writes()
    }
}

impl tokio::io::AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().push((Instant::now(), buf.to_vec()));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn frames(texts: &[&'static str]) -> Vec<u8> {
    let mut out = Vec::new();
    for text in texts {
        push_frame(&mut out, OpCode::Text, text.as_bytes());
    }
    out
}

#[tokio::test]
async fn a_busy_socket_waits_out_the_write_delay_and_an_idle_one_writes_at_once() {
    let delay = Duration::from_millis(300);
    let outbox = Arc::new(Outbox::new(8, 64));
    let signal = Arc::new(CloseSignal::default());
    let io = Recorder::default();
    let writer = Writer::new(
        io.clone(),
        WireFormat::Json,
        outbox.clone(),
        signal.clone(),
        Duration::from_secs(3600),
    )
    .with_write_delay(delay);
    let task = tokio::spawn(writer.run());
    let event = |text: &'static str| OutEvent {
        bytes: Bytes::from_static(text.as_bytes()),
        key: EventKey::Other,
    };
    let offer = |text| {
        let offered = outbox.offer_event(event(text));
        assert!(offered.is_ok(), "queued");
    };
    assert!(outbox.try_control(Control::Activate).is_ok());

    offer("a");
    let first = io.wait_for(1).await;
    assert_eq!(first[0].1, frames(&["a"]));

    // Written to a moment ago: what comes within the delay goes out together, after it.
    offer("b");
    tokio::time::sleep(Duration::from_millis(20)).await;
    offer("c");
    let writes = io.wait_for(2).await;
    assert_eq!(writes[1].1, frames(&["b", "c"]));
    assert!(writes[1].0 - writes[0].0 >= delay, "waited out the delay");

    // Idle for longer than the delay: the next event is written at once.
    tokio::time::sleep(delay * 2).await;
    let offered = Instant::now();
    offer("d");
    let writes = io.wait_for(3).await;
    assert_eq!(writes[2].1, frames(&["d"]));
    assert!(
        writes[2].0 - offered < delay,
        "an idle socket does not wait"
    );

    signal.close(1000);
    assert!(task.await.is_ok());
}
