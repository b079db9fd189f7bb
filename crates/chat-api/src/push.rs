//! Offline push: after a message is committed, recipients with no open socket anywhere (the
//! gateways' presence registry in Redis) get one push job per registered device token, appended
//! to the Redis Stream that chat-worker consumes. Failures are logged and counted, never returned:
//! the message is stored and published either way.

use chat_proto::{Message, MessageKind, PushJob};
use chat_store::SendOutcome;

use crate::state::AppState;

/// Characters of message text a notification carries.
const BODY_CHARS: usize = 200;

/// Queues push jobs for the offline recipients of a new message.
pub async fn enqueue_for_offline(state: &AppState, outcome: &SendOutcome) {
    if let Err(e) = try_enqueue(state, outcome).await {
        metrics::counter!("chat_push_enqueue_failures_total").increment(1);
        tracing::warn!(error = %e, message_id = outcome.message.id, "queueing push jobs failed");
    }
}

async fn try_enqueue(state: &AppState, outcome: &SendOutcome) -> anyhow::Result<()> {
    let message = &outcome.message;
    let recipients: Vec<u64> = outcome
        .member_ids
        .iter()
        .copied()
        .filter(|&m| m != message.sender_id)
        .collect();
    if recipients.is_empty() {
        return Ok(());
    }
    let online = state.bus.online(&recipients).await?;
    let offline: Vec<u64> = recipients
        .iter()
        .zip(online)
        .filter(|(_, on)| !on)
        .map(|(&user, _)| user)
        .collect();
    if offline.is_empty() {
        return Ok(());
    }
    let tokens = state.store.push_tokens_of(&offline).await?;
    let without_token = offline
        .iter()
        .filter(|user| !tokens.iter().any(|(u, _)| u == *user))
        .count();
    if without_token > 0 {
        metrics::counter!("chat_push_skipped_no_token_total").increment(without_token as u64);
    }
    if tokens.is_empty() {
        return Ok(());
    }
    let context = state
        .store
        .push_context(message.sender_id, message.chat_id)
        .await?;
    let title = match &context.group_title {
        Some(group) => format!("{} in {group}", context.sender_username),
        None => context.sender_username.clone(),
    };
    let body = notification_body(message);
    let mut jobs = Vec::with_capacity(tokens.len());
    let mut index = 0;
    let mut previous_user = None;
    for (user, token) in tokens {
        if previous_user != Some(user) {
            index = 0;
            previous_user = Some(user);
        }
        jobs.push(PushJob {
            id: PushJob::job_id(message.id, user, index),
            user_id: user,
            token,
            chat_id: message.chat_id,
            message_id: message.id,
            sender_id: message.sender_id,
            kind: message.kind.as_str().to_string(),
            title: title.clone(),
            body: body.clone(),
        });
        index += 1;
    }
    state
        .bus
        .enqueue_push(&jobs, state.push_stream_max_len)
        .await?;
    metrics::counter!("chat_push_jobs_enqueued_total").increment(jobs.len() as u64);
    Ok(())
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
