//! A socket's outbound queues: control frames (replies, pongs, close answers, replayed events)
//! and live events, both bounded, both drained by the socket's writer.
//!
//! Why not two tokio mpsc channels: each allocates its first block of 32 slots up front, about
//! 5 KB per socket for the two, and most sockets sit idle with nothing queued. Here an idle
//! socket's queues are two empty `VecDeque`s behind one mutex, and their capacity is given back
//! when a burst has drained. Producers never wait on the mutex for long: every critical section
//! is a push, a pop, or the writer taking a batch of events (a copy of each into its buffer).
//!
//! The writer is woken only when an event lands in an empty queue: a queue that already holds
//! events has a wake-up outstanding, or a writer still taking them, since the writer takes events
//! until the queue is empty (or its batch is full, and then it goes on without waiting). The
//! dispatcher queues every event of a batch of bus messages first and wakes each writer once
//! afterwards (`offer_event_deferred`, `wake`), so a socket with several events in the batch
//! costs one wake-up and one write, not one per event.
//!
//! Writing directly: at that wake-up, when the writer is idle (not writing, nothing but live
//! events queued, events flowing: active and past any resume seam), the dispatcher takes the
//! socket's events itself and makes the one write with a non-blocking `try_write`. The writer
//! task is not woken at all, which is most of a delivery's user-space cost. A `writing` flag
//! under the queues' lock gives the socket to one of them at a time, so frames never interleave
//! and per-socket order holds. What the kernel does not take (a full send buffer) is left as
//! `unsent` for the writer, which writes it before anything else and waits for the socket as it
//! always did: a slow consumer still fills its bounded queue and is closed with 4008.

use std::collections::VecDeque;
use std::sync::Arc;

use fastwebsockets::OpCode;
use parking_lot::{Mutex, MutexGuard};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use super::writer::{BATCH_BYTES, Control, OutEvent, push_frame};

/// Why a frame or event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is at its bound: the client is not reading fast enough.
    Full,
    /// The writer has finished; nothing more goes out on this socket.
    Closed,
}

/// Event queue capacity kept after a burst drains (so steady traffic does not allocate per
/// event); beyond it the memory goes back to the allocator. Control frames are rare (replies,
/// pongs), so their queue gives everything back each time it drains.
const KEEP_EVENT_SLOTS: usize = 8;

#[derive(Default)]
struct Queues {
    control: VecDeque<Control>,
    events: VecDeque<OutEvent>,
    closed: bool,
    /// Someone (the writer, or the dispatcher writing directly) is writing to the socket.
    writing: bool,
    /// The writer would write live events as they come (active, no resume seam open), so the
    /// dispatcher may write them itself.
    live: bool,
    /// The writer found the socket taken and waits to be woken when it is given back.
    writer_blocked: bool,
    /// The tail of a direct write the kernel did not take: it goes out before anything else.
    unsent: Vec<u8>,
}

/// The socket's write half, for the dispatcher's direct writes.
struct Direct {
    socket: Arc<OwnedWriteHalf>,
    opcode: OpCode,
}

pub struct Outbox {
    queues: Mutex<Queues>,
    direct: Option<Direct>,
    control_bound: usize,
    event_bound: usize,
    /// Wakes the writer: something was queued.
    queued: Notify,
    /// Wakes producers waiting in `send_control`: the writer took control frames.
    drained: Notify,
}

impl Outbox {
    /// Queues whose events only the writer writes.
    pub fn new(control_bound: usize, event_bound: usize) -> Self {
        Self::build(control_bound, event_bound, None)
    }

    /// Queues for a socket whose live events the dispatcher may write itself, as frames of
    /// `opcode`.
    pub fn with_socket(
        control_bound: usize,
        event_bound: usize,
        socket: Arc<OwnedWriteHalf>,
        opcode: OpCode,
    ) -> Self {
        Self::build(control_bound, event_bound, Some(Direct { socket, opcode }))
    }

