//! The (un)subscribe requests of a subscription connection, from the handle to Redis' answers.
//!
//! Redis confirms SUBSCRIBE and UNSUBSCRIBE once per channel, in order, so a request is done when
//! its last confirmation arrives. SSUBSCRIBE takes channels of one slot only, so a sharded
//! request is sent as one command per channel, and an error (a `MOVED`) answers one of those
//! commands. The requests in flight wait in a queue, oldest first; a confirmation or an error
//! that no request explains breaks the connection.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use crate::{BusError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Command {
    Subscribe,
    Unsubscribe,
    ShardSubscribe,
    ShardUnsubscribe,
    /// The task's own liveness check.
    Ping,
}

impl Command {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Subscribe => "SUBSCRIBE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::ShardSubscribe => "SSUBSCRIBE",
            Self::ShardUnsubscribe => "SUNSUBSCRIBE",
            Self::Ping => "PING",
        }
    }

    /// The kind of the pushes that confirm this command, one per channel (one for PING).
    pub(super) fn confirmation(self) -> &'static [u8] {
        match self {
            Self::Subscribe => b"subscribe",
            Self::Unsubscribe => b"unsubscribe",
            Self::ShardSubscribe => b"ssubscribe",
            Self::ShardUnsubscribe => b"sunsubscribe",
            Self::Ping => b"pong",
        }
    }

    /// The request's channels cut into commands: shard channels must share a slot, so a sharded
    /// command carries one run of same-slot channels (the chat channels of one partition, which
    /// the cluster subscription sends together); any other command carries them all.
    pub(super) fn commands(self, channels: &[String]) -> Vec<&[String]> {
        match self {
            Self::ShardSubscribe | Self::ShardUnsubscribe => channels
                .chunk_by(|a, b| {
                    crate::redis::slot_of(a.as_bytes()) == crate::redis::slot_of(b.as_bytes())
                })
                .collect(),
            Self::Subscribe | Self::Unsubscribe | Self::Ping => vec![channels],
        }
    }
}

pub(super) struct Request {
    pub(super) command: Command,
    pub(super) channels: Vec<String>,
    pub(super) done: oneshot::Sender<Result<()>>,
}

/// A request sent to Redis as one or more commands, waiting for their answers.
pub(super) struct Pending {
    pub(super) command: Command,
    /// Per command sent, in order: the confirmations it still waits for.
    pub(super) unconfirmed: VecDeque<usize>,
    /// The first error a command of the request was answered with.
    pub(super) refused: Option<String>,
    pub(super) deadline: tokio::time::Instant,
    pub(super) done: oneshot::Sender<Result<()>>,
}

impl Pending {
    pub(super) fn new(
        command: Command,
        unconfirmed: VecDeque<usize>,
        deadline: tokio::time::Instant,
        done: oneshot::Sender<Result<()>>,
    ) -> Self {
        Self {
            command,
            unconfirmed,
            refused: None,
            deadline,
            done,
        }
    }

    pub(super) fn answered(&self) -> bool {
        self.unconfirmed.is_empty()
    }

    pub(super) fn finish(self) {
        let outcome = match self.refused {
            None => Ok(()),
            Some(e) => Err(BusError::Subscription(format!("redis: {e}"))),
        };
        let _ = self.done.send(outcome);
    }
}

/// Counts one confirmation against the oldest request, which must be of its kind.
pub(super) fn confirm(
    pending: &mut VecDeque<Pending>,
    kind: &[u8],
) -> std::result::Result<(), String> {
    let Some(oldest) = pending.front_mut() else {
        return Err("a confirmation nothing asked for".into());
    };
    if oldest.command.confirmation() != kind {
        return Err(format!(
            "a {} confirmation while a {} was waiting",
            String::from_utf8_lossy(kind),
            oldest.command.name()
        ));
    }
    let Some(command) = oldest.unconfirmed.front_mut() else {
        return Err("a confirmation nothing asked for".into());
    };
    *command -= 1;
    if *command == 0 {
        oldest.unconfirmed.pop_front();
    }
    finish_answered(pending);
    Ok(())
}

/// An error answers the oldest request's next command as a whole (Redis refused all of it).
pub(super) fn refuse(
    pending: &mut VecDeque<Pending>,
    error: String,
) -> std::result::Result<(), String> {
    let Some(oldest) = pending.front_mut() else {
        return Err(format!("an error nothing asked for: {error}"));
    };
    oldest.unconfirmed.pop_front();
    oldest.refused.get_or_insert(error);
    finish_answered(pending);
    Ok(())
}

fn finish_answered(pending: &mut VecDeque<Pending>) {
    if pending.front().is_some_and(Pending::answered)
        && let Some(done) = pending.pop_front()
    {
        done.finish();
    }
}
