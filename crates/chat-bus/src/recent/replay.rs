//! What a reader makes of a recent-event log's entries for one user: the events a sync from a
//! cursor would return, in a sync's order, each once. Shared by the gateway's resume and
//! chat-api's `GET /v1/sync`, so both answer the same from the same log.

use std::collections::HashSet;

use bytes::Bytes;
use chat_proto::{BusBody, BusEnvelope, ServerEvent};

/// The user's events among the logged envelopes of their channel and their groups' channels:
/// decoded, filtered as live routing filters them (a chat event whose `skip` is the user is
/// not theirs; a group for which `in_group` is false is no longer theirs), from `from_ms` on,
/// in sync order, each once (an event announced twice, by a retry and by the sweeper, is
/// logged twice).
pub fn replay(
    entries: &[Bytes],
    user: u64,
    from_ms: i64,
    in_group: impl Fn(u64) -> bool,
) -> Vec<ServerEvent> {
    let mut events: Vec<_> = entries
        .iter()
        .filter_map(|bytes| {
            let event = match BusEnvelope::decode(bytes).ok()?.body {
                BusBody::Event(event) => event,
                BusBody::ChatEvent {
                    chat_id,
                    skip,
                    event,
                } => {
                    if skip == Some(user) || !in_group(chat_id) {
                        return None;
                    }
                    event
                }
                _ => return None,
            };
            let order = event.sync_order()?;
            (order.0 >= from_ms).then_some((order, event))
        })
        .collect();
    events.sort_by_key(|(order, _)| *order);
    let mut seen = HashSet::new();
    events
        .into_iter()
        .filter(|(order, event)| seen.insert((*order, receipt_seq(event))))
        .map(|(_, event)| event)
        .collect()
}

/// A receipt's watermark: two moves of one member's watermark in the same millisecond are two
/// events (their sync order is the same).
fn receipt_seq(event: &ServerEvent) -> u64 {
    match event {
        ServerEvent::MessageRead { up_to_seq, .. }
        | ServerEvent::MessageDelivered { up_to_seq, .. } => *up_to_seq,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