    fn build(control_bound: usize, event_bound: usize, direct: Option<Direct>) -> Self {
        Self {
            queues: Mutex::new(Queues::default()),
            direct,
            control_bound: control_bound.max(1),
            event_bound: event_bound.max(1),
            queued: Notify::new(),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock()
    }

    /// Queues a control frame without waiting.
    pub fn try_control(&self, control: Control) -> Result<(), Refused> {
        {
            let mut queues = self.lock();
            if queues.closed {
                return Err(Refused::Closed);
            }
            if queues.control.len() >= self.control_bound {
                return Err(Refused::Full);
            }
            queues.control.push_back(control);
        }
        self.queued.notify_one();
        Ok(())
    }

    /// Queues a control frame, waiting for room (replays push many in a row).
    pub async fn send_control(&self, control: Control) -> Result<(), Refused> {
        let mut control = Some(control);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a drain between the check and the wait is seen.
            drained.as_mut().enable();
            {
                let mut queues = self.lock();
                if queues.closed {
                    return Err(Refused::Closed);
                }
                if queues.control.len() < self.control_bound {
                    if let Some(control) = control.take() {
                        queues.control.push_back(control);
                    }
                    drop(queues);
                    self.queued.notify_one();
                    return Ok(());
                }
            }
            drained.await;
        }
    }

    /// Queues a live event without waiting.
    #[cfg(test)]
    pub fn offer_event(&self, event: OutEvent) -> Result<(), Refused> {
        if self.offer_event_deferred(event)? {
            self.wake();
        }
        Ok(())
    }

    /// Queues a live event without waiting and without waking the writer; `true` when the
    /// caller must [`Outbox::wake`] it once done queueing (the queue was empty).
    pub fn offer_event_deferred(&self, event: OutEvent) -> Result<bool, Refused> {
        let mut queues = self.lock();
        if queues.closed {
            return Err(Refused::Closed);
        }
        if queues.events.len() >= self.event_bound {
            return Err(Refused::Full);
        }
        let was_empty = queues.events.is_empty();
        queues.events.push_back(event);
        Ok(was_empty)
    }

    /// Wakes the writer for events queued with [`Outbox::offer_event_deferred`].
    pub fn wake(&self) {
        self.queued.notify_one();
    }

    /// Writes the queued live events to the socket from the caller's thread when the writer is
    /// idle, else wakes the writer (see the module's notes). `scratch` is the caller's buffer,
    /// reused across sockets.
    pub fn flush_direct(&self, scratch: &mut Vec<u8>) {
        let Some(direct) = &self.direct else {
            self.wake();
            return;
        };
        scratch.clear();
        let more = {
            let mut queues = self.lock();
            if queues.writing
                || !queues.live
                || queues.closed
                || !queues.control.is_empty()
                || !queues.unsent.is_empty()
            {
                drop(queues);
                self.wake();
                return;
            }
            while scratch.len() < BATCH_BYTES {
                let Some(event) = queues.events.pop_front() else {
                    break;
                };
                push_frame(scratch, direct.opcode, &event.bytes);
            }
            shrink_when_drained(&mut queues.events, KEEP_EVENT_SLOTS);
            if scratch.is_empty() {
                return;
            }
            queues.writing = true;
            !queues.events.is_empty()
        };
        // One attempt: a short write means the send buffer is full, and waiting for room is the
        // writer's job. An error is left to the writer too, which meets it again and ends.
        let written = loop {
            match direct.socket.try_write(scratch) {
                Ok(written) => break written,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break 0,
            }
        };
        let mut queues = self.lock();
        queues.writing = false;
        if written < scratch.len() {
            queues.unsent.extend_from_slice(&scratch[written..]);
        }
        let wake = more
            || queues.writer_blocked
            || !queues.unsent.is_empty()
            || !queues.control.is_empty()
            || !queues.events.is_empty();
        if wake {
            queues.writer_blocked = false;
            drop(queues);
            self.wake();
        }
    }

