//! The checker's part for edits and deletions: every member of a chat other than the one who
//! made the change must end up with the message as the last acked change left it (deleted, or
//! with the last edit's text), and so must the database. A member that never saw that state
//! lost a `message_updated`.

use std::collections::HashMap;

use serde_json::Value;

use super::checker::Verdict;
use super::client::{AckedChange, ChangeKind, ClientReport};

/// Message id → the last acked change of it (a deletion wins: nothing follows it).
fn final_changes(reports: &[ClientReport]) -> HashMap<u64, &AckedChange> {
    let mut last: HashMap<u64, &AckedChange> = HashMap::new();
    for change in reports.iter().flat_map(|r| r.changes.iter()) {
        let keep = last
            .get(&change.message_id)
            .is_some_and(|kept| kept.kind == ChangeKind::Delete);
        if !keep {
            last.insert(change.message_id, change);
        }
    }
    last
}

/// Adds the updates' numbers to the faults (by the phase of the last change) and a failure for
/// each member that did not end up with the final state.
pub(super) fn check_updates(
    reports: &[ClientReport],
    members: &HashMap<u64, Vec<u64>>,
    phases: &[String],
    verdict: &mut Verdict,
) {
    let last_phase = phases.len().saturating_sub(1);
    let by_user: HashMap<u64, &ClientReport> = reports.iter().map(|r| (r.user_id, r)).collect();
    verdict.total_changes = reports.iter().map(|r| r.changes.len() as u64).sum();
    let mut lost = Vec::new();
    for (message_id, change) in final_changes(reports) {
        let phase = change.phase.min(last_phase);
        for member in members.get(&change.chat_id).into_iter().flatten() {
            if *member == change.actor {
                continue;
            }
            let fault = &mut verdict.faults[phase];
            fault.updates_sent += 1;
            let seen = by_user
                .get(member)
                .and_then(|r| r.updates_seen.get(&message_id));
            let ok = match (change.kind, seen) {
                (ChangeKind::Delete, Some(seen)) => seen.deleted,
                (ChangeKind::Edit, Some(seen)) => !seen.deleted && seen.text == change.text,
                (_, None) => false,
            };
            if ok {
                fault.updates_received += 1;
            } else {
                fault.updates_lost += 1;
                lost.push(format!(
                    "update lost: user {member} ended with {seen:?} for message {message_id} \
                     (chat {}), whose last change by user {} was {:?} {:?} in phase {}",
                    change.chat_id,
                    change.actor,
                    change.kind,
                    change.text,
                    phases.get(phase).map(String::as_str).unwrap_or("?")
                ));
            }
        }
    }
    const SHOW: usize = 25;
    let total = lost.len();
    verdict.failures.extend(lost.into_iter().take(SHOW));
    if total > SHOW {
        verdict
            .failures
            .push(format!("... and {} more lost updates", total - SHOW));
    }
}

/// The stored messages of one chat against the acked changes: a deleted message is a tombstone,
/// an edited one has the last edit's text. Returns the problems.
pub(super) fn verify_changes(
    chat_id: u64,
    stored: &[Value],
    reports: &[ClientReport],
) -> Vec<String> {
    let last = final_changes(reports);
    let mut problems = Vec::new();
    for m in stored {
        let Some(id) = m.get("id").and_then(Value::as_u64) else {
            continue;
        };
        let deleted = m.get("deleted_at").is_some_and(|d| !d.is_null());
        let text = m.get("text").and_then(Value::as_str);
        let tombstone = deleted && m.get("text").is_some_and(Value::is_null);
        let problem = match last.get(&id) {
            Some(change) if change.kind == ChangeKind::Delete => {
                (!tombstone).then(|| format!("was deleted but is stored as {m}"))
            }
            Some(change) => (deleted || text != change.text.as_deref())
                .then(|| format!("was last edited to {:?} but is stored as {m}", change.text)),
            None => (deleted || m.get("edited_at").is_some_and(|e| !e.is_null()))
                .then(|| format!("was never changed but is stored as {m}")),
        };
        if let Some(problem) = problem {
            problems.push(format!("chat {chat_id}: message {id} {problem}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_messages_must_match_their_last_change() {
        let change = |message_id, kind, text: Option<&str>| AckedChange {
            message_id,
            chat_id: 7,
            actor: 1,
            kind,
            text: text.map(str::to_string),
            phase: 0,
        };
        let report = ClientReport {
            user_id: 1,
            changes: vec![
                change(1, ChangeKind::Edit, Some("a")),
                change(1, ChangeKind::Edit, Some("b")),
                change(2, ChangeKind::Delete, None),
            ],
            ..ClientReport::default()
        };
        let message = |id, text: Option<&str>, edited: bool, deleted: bool| {
            json!({"id": id, "text": text, "edited_at": edited.then_some("t"),
                   "deleted_at": deleted.then_some("t")})
        };
        let good = [
            message(1, Some("b"), true, false),
            message(2, None, false, true),
            message(3, Some("x"), false, false),
        ];
        assert!(verify_changes(7, &good, std::slice::from_ref(&report)).is_empty());
        let bad = [
            message(1, Some("a"), true, false),
            message(2, Some("still here"), false, false),
            message(3, Some("x"), true, false),
        ];
        let problems = verify_changes(7, &bad, &[report]);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
