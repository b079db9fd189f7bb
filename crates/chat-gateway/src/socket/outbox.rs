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

use std::collections::VecDeque;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use super::writer::{Control, OutEvent};

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
}

pub struct Outbox {
    queues: Mutex<Queues>,
    control_bound: usize,
    event_bound: usize,
    /// Wakes the writer: something was queued.
    queued: Notify,
    /// Wakes producers waiting in `send_control`: the writer took control frames.
    drained: Notify,
}

impl Outbox {
    pub fn new(control_bound: usize, event_bound: usize) -> Self {
        Self {
            queues: Mutex::new(Queues::default()),
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
        let (control, events) = {
            let mut queues = self.lock();
            queues.closed = true;
            (
                std::mem::take(&mut queues.control),
                std::mem::take(&mut queues.events),
            )
        };
        drop((control, events));
        self.drained.notify_waiters();
    }
}

fn shrink_when_drained<T>(queue: &mut VecDeque<T>, keep: usize) {
    if queue.is_empty() && queue.capacity() > keep {
        *queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests;
