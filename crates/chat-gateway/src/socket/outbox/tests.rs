//! Tests of `outbox`.

use super::*;
use crate::socket::writer::EventKey;
use bytes::Bytes;
use fastwebsockets::OpCode;
use std::sync::Arc;
use std::time::Duration;

fn event(n: u64) -> OutEvent {
    OutEvent {
        bytes: Bytes::from(n.to_string()),
        key: EventKey::Message { chat: 1, seq: n },
        published_at_ms: None,
    }
}

fn frame(text: &'static str) -> Control {
    Control::Frame(OpCode::Text, Bytes::from_static(text.as_bytes()))
}

#[test]
fn events_are_bounded_and_kept_in_order() {
    let outbox = Outbox::new(4, 2);
    assert_eq!(outbox.offer_event(event(1)), Ok(()));
    assert_eq!(outbox.offer_event(event(2)), Ok(()));
    assert_eq!(outbox.offer_event(event(3)), Err(Refused::Full));
    let first = outbox.take_event().map(|e| e.key);
    assert_eq!(first, Some(EventKey::Message { chat: 1, seq: 1 }));
    assert_eq!(outbox.offer_event(event(3)), Ok(()));
    let rest: Vec<_> = std::iter::from_fn(|| outbox.take_event())
        .map(|e| e.bytes)
        .collect();
    assert_eq!(rest, vec![Bytes::from("2"), Bytes::from("3")]);
}

#[test]
fn only_an_event_into_an_empty_queue_asks_for_a_wake_up() {
    let outbox = Outbox::new(4, 4);
    assert_eq!(outbox.offer_event_deferred(event(1)), Ok(true));
    assert_eq!(outbox.offer_event_deferred(event(2)), Ok(false));
    assert!(
        outbox.take_events(|_| true),
        "both taken, the queue is empty"
    );
    assert_eq!(outbox.offer_event_deferred(event(3)), Ok(true));
}

#[test]
fn taking_events_stops_for_a_control_frame_and_a_full_batch() {
    let outbox = Outbox::new(4, 8);
    for n in 1..=4 {
        assert_eq!(outbox.offer_event(event(n)), Ok(()));
    }
    let mut seqs = Vec::new();
    let key = |e: &OutEvent| match e.key {
        EventKey::Message { seq, .. } => seq,
        _ => 0,
    };
    // A full batch after the second event.
    assert!(!outbox.take_events(|e| {
        seqs.push(key(&e));
        seqs.len() < 2
    }));
    assert_eq!(seqs, vec![1, 2]);
    // A control frame queued meanwhile goes before the rest of the events.
    assert_eq!(outbox.try_control(frame("pause")), Ok(()));
    assert!(!outbox.take_events(|e| {
        seqs.push(key(&e));
        true
    }));
    assert_eq!(seqs, vec![1, 2]);
    assert!(outbox.take_control().is_some());
    assert!(outbox.take_events(|e| {
        seqs.push(key(&e));
        true
    }));
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

#[test]
fn a_closed_outbox_refuses_everything() {
    let outbox = Outbox::new(4, 4);
    assert_eq!(outbox.offer_event(event(1)), Ok(()));
    outbox.close();
    assert!(outbox.take_event().is_none(), "queued events are dropped");
    assert_eq!(outbox.offer_event(event(2)), Err(Refused::Closed));
    assert_eq!(outbox.try_control(frame("x")), Err(Refused::Closed));
}

#[test]
fn a_drained_burst_gives_its_memory_back() {
    let outbox = Outbox::new(4, 1000);
    for n in 0..500 {
        assert_eq!(outbox.offer_event(event(n)), Ok(()));
    }
    while outbox.take_event().is_some() {}
    assert_eq!(outbox.lock().events.capacity(), 0);
}

#[tokio::test]
async fn send_control_waits_for_room_instead_of_failing() {
    let outbox = Arc::new(Outbox::new(1, 1));
    assert_eq!(outbox.try_control(frame("a")), Ok(()));
    assert_eq!(outbox.try_control(frame("b")), Err(Refused::Full));
    let waiting = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.send_control(frame("b")).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !waiting.is_finished(),
        "the queue is full, so the sender waits"
    );
    assert!(matches!(outbox.take_control(), Some(Control::Frame(_, b)) if b == "a"));
    let sent = tokio::time::timeout(Duration::from_secs(1), waiting).await;
    assert!(
        matches!(sent, Ok(Ok(Ok(())))),
        "room frees the waiting sender"
    );
    assert!(matches!(outbox.take_control(), Some(Control::Frame(_, b)) if b == "b"));
}

#[tokio::test]
async fn closing_releases_a_waiting_sender() {
    let outbox = Arc::new(Outbox::new(1, 1));
    assert_eq!(outbox.try_control(frame("a")), Ok(()));
    let waiting = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.send_control(frame("b")).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    outbox.close();
    let sent = tokio::time::timeout(Duration::from_secs(1), waiting).await;
    assert!(matches!(sent, Ok(Ok(Err(Refused::Closed)))));
}
