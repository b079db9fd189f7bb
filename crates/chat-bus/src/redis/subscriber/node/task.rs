//! The task that owns a subscription connection: it writes the requests, reads what Redis
//! pushes (forwarding messages, counting confirmations), pings an idle connection, and when the
//! connection breaks fails the requests in flight, tells the gateway `Disconnected` and
//! reconnects with backoff, refusing requests while it is down.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chat_ops::Backoff;
use futures_util::{SinkExt, StreamExt};
use redis_protocol::resp2::types::BytesFrame;
use tokio::sync::{mpsc, oneshot};

use super::connection::{Connection, Endpoint, REPLY_TIMEOUT, command_frame, protocol_error};
use super::requests::{Command, Pending, Request, confirm, refuse};
use super::unavailable;
use crate::BusMessage;
use crate::keys::Keys;

const PING_EVERY: Duration = Duration::from_secs(10);
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// Why a connection stopped being served.
enum Ended {
    /// Every handle was dropped: the task is done.
    Dropped,
    /// The connection broke; the reason is logged.
    Broken(String),
}

pub(super) struct Task {
    pub(super) endpoint: Endpoint,
    pub(super) keys: Arc<Keys>,
    pub(super) messages: mpsc::UnboundedSender<BusMessage>,
    pub(super) requests: mpsc::UnboundedReceiver<Request>,
    pub(super) timing: Timing,
}

/// How often the task pings, and how long Redis may take to answer a request or a ping.
#[derive(Clone, Copy)]
pub(super) struct Timing {
    pub(super) ping_every: Duration,
    pub(super) reply_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ping_every: PING_EVERY,
            reply_timeout: REPLY_TIMEOUT,
        }
    }
}

impl Task {
    pub(super) async fn run(mut self, mut connection: Connection) {
        loop {
            match self.serve(&mut connection).await {
                Ended::Dropped => return,
                Ended::Broken(why) => {
                    tracing::warn!(error = %why, "redis subscription connection lost; reconnecting");
                    // The receiver is gone only while the gateway shuts down.
                    let _ = self.messages.send(BusMessage::Disconnected);
                }
            }
            match self.reconnect().await {
                Some(new) => connection = new,
                None => return,
            }
        }
    }

    /// Sends requests and reads pushes until the connection breaks or every handle is gone.
    async fn serve(&mut self, connection: &mut Connection) -> Ended {
        let mut pending = VecDeque::new();
        let Timing {
            ping_every,
            reply_timeout,
        } = self.timing;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let ended = loop {
            let deadline = pending.front().map(|p: &Pending| p.deadline);
            let overdue = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = connection.next() => match frame {
                    Some(Ok(frame)) => {
                        if let Err(why) = self.take(frame, &mut pending) {
                            break Ended::Broken(why);
                        }
                    }
                    Some(Err(e)) => break Ended::Broken(e.to_string()),
                    None => break Ended::Broken("closed by the server".into()),
                },
                request = self.requests.recv() => {
                    let Some(request) = request else { break Ended::Dropped };
                    if request.channels.is_empty() {
                        let _ = request.done.send(Ok(()));
                        continue;
                    }
                    let command = request.command;
                    let mut unconfirmed = VecDeque::new();
                    let mut written = Ok(());
                    for channels in command.commands(&request.channels) {
                        let mut words = Vec::with_capacity(channels.len() + 1);
                        words.push(command.name());
                        words.extend(channels.iter().map(String::as_str));
                        written = connection.feed(command_frame(&words)).await;
                        if written.is_err() {
                            break;
                        }
                        unconfirmed.push_back(channels.len());
                    }
                    if written.is_ok() {
                        written = SinkExt::<BytesFrame>::flush(connection).await;
                    }
                    if let Err(e) = written {
                        let _ = request.done.send(Err(protocol_error(e)));
                        break Ended::Broken("writing a request failed".into());
                    }
                    let deadline = tokio::time::Instant::now() + reply_timeout;
                    pending.push_back(Pending::new(command, unconfirmed, deadline, request.done));
                }
                _ = ping.tick(), if pending.is_empty() => {
                    if let Err(e) = connection.send(command_frame(&[Command::Ping.name()])).await {
                        break Ended::Broken(format!("writing a PING failed: {e}"));
                    }
                    // Nobody waits for the answer but the deadline.
                    let (done, _) = oneshot::channel();
                    let deadline = tokio::time::Instant::now() + reply_timeout;
                    let ping = Pending::new(Command::Ping, VecDeque::from([1]), deadline, done);
                    pending.push_back(ping);
                }
                () = overdue => break Ended::Broken("Redis did not answer in time".into()),
            }
        };
        for request in pending {
            let _ = request
                .done
                .send(Err(unavailable("the subscription connection was lost")));
        }
        ended
    }

    /// Handles one frame from Redis: a message is forwarded, a confirmation counted, an error
    /// answers the oldest request's next command. An answer the requests do not explain breaks
    /// the connection: so does a `sunsubscribe` Redis sends by itself when a slot moves to
    /// another master, and the gateway then subscribes again where the slot now is.
    pub(super) fn take(
        &self,
        frame: BytesFrame,
        pending: &mut VecDeque<Pending>,
    ) -> std::result::Result<(), String> {
        match frame {
            BytesFrame::Array(parts) => {
                let mut parts = parts.into_iter();
                let (Some(BytesFrame::BulkString(kind)), Some(BytesFrame::BulkString(channel))) =
                    (parts.next(), parts.next())
                else {
                    return Ok(());
                };
                match &kind[..] {
                    b"message" | b"smessage" => {
                        if let (Some(BytesFrame::BulkString(payload)), Some(topic)) =
                            (parts.next(), self.keys.topic_of_channel(&channel))
                        {
                            let _ = self.messages.send(BusMessage::on(topic, payload));
                        }
                        Ok(())
                    }
                    b"subscribe" | b"unsubscribe" | b"ssubscribe" | b"sunsubscribe" | b"pong" => {
                        confirm(pending, &kind)
                    }
                    // Kinds this connection never asks for.
                    _ => Ok(()),
                }
            }
            // Out of subscribed mode (nothing subscribed yet, or no longer) Redis answers a PING
            // as it would any client's.
            BytesFrame::SimpleString(answer) if &answer[..] == b"PONG" => confirm(pending, b"pong"),
            BytesFrame::Error(e) => refuse(pending, e.to_string()),
            _ => Ok(()),
        }
    }

    /// Opens a new connection, waiting longer after each failure; requests made meanwhile are
    /// refused. `None` once every handle is gone.
    async fn reconnect(&mut self) -> Option<Connection> {
        let mut delays = RECONNECT.delays();
        loop {
            let wait = tokio::time::sleep(delays.next_delay());
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    request = self.requests.recv() => {
                        let request = request?;
                        let _ = request
                            .done
                            .send(Err(unavailable("the subscription connection is down")));
                    }
                }
            }
            match self.endpoint.open(&self.keys.subscriber_name()).await {
                Ok(connection) => {
                    tracing::info!("redis subscription connection re-established");
                    return Some(connection);
                }
                Err(e) => tracing::debug!(error = %e, "redis subscription reconnect failed"),
            }
        }
    }
}
