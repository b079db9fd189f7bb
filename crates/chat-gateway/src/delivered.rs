//! Delivered receipts on their way to chat-api, coalesced. Every message a client receives may
//! be answered with a `delivered` frame, so one database write per frame would make receipts
//! cost more than the messages. Frames go to one of a few lanes (by user, so a user's moves stay
//! in one lane); a lane has at most one request out, and what queues meanwhile (or, on an idle
//! lane, within a short linger after its first frame) goes in the next one as at most one move
//! per user and chat (the highest `up_to_seq`), in one `POST /internal/v1/delivered/batch` that
//! chat-api stores with one UPDATE. Each frame is acked once the batch that carried its move is
//! answered.
//!
//! The coalescing is hand-written: it is a map from (user, chat) to the highest seq and the
//! frames waiting on it, which no queueing crate offers better than a `HashMap`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chat_proto::{DeliveredBatch, DeliveredMove, ErrorCode};
use tokio::sync::mpsc;

use crate::api_client::{ApiClient, NoticeError};

/// How many lanes, each with one request out at a time.
const LANES: u64 = 2;
/// How long an idle lane waits after a frame for others to join it. Without it, a lane with no
/// request out sends each frame on its own whenever frames come slower than requests return:
/// at 500 messages a second over two gateways (chat.js at 5,000 VUs, `RECEIPTS=1`) that was
/// 1.4 moves a request and a database commit for each, and receipts cost the services more
/// than the messages they acknowledge. A delivered tick 50 ms later is not visible to a person.
const LINGER: Duration = Duration::from_millis(50);

/// What a frame's sender is told once its move was stored (or refused).
pub type Answer = Box<dyn FnOnce(Result<(), (ErrorCode, String)>) + Send>;

/// One `delivered` frame waiting for its lane.
pub struct Pending {
    pub one: DeliveredMove,
    pub answer: Answer,
}

/// The lanes' inboxes; the lane tasks end when this is dropped and their queues are empty.
pub struct DeliveredLanes {
    lanes: Vec<mpsc::UnboundedSender<Pending>>,
}

impl DeliveredLanes {
    pub fn start(api: Arc<ApiClient>) -> Self {
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run_lane(api.clone(), rx));
                tx
            })
            .collect();
        Self { lanes }
    }

    /// Queues a frame's move; its answer runs once the move's batch is answered.
    pub fn submit(&self, pending: Pending) {
        metrics::counter!("chat_gateway_delivered_frames_total").increment(1);
        let lane = &self.lanes[(pending.one.user_id % LANES) as usize];
        if let Err(mpsc::error::SendError(pending)) = lane.send(pending) {
            (pending.answer)(Err((
                ErrorCode::Unavailable,
                "the gateway is shutting down".into(),
            )));
        }
    }
}

/// Frames coalesced into at most one move per user and chat, with everyone waiting on each.
#[derive(Default)]
pub(crate) struct Coalesced {
    pub moves: Vec<DeliveredMove>,
    pub waiting: Vec<Vec<Answer>>,
    index: HashMap<(u64, u64), usize>,
}

impl Coalesced {
    /// Adds a frame; false when it would be a new move beyond `DeliveredBatch::MAX_MOVES`.
    pub(crate) fn add(&mut self, pending: Pending) -> Result<(), Pending> {
        let key = (pending.one.user_id, pending.one.chat_id);
        if let Some(&at) = self.index.get(&key) {
            let kept = &mut self.moves[at];
            kept.up_to_seq = kept.up_to_seq.max(pending.one.up_to_seq);
            self.waiting[at].push(pending.answer);
            return Ok(());
        }
        if self.moves.len() >= DeliveredBatch::MAX_MOVES {
            return Err(pending);
        }
        self.index.insert(key, self.moves.len());
        self.moves.push(pending.one);
        self.waiting.push(vec![pending.answer]);
        Ok(())
    }
}

async fn run_lane(api: Arc<ApiClient>, mut inbox: mpsc::UnboundedReceiver<Pending>) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut received = Vec::new();
    loop {
        if queue.is_empty() {
            if inbox.recv_many(&mut received, 4096).await == 0 {
                return;
            }
            queue.extend(received.drain(..));
            tokio::time::sleep(LINGER).await;
        }
        // Everything that arrived while the last request was out.
        while let Ok(pending) = inbox.try_recv() {
            queue.push_back(pending);
        }
        let mut batch = Coalesced::default();
        while let Some(pending) = queue.pop_front() {
            if let Err(full) = batch.add(pending) {
                // A full batch: the rest waits for the next round, in order.
                queue.push_front(full);
                break;
            }
        }
        send(&api, batch).await;
    }
}

/// Sends one batch and answers everyone waiting on it.
async fn send(api: &ApiClient, batch: Coalesced) {
    metrics::counter!("chat_gateway_delivered_batches_total").increment(1);
    metrics::counter!("chat_gateway_delivered_moves_total").increment(batch.moves.len() as u64);
    let request = DeliveredBatch { moves: batch.moves };
    match api.delivered_batch(&request).await {
        Ok(answer) => {
            for (result, waiting) in answer.results.into_iter().zip(batch.waiting) {
                let outcome = match result.error {
                    None => Ok(()),
                    Some(error) => Err((error.code, error.message)),
                };
                for reply in waiting {
                    reply(outcome.clone());
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, moves = request.moves.len(), "delivered batch failed");
            let message = match e {
                NoticeError::Unsupported => "chat-api does not take delivered receipts yet",
                NoticeError::Failed(_) => "chat-api is unavailable, retry later",
            };
            for reply in batch.waiting.into_iter().flatten() {
                reply(Err((ErrorCode::Unavailable, message.to_string())));
            }
        }
    }
}

#[cfg(test)]
mod tests;