    /// The writer takes the socket for a write; false when a direct write holds it (the writer
    /// is woken when it is given back). A direct write's unsent tail is put in front of `batch`.
    pub fn claim(&self, batch: &mut Vec<u8>) -> bool {
        let mut queues = self.lock();
        if queues.writing {
            queues.writer_blocked = true;
            return false;
        }
        queues.writing = true;
        queues.writer_blocked = false;
        if !queues.unsent.is_empty() {
            let mut unsent = std::mem::take(&mut queues.unsent);
            unsent.append(batch);
            *batch = unsent;
        }
        true
    }

    /// The writer gives the socket back, saying whether live events may now be written directly
    /// (`live`), or that nothing more may be written at all (`finished`: its close frame is
    /// out, or the socket failed).
    pub fn release(&self, live: bool, finished: bool) {
        let mut queues = self.lock();
        queues.writing = false;
        queues.live = live && !finished;
        if finished {
            queues.closed = true;
        }
    }

    /// Waits until something may have been queued since the writer last looked.
    pub async fn wait_queued(&self) {
        self.queued.notified().await;
    }

    /// The oldest control frame, if any.
    pub fn take_control(&self) -> Option<Control> {
        let taken = {
            let mut queues = self.lock();
            let taken = queues.control.pop_front();
            shrink_when_drained(&mut queues.control, 0);
            taken
        };
        if taken.is_some() {
            self.drained.notify_waiters();
        }
        taken
    }

    /// The oldest live event, if any.
    #[cfg(test)]
    pub fn take_event(&self) -> Option<OutEvent> {
        let mut queues = self.lock();
        let taken = queues.events.pop_front();
        shrink_when_drained(&mut queues.events, KEEP_EVENT_SLOTS);
        taken
    }

    /// Hands queued live events to `each`, oldest first, under one lock, until the queue is
    /// empty, `each` returns false (the batch is full), or a control frame is queued (it goes
    /// first: a `Pause` must stop live events at once). True when the queue was left empty.
    pub fn take_events(&self, mut each: impl FnMut(OutEvent) -> bool) -> bool {
        let mut queues = self.lock();
        while queues.control.is_empty() {
            let Some(event) = queues.events.pop_front() else {
                break;
            };
            if !each(event) {
                break;
            }
        }
        let empty = queues.events.is_empty();
        shrink_when_drained(&mut queues.events, KEEP_EVENT_SLOTS);
        empty
    }

    /// The writer is gone: refuse everything from now on and free what is queued.
    pub fn close(&self) {
        let (control, events, unsent) = {
            let mut queues = self.lock();
            queues.closed = true;
            queues.live = false;
            (
                std::mem::take(&mut queues.control),
                std::mem::take(&mut queues.events),
                std::mem::take(&mut queues.unsent),
            )
        };
        drop((control, events, unsent));
        self.drained.notify_waiters();
    }
}

