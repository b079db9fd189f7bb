//! Offline push: after a message is committed, recipients with no open socket anywhere (the
//! gateways' presence registry in Redis) get one push job per registered device token, appended
//! to the Redis Stream that chat-worker consumes. Failures are logged and counted, never returned:
//! the message is stored and published either way.
//!
//! One task looks up every new message waiting, up to `MAX_MESSAGES` at a time: one presence
//! query and one token query for all their recipients, then one append for all their jobs. Per
//! message, those lookups cost more than storing the message did (docs/performance.md).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use chat_bus::Bus;
use chat_proto::{Message, MessageKind, PushJob};
use chat_store::{PushContext, SendOutcome, Store};
use tokio::sync::mpsc;

/// Characters of message text a notification carries.
const BODY_CHARS: usize = 200;
/// The most messages looked up together.
const MAX_MESSAGES: usize = 256;
/// New messages waiting for the lookup before their senders' tasks wait for room.
const QUEUE: usize = 4096;

/// The new messages waiting for their push jobs; cheap to clone.
#[derive(Clone)]
pub struct PushQueue {
    waiting: mpsc::Sender<SendOutcome>,
}

impl PushQueue {
    /// Starts the lookup task on the current runtime; it ends once every handle is dropped and
    /// the messages already queued are done.
    pub fn start(store: Store, bus: Bus, stream_max_len: u64) -> Self {
        let (waiting, queued) = mpsc::channel(QUEUE);
        tokio::spawn(look_up(store, bus, stream_max_len, queued));
        Self { waiting }
    }

    /// Queues a new message for its offline recipients' pushes, in a task of its own: callers
    /// hold a chat's send lock or owe an answer, and push jobs need no order among senders.
    pub fn enqueue_for_offline(&self, outcome: SendOutcome) {
        let waiting = self.waiting.clone();
        tokio::spawn(async move {
            if waiting.send(outcome).await.is_err() {
                metrics::counter!("chat_push_enqueue_failures_total").increment(1);
                tracing::warn!("the push lookup has stopped; no push jobs for a new message");
            }
        });
    }
}

async fn look_up(
    store: Store,
    bus: Bus,
    stream_max_len: u64,
    mut queued: mpsc::Receiver<SendOutcome>,
) {
    let mut batch = Vec::with_capacity(MAX_MESSAGES);
    while queued.recv_many(&mut batch, MAX_MESSAGES).await > 0 {
        if let Err(e) = enqueue_batch(&store, &bus, stream_max_len, &batch).await {
            metrics::counter!("chat_push_enqueue_failures_total").increment(batch.len() as u64);
            tracing::warn!(error = %e, messages = batch.len(), "queueing push jobs failed");
        }
        batch.clear();
    }
}

/// The recipients of a message: its chat's members but the sender.
fn recipients(outcome: &SendOutcome) -> impl Iterator<Item = u64> + '_ {
    let sender = outcome.message.sender_id;
    outcome
        .member_ids
        .iter()
        .copied()
        .filter(move |&m| m != sender)
}

async fn enqueue_batch(
    store: &Store,
    bus: &Bus,
    stream_max_len: u64,
    batch: &[SendOutcome],
) -> anyhow::Result<()> {
    let mut everyone: Vec<u64> = batch.iter().flat_map(recipients).collect();
    everyone.sort_unstable();
    everyone.dedup();
    if everyone.is_empty() {
        return Ok(());
    }
    let online = bus.online(&everyone).await?;
    let offline: Vec<u64> = everyone
        .iter()
        .zip(online)
        .filter(|(_, on)| !on)
        .map(|(&user, _)| user)
        .collect();
    if offline.is_empty() {
        return Ok(());
    }
    // Offline users, each with their tokens (possibly none), in token order.
    let mut tokens: HashMap<u64, Vec<String>> =
        offline.iter().map(|&user| (user, Vec::new())).collect();
    for (user, token) in store.push_tokens_of(&offline).await? {
        tokens.entry(user).or_default().push(token);
    }
    let mut contexts: HashMap<(u64, u64), PushContext> = HashMap::new();
    let mut jobs = Vec::new();
    for outcome in batch {
        let mut targets = Vec::new();
        let mut without_token = 0;
        for user in recipients(outcome) {
            match tokens.get(&user) {
                Some(devices) if devices.is_empty() => without_token += 1,
                Some(devices) => targets.push((user, devices.as_slice())),
                None => {} // online
            }
        }
        if without_token > 0 {
            metrics::counter!("chat_push_skipped_no_token_total").increment(without_token);
        }
        if targets.is_empty() {
            continue;
        }
        let message = &outcome.message;
        let context = match contexts.entry((message.sender_id, message.chat_id)) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(unknown) => {
                match store.push_context(message.sender_id, message.chat_id).await {
                    Ok(context) => unknown.insert(context),
                    Err(e) => {
                        metrics::counter!("chat_push_enqueue_failures_total").increment(1);
                        tracing::warn!(error = %e, message_id = message.id, "reading a push's title failed");
                        continue;
                    }
                }
            }
        };
        jobs.extend(jobs_for(message, context, &targets));
    }
    if jobs.is_empty() {
        return Ok(());
    }
    bus.enqueue_push(&jobs, stream_max_len).await?;
    metrics::counter!("chat_push_jobs_enqueued_total").increment(jobs.len() as u64);
    Ok(())
}

/// One job per device of each target user.
fn jobs_for(
    message: &Message,
    context: &PushContext,
    targets: &[(u64, &[String])],
) -> Vec<PushJob> {
    let title = match &context.group_title {
        Some(group) => format!("{} in {group}", context.sender_username),
        None => context.sender_username.clone(),
    };
    let body = notification_body(message);
    let mut jobs = Vec::new();
    for &(user, devices) in targets {
        for (index, token) in devices.iter().enumerate() {
            jobs.push(PushJob {
                id: PushJob::job_id(message.id, user, index),
                user_id: user,
                token: token.clone(),
                chat_id: message.chat_id,
                message_id: message.id,
                sender_id: message.sender_id,
                kind: message.kind.as_str().to_string(),
                title: title.clone(),
                body: body.clone(),
            });
        }
    }
    jobs
}

/// The text (shortened), or a word for an attachment.
fn notification_body(message: &Message) -> String {
    match (message.kind, message.text.as_deref()) {
        (MessageKind::Text, Some(text)) => shorten(text),
        (MessageKind::Image, _) => "Photo".to_string(),
        (MessageKind::File, _) => "File".to_string(),
        (MessageKind::Text, None) => String::new(),
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= BODY_CHARS {
        return text.to_string();
    }
    let mut short: String = text.chars().take(BODY_CHARS - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn long_texts_are_cut_on_characters() {
        assert_eq!(shorten("hi"), "hi");
        let long = "é".repeat(500);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), 200);
        assert!(short.ends_with('…'));
    }
}