fn shrink_when_drained<T>(queue: &mut VecDeque<T>, keep: usize) {
    if queue.is_empty() && queue.capacity() > keep {
        *queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::writer::EventKey;
    use bytes::Bytes;
    use std::time::Duration;

    fn event(n: u64) -> OutEvent {
        OutEvent {
            bytes: Bytes::from(n.to_string()),
            key: EventKey::Message { chat: 1, seq: n },
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

    /// A connected loopback pair: the write half of the accepted side, and the client side.
    async fn socket_pair() -> (Arc<OwnedWriteHalf>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        // The socket stays open while its write half lives.
        let (_, write) = server.into_split();
        (Arc::new(write), client)
    }

    async fn read_exactly(client: &mut tokio::net::TcpStream, len: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0u8; len];
        tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut got))
            .await
            .expect("in time")
            .expect("read");
        got
    }

    #[tokio::test]
    async fn an_idle_live_socket_is_written_directly_without_waking_the_writer() {
        let (socket, mut client) = socket_pair().await;
        let outbox = Outbox::with_socket(4, 8, socket, OpCode::Text);
        let mut scratch = Vec::new();
        // Not live yet (the writer has not activated): the writer is woken instead.
        assert_eq!(outbox.offer_event_deferred(event(1)), Ok(true));
        outbox.flush_direct(&mut scratch);
        assert_eq!(outbox.lock().events.len(), 1, "left for the writer");
        assert!(outbox.claim(&mut Vec::new()));
        assert!(outbox.take_events(|_| true));
        outbox.release(true, false);
        // Live and idle: both events go out in one write from here.
        assert_eq!(outbox.offer_event_deferred(event(2)), Ok(true));
        assert_eq!(outbox.offer_event_deferred(event(3)), Ok(false));
        outbox.flush_direct(&mut scratch);
        assert!(outbox.lock().events.is_empty());
        assert_eq!(read_exactly(&mut client, 6).await, b"\x81\x012\x81\x013");
        // A queued control frame goes first, so the writer gets the events too.
        assert_eq!(outbox.try_control(frame("x")), Ok(()));
        assert_eq!(outbox.offer_event_deferred(event(4)), Ok(true));
        outbox.flush_direct(&mut scratch);
        assert_eq!(outbox.lock().events.len(), 1);
    }

    #[tokio::test]
    async fn the_socket_is_written_by_one_side_at_a_time() {
        let (socket, _client) = socket_pair().await;
        let outbox = Outbox::with_socket(4, 8, socket, OpCode::Text);
        let mut scratch = Vec::new();
        assert!(outbox.claim(&mut Vec::new()));
        outbox.release(true, false);
        // The writer holds the socket: the dispatcher leaves the event queued.
        assert!(outbox.claim(&mut Vec::new()));
        assert_eq!(outbox.offer_event_deferred(event(1)), Ok(true));
        outbox.flush_direct(&mut scratch);
        assert_eq!(outbox.lock().events.len(), 1);
        outbox.release(true, false);
        // Once the writer finished (its close frame is out), nothing more is written or queued.
        assert!(outbox.claim(&mut Vec::new()));
        outbox.release(true, true);
        assert_eq!(outbox.offer_event_deferred(event(2)), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn what_the_kernel_does_not_take_goes_to_the_writer_first() {
        let (socket, mut client) = socket_pair().await;
        let outbox = Outbox::with_socket(4, 4096, socket, OpCode::Binary);
        assert!(outbox.claim(&mut Vec::new()));
        outbox.release(true, false);
        // Far more than loopback buffers hold while the client reads nothing.
        let payload = Bytes::from(vec![7u8; 60_000]);
        let mut sent = 0;
        let mut scratch = Vec::new();
        for n in 0..200 {
            let event = OutEvent {
                bytes: payload.clone(),
                key: EventKey::Message { chat: 1, seq: n },
            };
            assert!(outbox.offer_event_deferred(event).is_ok());
            outbox.flush_direct(&mut scratch);
            sent += 60_004;
            if !outbox.lock().unsent.is_empty() {
                break;
            }
        }
        let unsent = outbox.lock().unsent.len();
        assert!(unsent > 0, "the send buffer filled up");
        // The writer takes the tail before anything of its own, and the direct path waits.
        let mut batch = b"ping".to_vec();
        assert!(outbox.claim(&mut batch));
        assert_eq!(batch.len(), unsent + 4);
        assert!(batch.ends_with(b"ping"));
        assert_eq!(outbox.lock().unsent.len(), 0);
        let reader = tokio::spawn(async move {
            read_exactly(&mut client, sent).await;
        });
        let socket = &outbox.direct.as_ref().expect("a socket").socket;
        super::super::writer::write_all(socket, &batch[..unsent])
            .await
            .expect("written");
        outbox.release(true, false);
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("in time")
            .expect("every frame arrived whole");
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
}
